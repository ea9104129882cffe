"""Every bench runs from the README's install: ``bench/<x>.py --smoke`` exits 0 and prints its ratio lines.

The smoke sizes take seconds yet go through every code path, datatrove's pipeline included where a bench
compares with it, so a missing dependency (orjson for datatrove's JsonlWriter) or an API change in curate
fails here rather than in the next full measurement. The benches read the shared data and so do these
tests: without it they fail, never skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))

#: Per bench, patterns its smoke output must contain: the lines a reader of a full run looks at.
EXPECTED = {
    "audit": [
        r"corpus: 5000 documents, \d+\.\d MB of text in \d+ JSONL files, excerpts of [1-9]\d* real documents",
        r"run: kept [1-9]\d*, removed [1-9]\d* \(gopher_quality [1-9]\d*, exact_dedup [1-9]\d*\), errors 0",
        r"plain export: 5000 documents, \d+\.\d MB of text",
        r"curate audit grep --workers 1: [1-9]\d* documents, scan \d+\.\d MB/s \(\d+\.\d\d s, 1 process\), whole",
        r"(GNU grep -c -F|rg --count -F), 1 process: [1-9]\d* documents, \d+\.\d MB/s",
        r"ratio curate/grep \(rare\): 1 process [\d.e+-]+x, \d+ processes [\d.e+-]+x",
        r"ratio curate/grep \(common\): 1 process [\d.e+-]+x",
        # curate and grep count the same documents for every pattern (the bench exits 1 otherwise)
        r"same documents \(rare\): OK, [1-9]\d* of 5000",
        r"same documents \(common\): OK, [1-9]\d* of 5000",
        r"same documents \(regex\): OK, [1-9]\d* of 5000",
        r"summary: \d+\.\d\d s \(--examples 0: \d+\.\d\d s\) on 5000 documents",
        r"why \(kept urn:uuid:[0-9a-f-]+\): \d+\.\d\d s; why \(removed by gopher_quality urn:uuid:[0-9a-f-]+\): \d",
    ],
    "corpus": [r"24 responses \(16 pages x <= 2 copies, [1-9]\d* words respelled in copies"],
    "classify": [
        r"device: cpu \(no CUDA\)|device: cuda \(",
        r"bare torch: 100 docs, \d+\.\d docs/s \(\d+\.\d s = load \(torch import \+ model\) \d+\.\d \+ tokenise",
        r"curate run end to end: \d+\.\d s, \d+\.\d docs/s",
        r"curate classify step: 100 docs, \d+\.\d docs/s in the stage",
        r"ratio curate/bare: \d+\.\d\d",
        r"same computation: stage scores vs the head on bare embeddings, max \|diff\| \d\.\de[-+]\d\d, same label 100\.0%",
        r"GPU busy: n/a \(cpu\)|GPU busy \(",
    ],
    "dedup": [
        r"truth \(exact J >= 0\.8 on word 5-gram shingles, curate\.dedup\.minhash\.reference_shingles\): [1-9]\d* pairs",
        r"datatrove: 2000 docs, \d+\.\d docs/s, \d+\.\d\d MB/s per core, peak RSS per worker [1-9]\d* MB",
        r"curate: 2000 docs, \d+\.\d docs/s, \d+\.\d\d MB/s per core, peak RSS per worker [1-9]\d* MB",
        r"ratio curate/datatrove docs/s: \d+\.\dx",
        r"RSS per worker 2N/N: \d+\.\d\d",
        r"agreement with truth: curate P=\d\.\d{3} R=\d\.\d{3}; datatrove P=\d\.\d{3} R=\d\.\d{3}",
    ],
    "extract": [
        r"  curate +\d+\.\d +\d\.\d{3} +\d\.\d{3} +\d\.\d{3} +\d\.\d{3} +\d\.\d{3}",
        r"ratio curate/trafilatura pages/s: \d+\.\d\dx \(goal >= 5\); curate/resiliparse: \d+\.\d\dx",
        r"ratios \(docs/s per core\):",
        r"ours: extract\+language +/ floor +\d+\.\d\d .* / datatrove +\d+\.\d",
        r"ours: \+ \d+ filters +/ floor +\d+\.\d\d .* / datatrove +\d+\.\d",
        r"ours \+\d+ filters, same +/ datatrove +\d+\.\d +\(per accepted document: \d+\.\d\)",
        r'Jsonl": \{"total": [1-9]',  # datatrove's writer wrote documents: its whole pipeline ran
    ],
    "filters": [
        r"40 distinct documents, each scored once",
        r"ratio ours/datatrove: \d+\.\dx",
        r"removed, ours / datatrove: gopher_repetition \d+/\d+",
    ],
    "repetition": [r"numpy / pure Python token-run speed-up: \d+x"],
    "shards": [
        r"corpus: [1-9]\d* documents, \d+\.\d MB of text \([1-9]\d* distinct",
        (r"limit \(tokenizers encode_batch, 1 thread\): [1-9]\d* tokens, [1-9]\d* tok/s \(\d+\.\d s; "
         r"encode_batch_fast [1-9]\d* tok/s"),
        r"limit \(tokenizers encode_batch, 2 threads\): [1-9]\d* tokens, [1-9]\d* tok/s",
        r"limit \(TrainingTokenizer\.encode_batch, 1 thread\): [1-9]\d* tokens, [1-9]\d* tok/s",
        r"limit \(TrainingTokenizer\.encode_batch, 2 threads\): [1-9]\d* tokens, [1-9]\d* tok/s",
        r"limit again \(1 thread, drift check\): encode_batch [1-9]\d* tok/s",
        r"limit again \(2 threads, drift check\): encode_batch [1-9]\d* tok/s",
        (r"curate shards build, 1 worker: [1-9]\d* tokens, [1-9]\d* tok/s end to end \(\d+\.\d s\), [1-9]\d* tok/s "
         r"in the tokenize stage \(\d+\.\d s; rounds: (plan \d+\.\d, )?tokens \d+\.\d, manifest \d+\.\d\)"),
        r"curate shards build, 2 workers: [1-9]\d* tokens, [1-9]\d* tok/s end to end \(\d+\.\d s\), [1-9]\d* tok/s",
        # the shards hold exactly the limit's tokens, document by document: a mismatch means they are wrong
        r"tokens, 1 worker: (\d+) in the manifest = [1-9]\d* \(limit\) \+ [1-9]\d* EOS \(one per non-empty document\) = \1: OK",
        r"tokens, 2 workers: (\d+) in the manifest = [1-9]\d* \(limit\) \+ [1-9]\d* EOS \(one per non-empty document\) = \1: OK",
        r"documents, 1 worker: ([1-9]\d*) of \1 in the shards once each with the limit's ids \+ EOS\n",
        r"documents, 2 workers: ([1-9]\d*) of \1 in the shards once each with the limit's ids \+ EOS\n",
        r"ratio curate/limit \(1 worker\): end to end \d+\.\d\d \(stage: \d+\.\d\d; goal >= 0\.9\) against ",
        r"ratio curate/limit \(2 workers\): end to end \d+\.\d\d \(stage: \d+\.\d\d; goal >= 0\.9\) against ",
        r"the stage's \d+\.\d s: encoding at that limit's rate \d+\.\d s, the rest",
    ],
}


@pytest.mark.parametrize("bench", list(EXPECTED))
def test_bench_smoke(bench: str) -> None:
    assert SHARED_DATA.is_dir(), f"the benches need the shared data at {SHARED_DATA} (set CURATE_SHARED_DATA)"
    result = subprocess.run(
        [sys.executable, f"bench/{bench}.py", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    missing = [pattern for pattern in EXPECTED[bench] if not re.search(pattern, output)]
    assert not missing, f"{missing} not in:\n{output}"
