"""Committed units without Ray: which commits are current, what a sweep deletes, what the ledger counts."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.audit.ledger import check_conservation
from curate.commit import Commit, Part, current_chain, expected_key, load_commits, part_path, step_digest, sweep, \
    write_commit
from curate.io.fs import Location


def commit(step: int, unit: str, attempt: str, key: str, parts: list[Part] = (), rows_in: int = 0) -> Commit:
    return Commit(step=step, unit=unit, input=f"in/{unit}.warc.gz", attempt=attempt, input_key=key,
                  parts=list(parts), stats={"in": rows_in, "stages": {}})


def write_part(root: Path, rel: str, rows: int) -> Part:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(rows)]}), path)
    kind = rel.split("/")[0] if not rel.startswith("work/") else "kept"
    return Part(kind=kind, path=rel, rows=rows, stage=rel.split("/")[1] if kind == "removed" else None)


def test_part_names_carry_unit_step_and_attempt() -> None:
    assert part_path("removed/language", "abc", 2, "f00") == "removed/language/part-abc-s02-f00.parquet"


def test_a_redone_step_supersedes_the_later_steps() -> None:
    kinds = ["documents", "documents", "global"]
    a0, b0 = commit(0, "a", "a0", "in/a.warc.gz"), commit(0, "b", "b0", "in/b.warc.gz")
    a1 = commit(1, "a", "a1", "a0")
    b1 = commit(1, "b", "b1", "b0")
    digest = step_digest({"a": a1, "b": b1})
    a2 = commit(2, "a", "a2", expected_key("global", a1.input, a1, digest))
    b2 = commit(2, "b", "b2", expected_key("global", b1.input, b1, digest))
    commits = {0: {"a": a0, "b": b0}, 1: {"a": a1, "b": b1}, 2: {"a": a2, "b": b2}}
    chain = current_chain(commits, kinds, {"a", "b"})
    assert [sorted(step) for step in chain] == [["a", "b"], ["a", "b"], ["a", "b"]]
    # "b" redone in step 1: its step-2 commit and, through the digest, "a"'s step-2 commit are superseded
    commits[1]["b"] = commit(1, "b", "b1-again", "b0")
    chain = current_chain(commits, kinds, {"a", "b"})
    assert [sorted(step) for step in chain] == [["a", "b"], ["a", "b"], []]
    # an input dropped from the run is not part of it
    assert [sorted(step) for step in current_chain(commits, kinds, {"a"})][0] == ["a"]


def test_sweep_deletes_only_what_no_current_commit_names(tmp_path: Path) -> None:
    fs, root = Location(str(tmp_path)).resolve()
    kept = write_part(tmp_path, part_path("kept", "a", 0, "new"), 3)
    removed = write_part(tmp_path, part_path("removed/language", "a", 0, "new"), 2)
    write_part(tmp_path, part_path("errors", "a", 0, "old"), 5)  # a dead attempt's parts
    write_part(tmp_path, part_path("kept", "a", 0, "old"), 5)
    rounds = tmp_path / "work/steps/01/rounds/00-x/shuffle/00000/map-a.parquet"
    write_part(tmp_path, str(rounds.relative_to(tmp_path)), 1)
    current = commit(0, "a", "new", "in/a.warc.gz", [kept, removed], rows_in=5)
    write_commit(fs, root, current)
    write_commit(fs, root, commit(1, "a", "stale", "gone"))
    chain = current_chain(load_commits(fs, root), ["documents", "documents"], {"a"})
    assert sweep(fs, root, chain) == 3  # two dead parts and the stale manifest
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == sorted(
        [kept.path, removed.path, str(rounds.relative_to(tmp_path))])
    conservation = check_conservation(Location(str(tmp_path)), chain[:1], {"a": "in/a.warc.gz"})
    assert conservation.ok and conservation.totals == {"in": 5, "kept": 3, "removed": 2, "errors": 0}


def test_the_ledger_checks_parts_against_their_footers(tmp_path: Path) -> None:
    fs, root = Location(str(tmp_path)).resolve()
    kept = write_part(tmp_path, part_path("kept", "a", 0, "x"), 3)
    lying = Part(kind=kept.kind, path=kept.path, rows=4)
    chain = [{"a": commit(0, "a", "x", "in/a.warc.gz", [lying], rows_in=4)}]
    conservation = check_conservation(Location(str(tmp_path)), chain, {"a": "in/a.warc.gz"})
    assert not conservation.ok and "holds 3 rows, its commit says 4" in conservation.failures()[0]
    missing = [{"a": commit(0, "a", "x", "in/a.warc.gz", [Part("kept", "kept/none.parquet", 1)], rows_in=1)}]
    assert "committed part missing" in check_conservation(Location(str(tmp_path)), missing, {"a": "x"}).failures()[0]


def test_unfinished_inputs_are_listed_not_counted(tmp_path: Path) -> None:
    chain = [{"a": commit(0, "a", "x", "in/a.warc.gz")}, {}]
    conservation = check_conservation(Location(str(tmp_path)), chain, {"a": "in/a.warc.gz", "b": "in/b.warc.gz"})
    assert conservation.unfinished == {"in/a.warc.gz": "step 1", "in/b.warc.gz": "step 0"}
    assert conservation.per_file == {}
