"""The tokenize stage as plain function calls (no Ray): mixing rules, host caps, shard cuts, empty draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.execute import run_rounds_locally
from curate.schema import DOCUMENT_SCHEMA
from curate.shards.mix import Condition, MixRule, copies, host_caps, weights
from curate.shards.stage import Tokenize, TokenizeParams, _cuts


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
