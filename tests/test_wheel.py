"""The package as a user installs it: a wheel built from the checkout holds the recipes and the models, and
runs the quickstart and the FineWeb recipe by name with nothing else on its path but its dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_runs_the_recipes_by_name(shared_data: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("curate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for packaged in ("curate/pipelines/fineweb.yaml", "curate/pipelines/quickstart.yaml",
                     "curate/stages/data/lid.176.ftz", "curate/stages/data/lid.176.NOTICE.txt",
                     "curate/stages/data/url_banned_words.txt"):
        assert packaged in names, f"{packaged} missing from {wheel.name}"
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    # the wheel's curate comes first on the path (before this checkout's editable install)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    cwd = tmp_path / "elsewhere"  # no pipelines/ folder here: the names must resolve to package data
    cwd.mkdir()
    where = subprocess.run([sys.executable, "-c", "import curate; print(curate.__file__)"], env=env, cwd=cwd,
                           capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site))
    curate = [sys.executable, "-c", "import sys; from curate.cli import main; sys.exit(main())"]
    for recipe, warc in (("quickstart", REPO / "examples" / "quickstart" / "quickstart.warc.gz"),
                         ("fineweb", shared_data / "warc" / "dolma-wget-sample-0000.warc.gz")):
        out = tmp_path / recipe
        done = subprocess.run([*curate, "run", recipe, "-i", str(warc), "-o", str(out), "--no-progress",
                               "--workers", "1"], env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                              check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]
    missing = subprocess.run([*curate, "run", "nosuchrecipe", "-i", str(warc), "-o", str(tmp_path / "x")], env=env,
                             cwd=cwd, capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "built-in recipes: fineweb, quickstart" in missing.stderr
