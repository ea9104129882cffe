"""Mixing for tokenized shards: weights by condition (source, language, a classifier's score) and a cap on
any one host's share, both as deterministic per-document draws so a re-run writes the same shards.

A weight ``w`` gives a document ``floor(w)`` copies plus one more with probability ``w - floor(w)`` (so
0.5 keeps half the matching documents, 2 doubles them); the draw is a hash of (seed, id), never a random
state. The host cap is water-filling on the weighted text bytes: the largest hosts are scaled down to the
same cap ``c`` with ``c = share × (the capped total)``, which only the ``1/share`` largest hosts can reach,
so each partition of the plan round hands back only its top ``ceil(1/share) + 1`` hosts.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel, ConfigDict, Field

_CONDITION = re.compile(r"""^\s*([A-Za-z_]\w*)\s*(>=|<=|==|!=|>|<)\s*(?:'([^']*)'|"([^"]*)"|(\S+))\s*$""")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_COMPARE = {">=": pc.greater_equal, "<=": pc.less_equal, ">": pc.greater, "<": pc.less, "==": pc.equal,
            "!=": pc.not_equal}


class Condition:
    """``<column> <op> <value>``: a number compares numerically (``quality_hq >= 0.8``), anything else
    (quoted or bare) as a string (``language == en``, ``source == 'reddit.com/r/science'``)."""

    def __init__(self, text: str) -> None:
        match = _CONDITION.match(text)
        if not match:
            raise ValueError(f"condition {text!r}: expected '<column> <op> <value>' with op one of "
                             f"{', '.join(_COMPARE)}, e.g. 'quality_hq >= 0.8' or \"language == 'en'\"")
        self.text = text.strip()
        self.column, self.op = match.group(1), match.group(2)
        quoted = match.group(3) if match.group(3) is not None else match.group(4)
        bare = match.group(5)
        self.value: float | str = float(bare) if quoted is None and _NUMBER.match(bare) else \
            (quoted if quoted is not None else bare)
        if isinstance(self.value, str) and self.op not in ("==", "!="):
            raise ValueError(f"condition {text!r}: {self.op} needs a number")

    def mask(self, table: pa.Table) -> np.ndarray:
        """Rows it holds for (a null never holds)."""
        column = table[self.column]
        if isinstance(self.value, float):
            column = pc.cast(column, pa.float64())
        else:
            column = pc.cast(column, pa.string())
        held = _COMPARE[self.op](column, pa.scalar(self.value))
        return pc.fill_null(held, False).to_numpy(zero_copy_only=False)


class MixRule(BaseModel):
    """Documents matching ``where`` get ``weight`` copies; the first matching rule wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    where: str = Field(description="condition, e.g. 'quality_hq >= 0.8', \"language == 'de'\"")
    weight: float = Field(ge=0, description="expected copies per document: 2 upsamples, 0.5 halves, 0 drops")
    name: str | None = Field(None, description="the bucket's name in the manifest (default: the condition)")

    def bucket(self) -> str:
        return self.name or Condition(self.where).text


#: The bucket of documents no rule matched (weight 1).
DEFAULT_BUCKET = "default"


def rule_columns(rules: list[MixRule]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(Condition(r.where).column for r in rules))


def weights(table: pa.Table, rules: list[MixRule]) -> tuple[np.ndarray, pa.Array]:
    """Each row's weight and bucket name (first matching rule; else 1 and ``default``)."""
    n = table.num_rows
    weight = np.ones(n)
    bucket = np.full(n, -1)
    for i, rule in enumerate(rules):
        hit = Condition(rule.where).mask(table) & (bucket < 0)
        weight[hit] = rule.weight
        bucket[hit] = i
    names = [r.bucket() for r in rules] + [DEFAULT_BUCKET]
    return weight, pc.take(pa.array(names, pa.string()), pa.array(np.where(bucket < 0, len(rules), bucket)))


def uniform(seed: int, ids: list[str], salt: str) -> np.ndarray:
    """A uniform [0, 1) draw per id, fixed by (seed, id, salt)."""
    prefix = f"{seed}\x00{salt}\x00"
    return np.fromiter((xxhash.xxh3_64_intdigest(prefix + i) for i in ids), np.uint64, len(ids)) \
        .astype(np.float64) / 2.0 ** 64


def copies(weight: np.ndarray, seed: int, ids: list[str]) -> np.ndarray:
    """``floor(w)`` copies plus one with probability ``w - floor(w)``."""
    whole = np.floor(weight)
    return (whole + (uniform(seed, ids, "mix") < weight - whole)).astype(np.int64)


def host_caps(hosts: list[tuple[str, float]], total: float, share: float) -> dict[str, float]:
    """Keep-probability per capped host so none exceeds ``share`` of the capped total (water-filling).

    ``hosts`` are the largest hosts (host, weighted bytes), ``total`` the bytes of all hosts. Capping the
    m largest at c leaves T' = total - (their bytes) + m·c, and c = share·T' gives
    c = share·(total - their bytes) / (1 - m·share); m grows while the next host still exceeds c. With
    fewer than ``1/share`` hosts the cap cannot hold; the largest are then levelled as far as it goes.
    """
    if share >= 1 or not hosts or total <= 0:
        return {}
    ordered = sorted(hosts, key=lambda h: (-h[1], h[0]))
    m, capped_bytes, cap = 0, 0.0, share * total
    # each host capped leaves a cap below its own size, so the loop only moves down the list
    while m < len(ordered) and ordered[m][1] > cap and (m + 1) * share < 1:
        capped_bytes += ordered[m][1]
        m += 1
        cap = share * (total - capped_bytes) / (1 - m * share)
    return {host: cap / size for host, size in ordered[:m]}


def realised(totals: pa.Table, rules: list[MixRule]) -> list[dict[str, Any]]:
    """Per bucket: its weight, documents in, copies written, tokens and share of all tokens."""
    weights_by = {r.bucket(): r.weight for r in rules}
    tokens_all = max(int(pc.sum(totals["tokens"]).as_py() or 0), 1)
    out = []
    grouped = totals.group_by("bucket").aggregate([("documents_in", "sum"), ("documents", "sum"), ("tokens", "sum")])
    for row in sorted(grouped.to_pylist(), key=lambda r: r["bucket"]):
        docs_in = row["documents_in_sum"]
        out.append({"bucket": row["bucket"], "weight": weights_by.get(row["bucket"], 1.0), "documents_in": docs_in,
                    "documents": row["documents_sum"], "realised_weight": row["documents_sum"] / max(docs_in, 1),
                    "tokens": row["tokens_sum"], "token_share": row["tokens_sum"] / tokens_all})
    return out
