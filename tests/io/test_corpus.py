"""jsonl_read and parquet_read on real corpora: every line or row a document or an error with its reason."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.io.corpus import CorpusReadParams, JsonlReader, ParquetReader
from curate.io.warc import ReadCounts

CCNET = "dolma-ccnet-cc_en_head-0091.jsonl.gz"


def read_all(reader, data: bytes, path: str, batch_size: int = 4):
    counts, errors = ReadCounts(), []
    tables = list(reader.read(io.BytesIO(data), path, batch_size, lambda *e: errors.append(e), counts))
    rows = [r for t in tables for r in t.to_pylist()]
    return counts, errors, rows


def ccnet_lines(shared_data: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress((shared_data / "text" / CCNET).read_bytes()).splitlines()]


def test_jsonl_gzip_with_nested_fields(shared_data: Path) -> None:
    reader = JsonlReader(CorpusReadParams(url="id", fetch_time="metadata.date_download"))
    counts, errors, rows = read_all(reader, (shared_data / "text" / CCNET).read_bytes(), "x.jsonl.gz")
    truth = ccnet_lines(shared_data)
    assert errors == [] and counts.documents == len(rows) == len(truth) == 10
    assert [r["text"] for r in rows] == [t["text"] for t in truth]
    assert [r["fetch_time"] for r in rows] == [t["metadata"]["date_download"] for t in truth]
    assert rows[0]["host"] == "100kinvesting.com" and rows[0]["warc_offset"] == 1


def test_bad_lines_are_errors_and_the_rest_is_read(shared_data: Path) -> None:
    import zstandard

    lines = gzip.decompress((shared_data / "text" / CCNET).read_bytes()).splitlines()
    bad = lines[:3] + [b'{"text": "cut off', b"[1, 2]", b'{"text": 5}', b"", b'{"text": "no id"}'] + lines[3:]
    data = zstandard.ZstdCompressor().compress(b"\n".join(bad) + b"\n")
    counts, errors, rows = read_all(JsonlReader(), data, "mix.jsonl.zst")
    assert counts.documents == 11 and counts.errors == 3 and counts.skipped == {"blank_line": 1}
    assert [e[0] for e in errors] == [4, 5, 6]
    assert "malformed JSON" in errors[0][2] and "expected a JSON object" in errors[1][2] and "not a string" in errors[2][2]
    assert [r["id"] for r in rows if r["text"] == "no id"] == ["mix.jsonl.zst@8"]


def test_parquet_reads_a_previous_corpus_and_reports_a_missing_column(tmp_path: Path, shared_data: Path) -> None:
    truth = ccnet_lines(shared_data)
    table = pa.table({"id": [t["id"] for t in truth], "content": [t["text"] for t in truth],
                      "meta": [{"url": t["id"]} for t in truth]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=3)
    reader = ParquetReader(CorpusReadParams(text="content", url="meta.url"))
    counts, errors, rows = read_all(reader, buffer.getvalue(), "c.parquet")
    assert errors == [] and counts.documents == 10 and [r["text"] for r in rows] == [t["text"] for t in truth]
    assert [r["url"] for r in rows] == [t["id"] for t in truth] and rows[9]["warc_offset"] == 9
    counts, errors, rows = read_all(ParquetReader(), buffer.getvalue(), "c.parquet")
    assert rows == [] and counts.errors == 1 and "no column 'text'" in errors[0][2]
    counts, errors, _ = read_all(ParquetReader(), b"not parquet at all", "d.parquet")
    assert counts.errors == 1 and "not a readable Parquet file" in errors[0][2]


def test_carried_columns_keep_their_values_and_types(tmp_path: Path, shared_data: Path) -> None:
    """An earlier run's language and classifier score ride along (for mixing shards); absent ones are null."""
    truth = ccnet_lines(shared_data)
    scores = [i / 10 for i in range(len(truth))]
    lines = [json.dumps({"id": t["id"], "text": t["text"], "language": "de", "quality_hq": q}).encode()
             for t, q in zip(truth, scores, strict=True)]
    params = CorpusReadParams(url="id", columns=["language", "quality_hq", "absent"])
    _, errors, rows = read_all(JsonlReader(params), b"\n".join(lines), "x.jsonl")
    assert errors == [] and [r["quality_hq"] for r in rows] == scores
    assert {r["language"] for r in rows} == {"de"} and {r["absent"] for r in rows} == {None}
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [t["id"] for t in truth], "text": [t["text"] for t in truth],
                             "language": ["fr"] * len(truth), "quality_hq": pa.array(scores, pa.float32())}), buffer)
    _, errors, rows = read_all(ParquetReader(params), buffer.getvalue(), "k.parquet")
    assert errors == [] and [r["quality_hq"] for r in rows] == pytest.approx(scores)
    assert {r["language"] for r in rows} == {"fr"} and rows[0]["host"] == "100kinvesting.com"


@pytest.mark.e2e
def test_a_corpus_pipeline_from_the_cli(shared_data: Path, ray_session, tmp_path: Path) -> None:
    """jsonl in, filters and exact dedup over it, a previous kept/ read back with parquet_read."""
    from curate.cli import main

    lines = gzip.decompress((shared_data / "text" / CCNET).read_bytes()).splitlines()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines[:4] + [b"{broken"]) + b"\n"))
    other = shared_data / "text" / "dolma-ccnet-cc_en_head-0174.jsonl.gz"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - jsonl_read: {url: id, id: null}\n  - gopher_repetition: {}\n"
                        "  - exact_dedup: {}\n")
    out = tmp_path / "out"
    assert main(["run", str(pipeline), "-i", str(tmp_path / "in"), str(other), "-o", str(out), "--no-progress",
                 "--workers", "2"]) == 0
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["conservation_ok"] and stats["documents"] == 10 + 4 + 10 and stats["read_errors"] == 1
    removed = pq.read_table(out / "removed" / "exact_dedup").to_pylist()
    assert len(removed) >= 4 and {Path(r["warc_path"]).name for r in removed} <= {"a.jsonl", "b.jsonl.gz"}
    again = tmp_path / "again.yaml"
    again.write_text("stages:\n  - parquet_read: {}\n  - gopher_quality: {}\n")
    assert main(["run", str(again), "-i", str(out / "kept"), "-o", str(tmp_path / "out2"), "--no-progress"]) == 0
    kept_ids = set(pq.read_table(out / "kept", columns=["id"])["id"].to_pylist())
    second = json.loads((tmp_path / "out2" / "stats" / "stats.json").read_text())
    assert second["documents"] == len(kept_ids) and second["conservation_ok"]
