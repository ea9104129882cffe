"""The tokenize stage as plain function calls (no Ray): mixing rules, host caps, shard cuts, empty draws."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from curate.execute import PARTITION_COLUMN, run_rounds_locally, write_artifacts
from curate.schema import DOCUMENT_SCHEMA
from curate.shards.formats import open_shard
from curate.shards.mix import Condition, MixRule, copies, host_caps, weights
from curate.shards.stage import Tokenize, TokenizeParams, _cuts
from curate.stage import ShuffleRound


#: Arrow allocations made while it is the default pool are counted (it lives as long as the buffers it made)
_COUNTING_POOL = pa.proxy_memory_pool(pa.default_memory_pool())


def documents(texts: list[str], **columns) -> pa.Table:
    n = len(texts)
    table = pa.table({f.name: pa.nulls(n, f.type) for f in DOCUMENT_SCHEMA}, schema=DOCUMENT_SCHEMA)
    values = {"id": [f"d{i}" for i in range(n)], "text": texts, **columns}
    for name, column in values.items():
        if name in DOCUMENT_SCHEMA.names:
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(column, pa.string()))
        else:
            table = table.append_column(name, pa.array(column))
    return table


def test_conditions_compare_numbers_and_strings() -> None:
    table = pa.table({"quality_hq": [0.9, 0.2, None], "language": ["en", "de", "en"]})
    assert Condition("quality_hq >= 0.8").mask(table).tolist() == [True, False, False]  # null never holds
    assert Condition("language == 'de'").mask(table).tolist() == [False, True, False]
    assert Condition("language != en").mask(table).tolist() == [False, True, False]
    for bad in ("quality_hq >> 1", "language > 'de'", "no operator"):
        with pytest.raises(ValueError, match="condition"):
            Condition(bad)


def test_first_matching_rule_wins_and_copies_average_the_weight() -> None:
    table = pa.table({"quality_hq": [0.9, 0.5, 0.1]})
    rules = [MixRule(where="quality_hq >= 0.8", weight=2), MixRule(where="quality_hq >= 0.3", weight=0.5, name="mid")]
    weight, bucket = weights(table, rules)
    assert weight.tolist() == [2, 0.5, 1] and bucket.to_pylist() == ["quality_hq >= 0.8", "mid", "default"]
    ids = [f"doc{i}" for i in range(20000)]
    drawn = copies(np.full(len(ids), 1.25), 7, ids)
    assert set(drawn.tolist()) == {1, 2} and abs(drawn.mean() - 1.25) < 0.01
    assert (copies(np.full(len(ids), 1.25), 7, ids) == drawn).all()  # a hash of (seed, id), not a random state


def test_host_caps_level_the_largest_hosts() -> None:
    caps = host_caps([("a", 50.0), ("b", 30.0), ("c", 10.0)], total=100.0, share=0.25)
    kept = {"a": 50 * caps["a"], "b": 30 * caps["b"]}
    total = kept["a"] + kept["b"] + 20  # c and the rest are untouched
    assert set(caps) == {"a", "b"} and kept["a"] / total == pytest.approx(0.25) == kept["b"] / total
    assert host_caps([("a", 10.0)], total=100.0, share=0.25) == {}


def test_cuts_stay_under_the_limit_at_document_boundaries() -> None:
    lengths = np.array([5, 5, 5, 5, 30, 5, 5])
    cuts = _cuts(lengths, 12)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:], strict=False))
    for lo, hi in cuts:
        assert lengths[lo:hi].sum() <= 12 or hi - lo == 1
    assert _cuts(np.array([3, 4]), 100) == [(0, 2)]


def test_documents_drawn_zero_times_write_no_shard_but_are_counted(tmp_path: Path) -> None:
    units = {"u": documents(["one document", "another document"], quality_hq=[0.1, 0.2])}
    stage = Tokenize(TokenizeParams(mix=[MixRule(where="quality_hq < 0.5", weight=0)]))
    removals, report = run_rounds_locally(stage, units, partitions=2, output=str(tmp_path))
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert removals.num_rows == 0 and manifest["shards"] == []
    assert manifest["totals"]["documents_in"] == 2 and manifest["totals"]["documents"] == 0
    assert not list((tmp_path / "shards").glob("shard-*"))


def test_the_tokens_reduce_holds_a_partitions_tokens_about_once_more(tmp_path: Path) -> None:
    """The reduce sorts the small columns and copies the token blobs once, in order, into the array the shard
    files are views of: its extra memory is about one copy of the partition's tokens (the old reduce made ~five:
    filter, sort, bytes, Arrow rows, Arrow table), so a worker's peak does not grow by several partitions."""
    stage = Tokenize(TokenizeParams(format="megatron"))
    rng = np.random.default_rng(0)
    n_docs, per_doc = 1_000, 4_000
    docs = [rng.integers(0, 100_000, per_doc, dtype=np.int32) for _ in range(n_docs)]
    keys = rng.permutation(n_docs).astype(np.int64)
    flat = np.concatenate(docs)
    offsets = pa.py_buffer((np.arange(n_docs + 1, dtype=np.int64) * per_doc * 4))
    blobs = pa.LargeBinaryArray.from_buffers(pa.large_binary(), n_docs, [None, offsets, pa.py_buffer(flat)])
    text = pa.array([f"x{i}" for i in range(n_docs)], pa.string())
    group = pa.table({"key": keys, "id": text, "copy": np.zeros(n_docs, np.int64), "url": text, "source": text,
                      "language": pa.array(["en"] * n_docs), "bucket": pa.array(["default"] * n_docs),
                      "n_tokens": np.full(n_docs, per_doc, np.int64), "tokens": blobs,
                      PARTITION_COLUMN: pa.array(np.zeros(n_docs, np.int32))})
    stage.tokenizer  # loaded before measuring
    pool, previous = _COUNTING_POOL, pa.default_memory_pool()
    base = pool.max_memory()
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        outputs = stage.reduce_tokens(group)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    token_bytes = flat.nbytes
    extra = python_peak + pool.max_memory() - base
    assert extra < 1.3 * token_bytes, f"{extra / token_bytes:.2f} copies of the partition's tokens"

    write_artifacts(fsspec.filesystem("file"), str(tmp_path),
                    ShuffleRound("tokens", map=None, reduce=None, artifacts="shards"), outputs["artifacts"])
    [name] = outputs["shards"]["name"].to_pylist()
    reader = open_shard(str(tmp_path / "shards" / name), "megatron")
    order = np.argsort(keys, kind="stable")
    assert reader.num_documents == n_docs
    assert all(np.array_equal(reader.document(i), docs[order[i]]) for i in (0, 1, n_docs // 2, n_docs - 1))
