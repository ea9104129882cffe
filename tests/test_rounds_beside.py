"""A map that routes rows by ``_partition`` and a reduce that reads an earlier output beside its shuffle."""

from __future__ import annotations

from collections.abc import Generator

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.execute import PARTITION_COLUMN, UNIT_COLUMN, route, run_rounds_locally
from curate.stage import GlobalStage, RoundResult, ShuffleRound, UnitData


class _Lookup(GlobalStage):
    """Round 1 stores each id under partition len(id) % P; round 2 routes queries there and joins beside."""

    name = "lookup"
    reads = ("id",)

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self.count = partitions

    def rounds(self) -> Generator[ShuffleRound, RoundResult, None]:
        stored = yield ShuffleRound("store", map=self.map_store, reduce=self.reduce_store, partitions=self.count)
        yield ShuffleRound("query", map=self.map_query, reduce=self.reduce_query, source="documents",
                           beside=("store/rows",), partitions=stored.partitions)

    def _partition(self, ids: pa.ChunkedArray) -> pa.Array:
        return pc.bit_wise_and(pc.utf8_length(ids), self.count - 1)

    def map_store(self, unit: UnitData) -> pa.Table:
        ids = unit.read(["id"])["id"]
        return pa.table({"key": ids, "stored": ids, PARTITION_COLUMN: self._partition(ids)})

    def reduce_store(self, group: pa.Table) -> dict[str, pa.Table]:
        return {"rows": group.select(["stored"]).append_column("home", group[PARTITION_COLUMN])}

    def map_query(self, unit: UnitData) -> pa.Table:
        ids = unit.read(["id"])["id"]
        return pa.table({"key": ids, UNIT_COLUMN: pa.repeat(pa.scalar(unit.unit), len(ids)),
                         PARTITION_COLUMN: self._partition(ids)})

    def reduce_query(self, group: pa.Table) -> dict[str, pa.Table]:
        queries = group.filter(pc.is_valid(group["key"]))
        beside = group.filter(pc.is_valid(group["stored"]))
        # every query finds its id beside it, stored by the same partition, which is this one
        assert pc.all(pc.equal(beside["home"], group[PARTITION_COLUMN][0])).as_py()
        found = pc.is_in(queries["key"], beside["stored"])
        return {"report": pa.table({"partition": pc.cast(queries[PARTITION_COLUMN], pa.int64()),
                                    "found": found, "beside": pa.repeat(pa.scalar(beside.num_rows), queries.num_rows)})}


def test_rows_routed_by_partition_meet_the_earlier_output_beside_them() -> None:
    ids = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g"]
    _, report = run_rounds_locally(_Lookup(4), {"u1": pa.table({"id": ids[:4]}), "u2": pa.table({"id": ids[4:]})})
    assert report.num_rows == len(ids) and pc.all(report["found"]).as_py()
    # each reduce saw exactly the stored rows of its own partition (1: a, eeeee and g)
    assert sorted(set(zip(report["partition"].to_pylist(), report["beside"].to_pylist(), strict=True))) == \
        [(0, 1), (1, 3), (2, 2), (3, 1)]


def test_a_map_routing_outside_the_partitions_is_an_error() -> None:
    rows = pa.table({"key": ["a", "b"], PARTITION_COLUMN: [0, 4]})
    with pytest.raises(ValueError, match=r"outside partitions 0\.\.3"):
        route(rows, 4, "r")
    kept, where = route(rows.slice(0, 1), 4, "r")
    assert kept.column_names == ["key"] and where.to_pylist() == [0]
