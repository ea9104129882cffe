"""``keep_top``: keep the best-scoring share of the whole corpus (DCLM kept its fastText top 10 %).

A share of the corpus needs the corpus-wide quantile of the score, which no unit knows. Exact, with bounded
memory: each round counts the still-kept documents in 4,096 equal bins of the part of the score's range that
holds the cut (scores as order-preserving 64-bit keys), hands the small histogram back to the stage, which
narrows the range to the bin the cut falls in; after at most six rounds the cut is one value. A last round
removes every document below it (ties at the cut are all kept, so the share may be exceeded by the ties).
A document without the score (an earlier stage gave it none, or NaN) counts as the lowest.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.execute import PARTITION_COLUMN
from curate.registry import register
from curate.stage import GlobalStage, ShuffleRound, StageParams, UnitData

BIN_BITS = 12
_SIGN = np.uint64(1 << 63)
NULL_BIN = -1


class KeepTopParams(StageParams):
    column: str = Field(description="the score to rank by, e.g. quality_hq from a classify stage")
    share: float = Field(gt=0, le=1, description="the share of the still-kept corpus to keep, e.g. 0.1")


def order_keys(values: np.ndarray) -> np.ndarray:
    """float64 → uint64 keys that sort as the floats do (negative floats flipped whole, positive sign-set)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def key_value(key: int) -> float:
    """The float an order key stands for."""
    bits = np.uint64(key)
    bits = bits & ~_SIGN if bits & _SIGN else ~bits
    return float(np.array([bits], np.uint64).view(np.float64)[0])


@register
class KeepTop(GlobalStage):
    """Remove every document below the corpus-wide cut that keeps ``share`` of it, by ``column``."""

    name = "keep_top"
    reads_removed = False  # the kept corpus only
    Params = KeepTopParams
    params: KeepTopParams

    def __init__(self, params: KeepTopParams | None = None) -> None:
        super().__init__(params)
        self.reads = ("id", "removed_by", self.params.column)

    def rounds(self):
        lo, width, kept_above, total, nulls = 0, 1 << 64, 0, None, 0
        for i in range(math.ceil(64 / BIN_BITS) + 1):
            shift = max(width.bit_length() - 1 - BIN_BITS, 0)
            result = yield ShuffleRound(f"histogram_{i:02d}", map=partial(self.map_histogram, lo, width, shift),
                                        reduce=self.reduce_histogram, collect=("bins",))
            table = result.tables.get("bins", pa.table({"bin": pa.array([], pa.int64()), "count": pa.array([], pa.int64())}))
            counts = dict(zip(table["bin"].to_pylist(), table["count"].to_pylist(), strict=True))
            if total is None:  # the first round sees every document
                nulls = counts.pop(NULL_BIN, 0)
                total = sum(counts.values()) + nulls
                want = round(self.params.share * total)
            counts.pop(NULL_BIN, None)
            need = want - kept_above
            if need <= 0:  # what lies above this range is already the share
                threshold = lo + ((max(counts) + 1) << shift if counts else 0)
                break
            cut = self._cut(counts, need)
            if cut is None:  # fewer scored documents than the share: keep them all
                threshold = 0
                break
            b, above_in_range, exact = cut
            kept_above += above_in_range
            lo += b << shift
            width = 1 << shift
            if exact or shift == 0:
                threshold = lo
                break
        yield ShuffleRound("select", map=partial(self.map_select, threshold), reduce=self.reduce_select)

    @staticmethod
    def _cut(counts: dict[int, int], need: int) -> tuple[int, int, bool] | None:
        """The bin the cut falls in (walking from the top), the documents kept above it, and whether the
        bin's lower edge is the cut exactly (keeping the whole bin gives exactly ``need``)."""
        seen = 0
        for b in sorted(counts, reverse=True):
            if seen + counts[b] >= need:
                return b, seen, seen + counts[b] == need
            seen += counts[b]
        return None

    def _keys(self, unit: UnitData) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        rows = unit.read(list(self.reads))
        rows = rows.filter(pc.is_null(rows["removed_by"]))
        scores = pc.cast(rows[self.params.column], pa.float64()).to_numpy(zero_copy_only=False)
        valid = ~np.isnan(scores)  # null → NaN here
        return rows, order_keys(np.where(valid, scores, 0.0)), valid

    def map_histogram(self, lo: int, width: int, shift: int, unit: UnitData) -> pa.Table:
        _, keys, valid = self._keys(unit)
        keys = keys[valid]
        inside = (keys >= np.uint64(lo)) & (keys - np.uint64(lo) < np.uint64(width)) if width < (1 << 64) \
            else np.ones(len(keys), bool)
        bins = ((keys[inside] - np.uint64(lo)) >> np.uint64(shift)).astype(np.int64)
        values, counts = np.unique(bins, return_counts=True)
        nulls = int((~valid).sum())
        values = np.append(values, NULL_BIN) if nulls else values
        counts = np.append(counts, nulls) if nulls else counts
        return pa.table({"key": pa.array(values, pa.int64()), "count": pa.array(counts, pa.int64())})

    def reduce_histogram(self, group: pa.Table) -> dict[str, pa.Table]:
        sums = group.group_by("key", use_threads=False).aggregate([("count", "sum")])
        return {"bins": pa.table({"bin": sums["key"], "count": sums["count_sum"]})}

    def map_select(self, threshold: int, unit: UnitData) -> pa.Table:
        rows, keys, valid = self._keys(unit)
        below = ~valid | (keys < np.uint64(threshold))
        gone = rows.filter(pa.array(below))
        scores = pc.cast(gone[self.params.column], pa.float64())
        reasons = pc.if_else(pc.is_null(scores), "unscored", f"below_top_{self.params.share:g}")
        cut = key_value(threshold) if threshold else None
        return pa.table({"key": gone["id"], "id": gone["id"], "reason": reasons, "score": scores,
                         "threshold": pa.array([cut] * gone.num_rows, pa.float64())})

    def reduce_select(self, group: pa.Table) -> dict[str, pa.Table]:
        removals = group.drop_columns(["key", PARTITION_COLUMN])
        report = pa.table({"removed": [removals.num_rows],
                           "threshold": [removals["threshold"][0].as_py() if removals.num_rows else None]})
        return {"removals": removals, "report": report}
