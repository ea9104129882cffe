"""Config validation happens before any work starts; errors name the file and the key (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.cli import main
from curate.config import ConfigError, load_pipeline, load_profile

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "pipelines").glob("*.yaml")))
def test_shipped_pipelines_validate(name: str) -> None:
    pipeline = load_pipeline(REPO / "pipelines" / name)
    assert pipeline.stages[0].name == "warc_read"
    assert len(pipeline.fingerprint()) == 16


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_profiles_validate(name: str) -> None:
    load_profile(REPO / "configs" / name)


@pytest.mark.parametrize("text, expected", [
    ("stages:\n  - warc_read: {}\n  - extract: {timeout: 3}\n", "stages[1].extract.timeout: unknown key"),
    ("stages:\n  - warc_read: {}\n  - extract: {engine: lynx}\n", "stages[1].extract.engine"),
    ("stages:\n  - warc_read: {}\n  - language: {min_score: 2}\n", "stages[1].language.min_score"),
    ("stages:\n  - warc_read: {}\n  - extrct: {}\n", "unknown stage 'extrct' (did you mean extract?)"),
    ("stages:\n  - extract: {}\n", "stages[0]: the first stage must be a reader"),
    ("stages:\n  - warc_read: {}\n  - warc_read: {}\n", "a reader may only be the first stage"),
    ("stages:\n  - warc_read: {}\n  - extract: {}\n  - extract: {}\n", "appears twice"),
    ("stage:\n  - warc_read: {}\n", "stage: unknown key"),
    ("stages: []\n", "stages: expected a non-empty list"),
    ("batch_size: 0\nstages:\n  - warc_read: {}\n", "batch_size: expected a positive integer"),
    ("stages:\n  - warc_read: {}\n  - [extract]\n", "stages[1]: expected one"),
    ("stages: [warc_read\n", "invalid YAML"),
    ("stages:\n  - warc_read: {}\n  - nosuch.module:Thing: {}\n", "cannot load plug-in stage"),
])
def test_bad_pipeline_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_plugin_stage_loads_from_module_path(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path, "stages:\n  - warc_read: {}\n  - plugins:Slow: {seconds_per_batch: 0}\n"))
    assert pipeline.stages[1].name == "slow"


def test_bad_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile.workerz: unknown key"):
        load_profile(write(tmp_path, "workerz: 3\n", "profile.yaml"))


def test_cli_exit_code_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "stages:\n  - warc_read: {engine: nope}\n")
    warc = str(REPO / "examples" / "quickstart" / "quickstart.warc.gz")
    assert main(["run", str(bad), "-i", warc, "-o", str(tmp_path / "out")]) == 2
    assert "stages[0].warc_read.engine" in capsys.readouterr().err
    good = str(REPO / "pipelines" / "quickstart.yaml")
    assert main(["run", good, "-i", str(tmp_path / "missing.warc.gz"), "-o", str(tmp_path / "out")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["run", good, "-i", str(tmp_path / "*.warc.gz"), "-o", str(tmp_path / "out")]) == 2
    assert "matches no files" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "nope.yaml"), "-i", warc, "-o", str(tmp_path / "out")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()



def test_output_piped_into_a_reader_that_closes_ends_quietly() -> None:
    """`curate stages | head -1`: no traceback when the pipe closes (exit 141, as a tool killed by SIGPIPE)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "import sys; from curate.cli import main; sys.exit(main(['stages']))"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "tokenize" in done.stdout  # the normal case still prints everything
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # the reader went away before curate wrote
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
