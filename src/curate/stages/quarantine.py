"""Source quarantine: drop every page of a source whose pages are mostly pathological.

Per-document filters judge one page at a time, so they miss the short members of a pathological source:
r/microwavegang posts are "m" repeated 20 to 20,000 times, a repetition filter catches the long runs
but not "mmmmmmmmmmmmmmmmmmmm", and the survivors still teach a model to emit runs of "m" (the loss
spikes reported for such a subreddit in a public model; issue #3). When at least ``max_pathological_share`` of a
source's documents (kept *and* removed, at least ``min_docs`` of them) were removed by the
``pathological_stages`` (or flagged in ``pathological_column``: the repetition stage's verdict, which
it also gives on pages another filter removed first), the source's remaining pages go too. Sources below the bar keep their healthy
pages: one spam page must not cost a forum its other threads.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.registry import register
from curate.schema import active_mask
from curate.sources import SourceRules, source_keys
from curate.stage import REMOVALS_SCHEMA, GlobalStage, ShuffleRound, StageParams, UnitData

REASON = "source_quarantine"
#: First characters of a pathological page kept for the audit report (enough to recognise the pattern).
EXAMPLE_CHARS = 200

#: One small row per document with a source: what :meth:`SourceQuarantine.partial` emits and the runner shuffles.
PARTIAL_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("active", pa.bool_(), nullable=False),
        pa.field("pathological", pa.bool_(), nullable=False),
        pa.field("example", pa.string()),
    ]
)

REPORT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("docs", pa.int64()),
        pa.field("pathological", pa.int64()),
        pa.field("share", pa.float64()),
        pa.field("removed", pa.int64()),
        pa.field("example", pa.string()),
    ]
)


class QuarantineParams(StageParams):
    min_docs: int = Field(
        5, ge=1, description="sources with fewer documents are never quarantined: too little evidence"
    )
    max_pathological_share: float = Field(
        0.5, gt=0.0, le=1.0, description="quarantine when pathological / documents reaches this share"
    )
    pathological_stages: tuple[str, ...] = Field(
        ("repetition",), description="removals by these stages count as pathological"
    )
    pathological_reasons: tuple[str, ...] = Field(
        (), description="removals with these reasons count as pathological too, whichever stage made them"
    )
    pathological_column: str | None = Field(
        "repetition_pathological",
        description="a boolean column that also marks a page pathological (the repetition stage sets it, on "
        "rows other filters removed first too when it runs with measure_removed); null ignores it",
    )
    rules: SourceRules | None = Field(
        None, description="recompute the source key from 'url' with these rules; default: the 'source' column"
    )


@register
class SourceQuarantine(GlobalStage):
    """Remove all still-kept pages of sources where pathological pages reach ``max_pathological_share``."""

    name = "source_quarantine"
    Params = QuarantineParams
    params: QuarantineParams

    reads = ("id", "url", "source", "removed_by", "reason")

    def optional_reads(self) -> tuple[str, ...]:
        return (self.params.pathological_column,) if self.params.pathological_column else ()

    def rounds(self):
        """One round: source rows shuffled by source key, decided per source."""
        yield ShuffleRound("sources", map=self.map_unit, reduce=self.reduce_partition)

    def map_unit(self, unit: UnitData) -> pa.Table:
        """Source rows of one unit; text is read only for units that hold a pathological page (the example)."""
        rows = self.partial(unit.read(self.reads + self.optional_reads()))
        if not pc.any(rows["pathological"]).as_py():
            return rows
        texts = unit.read(("id", "text"))
        index = pc.index_in(rows["id"], texts["id"])
        snippet = pc.utf8_slice_codeunits(pc.take(texts["text"], index), 0, EXAMPLE_CHARS)
        example = pc.if_else(rows["pathological"], snippet, pa.scalar(None, pa.string()))
        return rows.set_column(rows.schema.get_field_index("example"), "example", example)

    def reduce_partition(self, group: pa.Table) -> dict[str, pa.Table]:
        removals, report = self.decide(group)
        return {"removals": removals, "report": report}

    def partial(self, batch: pa.Table) -> pa.Table:
        """One row per document with a source key; documents without one belong to no source and are skipped.

        ``example`` is the start of a pathological page's text when ``batch`` has a ``text`` column.
        """
        p = self.params
        keys = source_keys(batch["url"], p.rules) if p.rules is not None else batch["source"]
        pathological = pc.or_(
            pc.is_in(batch["removed_by"], value_set=pa.array(p.pathological_stages, pa.string())),
            pc.is_in(batch["reason"], value_set=pa.array(p.pathological_reasons, pa.string())),
        )
        if p.pathological_column and p.pathological_column in batch.column_names:
            flagged = pc.fill_null(batch[p.pathological_column].cast(pa.bool_()), False)
            pathological = pc.or_(pathological, flagged)
        if "text" in batch.column_names:
            example = pc.if_else(
                pathological, pc.utf8_slice_codeunits(batch["text"], 0, EXAMPLE_CHARS), pa.scalar(None, pa.string())
            )
        else:
            example = pa.nulls(batch.num_rows, pa.string())
        rows = pa.table(
            {
                "key": keys,
                "id": batch["id"],
                "active": active_mask(batch),
                "pathological": pathological,
                "example": example,
            }
        )
        return rows.filter(pc.is_valid(rows["key"])).cast(PARTIAL_SCHEMA)

    def decide(self, group: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Quarantine decision per source of this shuffle partition: (removals, report rows)."""
        p = self.params
        # Sorted so the reported example is the same whatever order the shuffle delivered rows in.
        group = group.sort_by([("key", "ascending"), ("id", "ascending")])
        counts = pa.table(
            {
                "key": group["key"],
                "id": group["id"],
                "active": pc.cast(group["active"], pa.int64()),
                "pathological": pc.cast(group["pathological"], pa.int64()),
                "example": group["example"],
            }
        )
        stats = counts.group_by("key", use_threads=False).aggregate(
            [
                ("id", "count", pc.CountOptions(mode="all")),
                ("pathological", "sum"),
                ("active", "sum"),
                ("example", "first"),
            ]
        )
        docs = stats["id_count"]
        pathological = stats["pathological_sum"]
        # Divide rather than compare pathological >= share * docs: p / n is correctly rounded, so 3 of 10
        # meets a configured 0.3 exactly, while 0.3 * 10 == 3.0000000000000004 would not.
        share = pc.divide(pc.cast(pathological, pa.float64()), pc.cast(docs, pa.float64()))
        quarantined = pc.and_(pc.greater_equal(docs, p.min_docs), pc.greater_equal(share, p.max_pathological_share))

        index = pc.index_in(group["key"], value_set=stats["key"])
        remove = pc.and_(pc.take(quarantined, index), group["active"])
        ids = group["id"].filter(remove)
        removals = pa.table(
            {
                "id": ids,
                "reason": pa.repeat(REASON, len(ids)),
                "score": pc.take(share, index).filter(remove),
                "threshold": pa.repeat(p.max_pathological_share, len(ids)),
            },
            schema=REMOVALS_SCHEMA,
        )

        report = pa.table(
            {
                "source": stats["key"],
                "docs": docs,
                "pathological": pathological,
                "share": share,
                "removed": stats["active_sum"],
                "example": stats["example_first"],
            },
            schema=REPORT_SCHEMA,
        ).filter(quarantined)
        return removals, report
