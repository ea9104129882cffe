"""Exact deduplication: one representative per group of documents whose normalised text (or URL) is equal.

About 40 % of Common Crawl's duplicates are exact copies (re-crawls, mirrors, syndicated pages). One shuffle
round: every still-kept document is keyed by a 128-bit xxh3 hash of its normalised text, so one group's
members meet in one partition whatever unit they came from; the reduce keeps one deterministic
representative and removes the others with ``duplicate_of`` (the representative's id) and ``group_size``.
Memory per reduce is bounded by the partition: only (key, id, fetch time, length) travel, never text.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.registry import register
from curate.stage import GlobalStage, ShuffleRound, StageParams, UnitData

REASON = "exact_duplicate"


class ExactDedupParams(StageParams):
    key: Literal["text", "url"] = Field("text", description="what must be equal: the normalised text, or the URL")
    lowercase: bool = Field(True, description="compare text case-insensitively")
    whitespace: bool = Field(True, description="collapse runs of white space and trim")
    punctuation: bool = Field(False, description="drop Unicode punctuation before comparing")
    digits: bool = Field(False, description="map every digit to 0 (dates, counters and prices differ)")
    keep: Literal["earliest", "longest", "min_id"] = Field(
        "earliest", description="the representative: earliest fetch time, longest text, or smallest id; ties "
        "always break on the smallest id, so the choice never depends on shuffle order")


def normalise(texts: pa.ChunkedArray | pa.Array, params: ExactDedupParams) -> pa.Array:
    """The text a group must share, vectorised over a column (RE2 through pyarrow)."""
    if params.lowercase:
        texts = pc.utf8_lower(texts)
    if params.punctuation:
        texts = pc.replace_substring_regex(texts, r"\pP+", "")
    if params.digits:
        texts = pc.replace_substring_regex(texts, r"\d", "0")
    if params.whitespace:
        texts = pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, r"\s+", " "))
    return texts


def hash_keys(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """128-bit xxh3 of each value (collisions are negligible at 10^12 documents); nulls stay null."""
    import xxhash

    return pa.array([None if v is None else xxhash.xxh3_128_hexdigest(v) for v in values.to_pylist()], pa.string())


@register
class ExactDedup(GlobalStage):
    """Remove all but one document of every group with equal normalised text (or URL)."""

    name = "exact_dedup"
    Params = ExactDedupParams
    params: ExactDedupParams
    reads = ("id", "text", "url", "fetch_time", "removed_by")
    reads_removed = False  # the kept corpus only
    report_order = (("group_size", "descending"), ("representative", "ascending"))

    def rounds(self):
        yield ShuffleRound("groups", map=self.map_unit, reduce=self.reduce_partition)

    def map_unit(self, unit: UnitData) -> pa.Table:
        """(key, id, fetch_time, length) of the unit's still-kept documents; empty texts have no key."""
        p = self.params
        rows = unit.read(self.reads)
        rows = rows.filter(pc.is_null(rows["removed_by"]))
        value = rows["url"] if p.key == "url" else normalise(rows["text"], p)
        keys = hash_keys(pc.if_else(pc.equal(value, ""), pa.nulls(len(value), pa.string()), value))
        table = pa.table({"key": keys, "id": rows["id"], "fetch_time": rows["fetch_time"],
                          "length": pc.fill_null(pc.utf8_length(rows["text"]), 0)})
        return table.filter(pc.is_valid(table["key"]))

    def reduce_partition(self, group: pa.Table) -> dict[str, pa.Table]:
        """Per key, the representative first (by ``keep``, then id); every other member is a removal."""
        order = {"earliest": [("fetch_time", "ascending")], "longest": [("length", "descending")],
                 "min_id": []}[self.params.keep]
        rows = group.sort_by([("key", "ascending"), *order, ("id", "ascending")])
        stats = rows.group_by("key", use_threads=False).aggregate([("id", "first"), ("id", "count")])
        index = pc.index_in(rows["key"], stats["key"])
        representative = pc.take(stats["id_first"], index)
        size = pc.take(stats["id_count"], index)
        duplicate = pc.not_equal(rows["id"], representative)
        removed = rows.filter(duplicate)
        sizes = size.filter(duplicate)
        removals = pa.table({
            "id": removed["id"],
            "reason": pa.repeat(REASON, removed.num_rows),
            "score": pc.cast(sizes, pa.float64()),
            "threshold": pa.nulls(removed.num_rows, pa.float64()),
            "duplicate_of": representative.filter(duplicate),
            "group_size": sizes,
        })
        groups = stats.filter(pc.greater(stats["id_count"], 1))
        report = pa.table({"representative": groups["id_first"], "group_size": groups["id_count"],
                           "key": groups["key"]})
        return {"removals": removals, "report": report}
