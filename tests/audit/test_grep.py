"""grep against matches computed directly from the run's Parquet files (kept/ and removed/**), on every
executor: this process, child processes, the test session's Ray."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.audit.grep import Pattern, grep
from curate.audit.run import RunOutput
from curate.cli import main

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def documents(audited_run: Path) -> list[dict]:
    """Every committed document: (kind, stage, reason, id, text), read without curate's audit code."""
    docs = []
    for folder in ("kept", "removed"):
        for f in sorted((audited_run / folder).rglob("*.parquet")):
            for r in pq.read_table(f, columns=["id", "text", "removed_by", "reason"]).to_pylist():
                docs.append({"kind": folder, "stage": r["removed_by"], "reason": r["reason"], "id": r["id"],
                             "text": r["text"] or ""})
    return docs


def expected(documents: list[dict], hit) -> tuple[Counter, Counter]:
    """Matches per (kind, stage, reason) and documents per (kind, stage), by a Python predicate."""
    matched = Counter((d["kind"], d["stage"], d["reason"]) for d in documents if hit(d["text"]))
    scanned = Counter((d["kind"], d["stage"]) for d in documents)
    return matched, scanned


def counted(found: dict) -> tuple[Counter, Counter]:
    matched, scanned = Counter(), Counter()
    if found["kept"] is not None:
        matched[("kept", None, None)] = found["kept"]["matched"]
        scanned[("kept", None)] = found["kept"]["documents"]
    for stage, s in (found["removed"] or {}).items():
        scanned[("removed", stage)] = s["documents"]
        for reason, n in s["reasons"].items():
            matched[("removed", stage, reason)] = n
        assert sum(s["reasons"].values()) == s["matched"], stage
    return +matched, scanned


def grep_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["audit", "grep", *argv, "--json"])
    printed = capsys.readouterr()
    assert re.search(r"grep: scanned \d+\.\d MB of text \(\d+ documents in \d+ parts\) in \d+\.\d\d s: [\d,]+\.\d MB/s",
                     printed.err), printed.err
    return code, json.loads(printed.out)


def test_a_phrase_of_a_removed_page_is_found_with_its_stage_and_reason(audited_run: Path, documents, capsys) -> None:
    # a five-word span of a removed page that no other document holds
    phrase, page = None, None
    for d in sorted((d for d in documents if d["kind"] == "removed"), key=lambda d: d["id"]):
        words = d["text"].split()
        for i in range(10, len(words) - 5, 7):
            span = " ".join(words[i:i + 5])
            if len(span) > 25 and span in d["text"] and sum(span in o["text"] for o in documents) == 1:
                phrase, page = span, d
                break
        if phrase:
            break
    assert phrase, "no removed page with a distinctive five-word span"
    code, found = grep_json(capsys, str(audited_run), phrase)
    assert code == 0 and found["matched"] == 1
    [match] = found["matches"]
    assert (match["id"], match["status"], match["stage"], match["reason"]) == \
        (page["id"], "removed", page["stage"], page["reason"])
    assert match["match"] == phrase and page["text"].index(phrase) == match["offset"]
    assert found["removed"][page["stage"]]["reasons"] == {page["reason"]: 1}
    # the plain form says where it went
    assert main(["audit", "grep", str(audited_run), phrase]) == 0
    text = capsys.readouterr().out
    assert f"REMOVED by {page['stage']}: {page['reason']}" in text and f"«{phrase}»" in text


@pytest.mark.parametrize("argv, hit", [
    (["the"], lambda t: "the" in t),
    (["internet", "--ignore-case"], lambda t: re.search("internet", t, re.IGNORECASE) is not None),
    ([r"colou?r|licen[cs]e|[0-9]{4}-[0-9]{2}", "--regex", "--ignore-case"],
     lambda t: re.search(r"colou?r|licen[cs]e|[0-9]{4}-[0-9]{2}", t, re.IGNORECASE) is not None),
    (["(c)", "-i"], lambda t: "(c)" in t.lower()),  # RE2 metacharacters in a literal stand for themselves
])
def test_counts_by_stage_and_reason_equal_counts_from_the_parquet_files(audited_run: Path, documents, capsys,
                                                                        argv, hit) -> None:
    code, found = grep_json(capsys, str(audited_run), *argv, "-n", "5")
    matched, scanned = expected(documents, hit)
    assert counted(found) == (matched, scanned)
    assert found["matched"] == sum(matched.values()) > 0 and code == 0
    assert found["documents"] == len(documents) and found["bytes"] == sum(len(d["text"].encode()) for d in documents)
    # the first matches are the first matching documents in scan order (kept, then removed by stage)
    assert len(found["matches"]) == min(5, found["matched"])
    for m in found["matches"]:
        text = next(d["text"] for d in documents if d["id"] == m["id"])
        assert text[m["offset"]:m["offset"] + len(m["match"])] == m["match"] and hit(m["match"])


def test_in_kept_or_removed_restricts_the_scan(audited_run: Path, documents, capsys) -> None:
    matched, scanned = expected(documents, lambda t: "the" in t)
    code, kept = grep_json(capsys, str(audited_run), "the", "--in", "kept", "--count")
    assert code == 0 and kept["removed"] is None and kept["matches"] == []
    assert kept["kept"] == {"documents": scanned[("kept", None)], "matched": matched[("kept", None, None)]}
    assert kept["documents"] == sum(d["kind"] == "kept" for d in documents)
    code, removed = grep_json(capsys, str(audited_run), "the", "--in", "removed", "-n", "3")
    assert code == 0 and removed["kept"] is None
    assert removed["matched"] == sum(n for (kind, _, _), n in matched.items() if kind == "removed")
    assert [m["status"] for m in removed["matches"]] == ["removed"] * 3


def test_no_match_exits_1_and_a_bad_regex_2(audited_run: Path, capsys) -> None:
    code, found = grep_json(capsys, str(audited_run), "zq-no-such-phrase-anywhere-xj")
    assert code == 1 and found["matched"] == 0 and found["documents"] > 0
    assert main(["audit", "grep", str(audited_run), "(unclosed", "--regex"]) == 2
    assert "invalid RE2 pattern" in capsys.readouterr().err


def test_ray_tasks_child_processes_and_this_process_agree(audited_run: Path, ray_session, capsys) -> None:
    argv = [str(audited_run), "the", "-i", "-n", "7"]
    results = {}
    for executor, extra in (("1 process", ["--workers", "1"]), ("processes", ["--workers", "2"]),
                            # the session's Ray is already initialised in this process: grep uses it as it is
                            ("Ray tasks", ["--ray-address", "auto"])):
        code, found = grep_json(capsys, *argv, *extra)
        assert code == 0 and executor in found["executor"], found["executor"]
        results[executor] = found
    reference = results["1 process"]
    for executor, found in results.items():
        for key in ("matched", "documents", "bytes", "kept", "removed", "matches"):
            assert found[key] == reference[key], (executor, key)
    # and the function itself, over Ray with one task per part
    output = RunOutput(str(audited_run))
    direct = grep(output, Pattern("the", ignore_case=True), limit=7, workers=99, ray_address="auto")
    assert direct["executor"] == f"{direct['parts']} Ray tasks"
    assert (direct["kept"], direct["removed"], direct["matches"]) == \
        (reference["kept"], reference["removed"], reference["matches"])
