"""exact_dedup: normalisation, the representative, and duplicates across real pages re-packed in other files."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.dedup.exact import ExactDedup, ExactDedupParams, normalise
from curate.execute import run_rounds_locally


def docs(rows: list[tuple[str, str, str]]) -> pa.Table:
    ids, texts, times = zip(*rows)
    return pa.table({"id": list(ids), "text": list(texts), "fetch_time": list(times), "url": [f"u/{i}" for i in ids],
                     "removed_by": pa.nulls(len(ids), pa.string())})


def test_normalisation_options() -> None:
    texts = pa.array(["  Hello,\n World 2024 ", "hello world 1999"])
    assert normalise(texts, ExactDedupParams()).to_pylist() == ["hello, world 2024", "hello world 1999"]
    both = ExactDedupParams(punctuation=True, digits=True)
    assert normalise(texts, both).to_pylist() == ["hello world 0000"] * 2


def test_one_representative_per_group_across_units_and_partitions() -> None:
    a = docs([("a1", "Same text.", "2024-01-02"), ("a2", "unique", "2024-01-01"), ("a3", "", "2024-01-01")])
    b = docs([("b1", "same  TEXT.", "2024-01-01"), ("b2", "Same text.", "2024-01-03"), ("b3", "", "2024-01-05")])
    for partitions in (1, 5):
        removals, report = run_rounds_locally(ExactDedup(), {"ua": a, "ub": b}, partitions=partitions)
        got = sorted(zip(removals["id"].to_pylist(), removals["duplicate_of"].to_pylist(),
                         removals["group_size"].to_pylist()))
        assert got == [("a1", "b1", 3), ("b2", "b1", 3)]  # earliest fetch wins; empty texts are never duplicates
        assert report.to_pylist()[0]["representative"] == "b1"
    removals, _ = run_rounds_locally(ExactDedup(ExactDedupParams(keep="min_id", lowercase=False)), {"ua": a, "ub": b})
    assert sorted(removals["id"].to_pylist()) == ["b2"]  # case now matters: b1 is alone; a1 < b2


def test_removed_documents_are_not_grouped() -> None:
    a = docs([("a1", "x", "1"), ("a2", "x", "2")])
    a = a.set_column(a.schema.get_field_index("removed_by"), "removed_by", pa.array(["language", None]))
    removals, _ = run_rounds_locally(ExactDedup(), {"ua": a})
    assert removals.num_rows == 0


def write_warc(path: Path, pages: list[tuple[str, str, bytes]]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, date, body in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=http, warc_headers_dict={"WARC-Date": date}))


@pytest.mark.e2e
def test_real_pages_repacked_under_other_urls_are_removed_across_files(shared_data: Path, ray_session,
                                                                      tmp_path: Path) -> None:
    from curate.cli import main

    pages = [gzip.decompress(p.read_bytes()) for p in sorted((shared_data / "html" / "scrapinghub-aeb" / "html").glob("*.html.gz"))[:8]]
    first = [(f"https://news.example/{i}", f"2024-01-0{i + 1}T00:00:00Z", page) for i, page in enumerate(pages[:6])]
    again = [(f"https://mirror.example/{i}", "2024-06-01T00:00:00Z", page) for i, page in enumerate(pages[:3])]
    write_warc(tmp_path / "a.warc.gz", first)
    write_warc(tmp_path / "b.warc.gz", again + [("https://mirror.example/new", "2024-06-02T00:00:00Z", pages[7])])
    write_warc(tmp_path / "c.warc.gz", [("https://late.example/0", "2025-01-01T00:00:00Z", pages[0])])
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - warc_read: {}\n  - extract: {}\n  - exact_dedup: {}\n")
    out = tmp_path / "out"
    assert main(["run", str(pipeline), "-i", str(tmp_path / "a.warc.gz"), str(tmp_path / "b.warc.gz"),
                 str(tmp_path / "c.warc.gz"), "-o", str(out), "--no-progress", "--workers", "2"]) == 0
    removed = pq.read_table(out / "removed" / "exact_dedup").to_pylist()
    kept = {r["id"]: r["url"] for r in pq.read_table(out / "kept", columns=["id", "url"]).to_pylist()}
    by_url = {v: k for k, v in kept.items()}
    assert sorted(r["url"] for r in removed) == ["https://late.example/0", *[f"https://mirror.example/{i}"
                                                                           for i in range(3)]]
    for r in removed:  # the earliest copy, from a.warc.gz, is the one kept
        original = by_url[r["url"].replace("mirror", "news").replace("late", "news")]
        assert r["duplicate_of"] == original and r["reason"] == "exact_duplicate"
        assert r["group_size"] == (3 if r["url"].endswith("/0") else 2)
    assert len(kept) == 7 and json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]
