"""``bench/whole_process.py --smoke`` exits 0 and prints the lines a reader of a full run looks at.

Its smoke sizes take seconds yet start every process the full bench times: the quickstart on the local
executor and once on Ray, the import probes, a one-WARC corpus built from the shared pages, curate on it
and on a subset, and datatrove's pipeline as a child process. It reads the shared data, and so does this
test: without it the test fails, never skips.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))

EXPECTED = [
    r"local executor \(local\): wall median \d+\.\d\d s .* under 4 s: (yes|NO)",
    r"executor: ray .* wall \d+\.\d\d s, .* run\.json executor 'ray'",
    r"Ray's start-up costs [+-]\d+\.\d\d s of wall over the local executor",
    r"curate --workers 1 +16 +\d+\.\d\d",
    r"datatrove, subset +8 +\d+\.\d\d",
    r"whole process, 16 responses \(datatrove scaled\): +\d+\.\dx",
    r"whole process, the same 8 responses \(both measured\): +\d+\.\dx",
    r"per document, step time \(step0_s vs executor\.run\): +\d+\.\dx",
    r"per document, stage time \(stage seconds vs time_stats\): +\d+\.\dx",
    r"the whole-process ratio reaches \d+% of the per-document \(stage\) one",
    r"fixed cost, curate \(16\): wall - step0_s = -?\d+\.\d\d s",
    r"fixed cost, datatrove \(8\): wall - executor\.run = -?\d+\.\d\d s",
    r"datatrove's reader accepted \d+ of 8 responses, wrote [1-9]\d*",  # its whole pipeline ran
]


def test_bench_whole_process_smoke() -> None:
    assert SHARED_DATA.is_dir(), f"the bench needs the shared data at {SHARED_DATA} (set CURATE_SHARED_DATA)"
    result = subprocess.run(
        [sys.executable, "bench/whole_process.py", "--smoke"], cwd=REPO, capture_output=True, text=True,
        timeout=180, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    missing = [pattern for pattern in EXPECTED if not re.search(pattern, output)]
    assert not missing, f"{missing} not in:\n{output}"
