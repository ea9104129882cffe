"""The privacy benches run from the README's install: ``bench/pii.py --smoke`` and ``bench/decontam.py --smoke``
exit 0 and print their rate and ratio lines.

As in ``test_bench_smoke.py``: the smoke sizes (200 documents; 5,000 evaluation items) take seconds yet go
through every code path (redact and tag mode, the RE2 prefilters, the index built in process and by the CLI,
both decontamination modes, the small index), so an API change in the ``pii`` or ``decontaminate`` stage or
the index fails here rather than in the next full measurement. The benches read the shared data and so do
these tests: without it they fail, never skip.
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

NUMBER = r"\d+(\.\d+)?"
RATE = rf"[1-9]\d* docs, {NUMBER} docs/s \({NUMBER} s\)"

#: Per bench, patterns its smoke output must contain: the lines a reader of a full run looks at.
EXPECTED = {
    "pii": [
        rf"corpus: 200 distinct documents, {NUMBER} MB of text",
        rf"filters \(gopher_repetition, gopher_quality, c4_quality, fineweb_quality, repetition\): {RATE}",
        (rf"pii: {RATE}; found: email \d+, phone \d+, ip_address \d+, credit_card \d+, iban \d+, aws_key \d+, "
         rf"private_key \d+, bearer_token \d+, api_token \d+; \d+ documents rewritten"),
        rf"pii again \(drift check\): {NUMBER} docs/s",
        rf"pii, every kind in tag mode \(no rewriting\): {RATE}",
        rf"prefilters: {NUMBER}% of documents go on to Python \(\d+ of 200\); per kind: email {NUMBER}%, phone",
        rf"ratio pii/filters docs/s: {NUMBER}x \(goal: > 1",
        rf"ratio pii \(tag mode\)/filters docs/s: {NUMBER}x",
    ],
    "decontam": [
        rf"eval set: 5000 items \({NUMBER} words on average",
        (rf"index build \(build_index, 1 process\): [1-9]\d* items, [1-9]\d* distinct 13-grams, [1-9]\d* entries, "
         rf"{NUMBER} MB, {NUMBER} s, {NUMBER} items/s; word lengths looked up: \[[\d, ]*13\]"),
        (rf"curate decontam build \(CLI, end to end\): [1-9]\d* items, [1-9]\d* distinct 13-grams, {NUMBER} MB, "
         rf"{NUMBER} s, {NUMBER} items/s; same index as build_index: OK"),
        r"big index, 13-grams only \(--min-item-words 13\): [1-9]\d* items .*; word lengths looked up: \[13\]",
        (r"small index, WikiText-2 valid, a line an item \(--min-item-words 8\): [1-9]\d* items .*; "
         r"word lengths looked up: \[8, 9, 10, 11, 12, 13\]"),
        r"small index, 13-grams only \(--min-item-words 13\): [1-9]\d* items .*; word lengths looked up: \[13\]",
        rf"filters \(gopher_repetition, gopher_quality, c4_quality, fineweb_quality, repetition\): {RATE}",
        # the items come from the documents looked up: a stage that flags none of them is not matching
        rf"decontaminate \(remove, big index\): {RATE}; flagged [1-9]\d* of 200, removed [1-9]\d*",
        rf"decontaminate \(cut, big index\): {RATE}; flagged [1-9]\d* of 200, cut [1-9]\d* of [1-9]\d* characters",
        rf"decontaminate \(remove, big index, 13-grams only\): {RATE}; flagged [1-9]\d* of 200",
        rf"decontaminate \(remove, small index\): {RATE}; flagged \d+ of 200",
        rf"decontaminate \(cut, small index\): {RATE}; flagged \d+ of 200",
        rf"decontaminate \(remove, small index, 13-grams only\): {RATE}",
        rf"decontaminate \(remove, big index, drift check\): {RATE}",
        (rf"ratio decontaminate/filters docs/s \(big index, [1-9]\d* items\): {NUMBER}x remove, {NUMBER}x cut "
         rf"\(goal: > 1\); 13-grams only: {NUMBER}x remove"),
        (rf"ratio decontaminate/filters docs/s \(small index, [1-9]\d* items\): {NUMBER}x remove, {NUMBER}x cut "
         rf"\(goal: > 1\); 13-grams only: {NUMBER}x remove"),
    ],
}


@pytest.mark.parametrize("bench", list(EXPECTED))
def test_bench_privacy_smoke(bench: str) -> None:
    assert SHARED_DATA.is_dir(), f"the benches need the shared data at {SHARED_DATA} (set CURATE_SHARED_DATA)"
    result = subprocess.run(
        [sys.executable, f"bench/{bench}.py", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    missing = [pattern for pattern in EXPECTED[bench] if not re.search(pattern, output)]
    assert not missing, f"{missing} not in:\n{output}"
