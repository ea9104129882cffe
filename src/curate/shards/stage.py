"""``tokenize``: the kept corpus as token shards a trainer reads (Megatron ``.bin/.idx`` or headerless
``.npy``), shuffled and mixed deterministically, with a manifest that maps every token back to its document.

Shuffle rounds, a marker each:

1. ``plan`` (only with ``max_host_share``): weighted text bytes per host (mix weights applied), so the
   stage knows which hosts the cap scales down and the capped corpus's size;
2. ``tokens``, its shuffle sized so a partition holds ≈ ``shard_tokens`` tokens at ``bytes_per_token``:
   each unit's documents are tokenized (EOS appended), drawn into copies by their weight and the host cap,
   and keyed by a hash of (seed, id, copy), so a partition is a uniform random share of the corpus; each
   partition sorts by that key and is cut at document boundaries into shards of at most ``shard_tokens``
   (or, with ``split_documents``, into shards of exactly that many, a straddling document split in two),
   written with a ``.docs.parquet`` sidecar (id, url, source, language, bucket, tokens, offset) per shard;
3. ``manifest``: one reduce gathers the shards' figures into ``shards/manifest.json`` (tokenizer name +
   hash, dtype, EOS id, per shard documents/tokens/sha256, totals by source, language and mix bucket,
   the realised mix and host shares) and ``shards/totals.parquet`` (every source).

The order is the partitions in turn, each in key order: a uniform shuffle fixed by the seed and the number
of partitions (itself fixed by the input), so the same input and seed give byte-identical shards.
The stage removes nothing: the kept corpus passes through unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from functools import partial
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from curate.execute import ARTIFACTS, PARTITION_COLUMN
from curate.registry import register
from curate.shards.mix import MixRule, copies, host_caps, realised, rule_columns, uniform, weights
from curate.stage import GlobalStage, ShuffleRound, StageParams, UnitData

#: Sources listed by name in the manifest (all of them are in ``totals.parquet``).
MANIFEST_SOURCES = 100
#: Documents tokenized per call (bounds the memory of a unit's tokens in flight).
TOKENIZE_BATCH = 4096
MANIFEST_VERSION = 1


class TokenizeParams(StageParams):
    tokenizer: str = Field("cl100k_base", description="a built-in name (cl100k_base), a tokenizer.json path or a "
                           "local Hugging Face folder")
    eos: str | None = Field(None, description="the end-of-document token (default: the tokenizer's, e.g. "
                            "<|endoftext|>)")
    format: Literal["megatron", "npy"] = Field("megatron", description="megatron: .bin + .idx (MMIDIDX v1); npy: "
                                               "headerless token memmap + .offsets.npy")
    shard_tokens: int = Field(32 << 20, gt=0, description="at most this many tokens per shard (documents are not "
                              "split unless split_documents); a reduce holds ~2x a shard: the partition's rows "
                              "and one copy of its tokens")
    split_documents: bool = Field(False, description="cut each partition's token stream into shards of exactly "
                                  "shard_tokens (its last shard the remainder), splitting the documents that "
                                  "straddle a cut (the sidecar's offset column gives a part's first token within "
                                  "its document)")
    tokenizer_threads: int = Field(
        1, ge=1, description="tiktoken encode threads per task (built-in cl100k): the runner gives each task one "
        "CPU, so more only help a worker that owns more cores")
    bytes_per_token: float = Field(4.0, gt=0, description="text bytes per token assumed when sizing the shuffle "
                                   "(cl100k on English is ~4.2); only the shard sizes depend on it")
    seed: int = Field(0, description="fixes the shuffle and the mixing draws")
    mix: list[MixRule] = Field(default_factory=list, description="weights by condition, first match wins, e.g. "
                               "[{where: 'quality_hq >= 0.8', weight: 2}]; unmatched documents weigh 1")
    max_host_share: float | None = Field(None, gt=0, le=1, description="cap any one host at this share of the "
                                         "(weighted) text, by downsampling its documents")


@register
class Tokenize(GlobalStage):
    """Write the still-kept documents as shuffled, mixed token shards under ``shards/``."""

    name = "tokenize"
    Params = TokenizeParams
    params: TokenizeParams
    report_order = (("tokens", "descending"),)
    reads_removed = False  # the kept corpus only

    def __init__(self, params: TokenizeParams | None = None) -> None:
        super().__init__(params)
        self.reads = tuple(dict.fromkeys(("id", "url", "host", "source", "language", "text", "removed_by",
                                          *rule_columns(self.params.mix))))
        self._tokenizer = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokenizer": None}  # each worker loads its own

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from curate.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.params.tokenizer, eos=self.params.eos,
                                             num_threads=self.params.tokenizer_threads)
        return self._tokenizer

    def rounds(self):
        p = self.params
        caps: dict[str, float] = {}
        sizing: dict[str, int] = {"partition_bytes": max(1, int(p.shard_tokens * p.bytes_per_token))}
        if p.max_host_share:  # the caps need every host's (weighted) bytes first
            top = math.ceil(1 / p.max_host_share) + 1
            plan = yield ShuffleRound("plan", map=self.map_plan, reduce=partial(self.reduce_plan, top),
                                      collect=("hosts",))
            empty = pa.table({"host": pa.array([], pa.string()), "bytes": pa.array([], pa.float64())})
            hosts = plan.tables.get("hosts", empty)
            total = float(pc.sum(hosts.filter(pc.is_null(hosts["host"]))["bytes"]).as_py() or 0)
            named = hosts.filter(pc.is_valid(hosts["host"]))
            largest = list(zip(named["host"].to_pylist(), named["bytes"].to_pylist(), strict=True))
            caps = host_caps(largest, total, p.max_host_share)
            kept_bytes = total - sum(size * (1 - caps.get(host, 1.0)) for host, size in largest)
            sizing = {"partitions": max(1, math.ceil(kept_bytes / p.bytes_per_token / p.shard_tokens))}
        yield ShuffleRound("tokens", map=partial(self.map_tokens, caps), reduce=self.reduce_tokens,
                           artifacts="shards", progress="n_tokens", **sizing)
        yield ShuffleRound("manifest", source=("tokens/shards", "tokens/totals"), map=self.map_manifest,
                           reduce=partial(self.reduce_manifest, caps), partitions=1, artifacts="shards")

    # -- 1. plan

    def _active(self, unit: UnitData) -> pa.Table:
        rows = unit.read(list(self.reads))
        return rows.filter(pc.is_null(rows["removed_by"]))

    def map_plan(self, unit: UnitData) -> pa.Table:
        rows = self._active(unit)
        weight, _ = weights(rows, self.params.mix)
        size = pc.fill_null(pc.binary_length(rows["text"]), 0).to_numpy(zero_copy_only=False) * weight
        table = pa.table({"key": pc.fill_null(pc.cast(rows["host"], pa.string()), ""),
                          "bytes": pa.array(size, pa.float64())})
        return table.group_by("key", use_threads=False).aggregate([("bytes", "sum")]).rename_columns(["key", "bytes"])

    def reduce_plan(self, top: int, group: pa.Table) -> dict[str, pa.Table]:
        """The partition's total bytes (a row with a null host) and its ``top`` largest hosts, the only ones a
        cap can reach."""
        sums = group.group_by("key", use_threads=False).aggregate([("bytes", "sum")])
        total = pa.table({"host": pa.nulls(1, pa.string()), "bytes": [float(pc.sum(sums["bytes_sum"]).as_py() or 0)]})
        largest = sums.sort_by([("bytes_sum", "descending"), ("key", "ascending")]).slice(0, top)
        return {"hosts": pa.concat_tables([total, pa.table({"host": largest["key"], "bytes": largest["bytes_sum"]})])}

    # -- 2. tokens → shards

    def map_tokens(self, caps: dict[str, float], unit: UnitData) -> pa.Table:
        p = self.params
        rows = self._active(unit)
        weight, bucket = weights(rows, p.mix)
        ids = rows["id"].to_pylist()
        n_copies = copies(weight, p.seed, ids)
        if caps:
            hosts = pc.fill_null(pc.cast(rows["host"], pa.string()), "").to_pylist()
            keep = np.array([caps.get(h, 1.0) for h in hosts])
            # a capped host keeps each copy with its probability (one draw per copy: upsampled copies stay
            # independent)
            draws = [uniform(p.seed, [f"{i}\x00{c}" for i in ids], "cap") for c in range(int(n_copies.max(initial=0)))]
            n_copies = sum(((d < keep) & (c < n_copies)).astype(np.int64) for c, d in enumerate(draws)) \
                if draws else n_copies
        texts = pc.fill_null(pc.cast(rows["text"], pa.string()), "")
        empty = pc.equal(texts, "").to_numpy(zero_copy_only=False)
        n_copies = np.where(empty, 0, n_copies)
        tokenizer = self.tokenizer
        dtype = _dtype(tokenizer.vocab_size, p.format)
        counts = np.zeros(rows.num_rows, np.int64)
        pieces = []
        chosen = np.flatnonzero(n_copies > 0)
        for start in range(0, len(chosen), TOKENIZE_BATCH):
            batch = chosen[start:start + TOKENIZE_BATCH]
            flat, lengths = tokenizer.encode_batch(pc.take(texts, pa.array(batch)).to_pylist())
            pieces.append(np.insert(flat.astype(dtype), np.cumsum(lengths), tokenizer.eos_id))  # EOS after each
            counts[batch] = lengths + 1
        # every row's tokens as one binary value (unchosen rows: empty), straight from the flat buffer
        flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype)
        offsets = np.concatenate([[0], np.cumsum(counts)]) * dtype.itemsize
        blobs = pa.LargeBinaryArray.from_buffers(pa.large_binary(), rows.num_rows,
                                                 [None, pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(flat)])
        # one row per copy, plus one token-less row for a document drawn zero times (it is counted as in)
        reps = np.maximum(n_copies, 1)
        index = np.repeat(np.arange(rows.num_rows), reps)
        copy = np.arange(len(index)) - np.repeat(np.cumsum(reps) - reps, reps)
        copy = np.where(n_copies[index] == 0, -1, copy)
        out_ids = [ids[i] for i in index]
        keys = np.fromiter((_order_key(p.seed, i, c) for i, c in zip(out_ids, copy.tolist(), strict=True)),
                           np.uint64, len(out_ids)).view(np.int64)
        take = pa.array(index)
        return pa.table({
            "key": pa.array(keys), "id": pa.array(out_ids, pa.string()), "copy": pa.array(copy, pa.int64()),
            **{c: pc.cast(pc.take(rows[c], take), pa.string()) for c in ("url", "source", "language")},
            "bucket": pc.take(bucket, take), "n_tokens": pa.array(counts[index], pa.int64()),
            "tokens": pc.take(blobs, take),
        })

    def reduce_tokens(self, group: pa.Table) -> dict[str, pa.Table]:
        from curate.shards.formats import encode_shard

        p = self.params
        partition = int(group[PARTITION_COLUMN][0].as_py())
        totals = _totals(group)
        # Sorted by the small columns only; the token blobs are copied once, in that order, into the array
        # the shards are views of: the partition's tokens are held twice at most, not once per table step.
        drawn = np.flatnonzero(pc.greater_equal(group["copy"], 0).to_numpy(zero_copy_only=False))
        docs = group.select(["key", "id", "copy", "url", "source", "language", "bucket", "n_tokens"]).take(drawn)
        order = pc.sort_indices(docs, [("key", "ascending"), ("id", "ascending"), ("copy", "ascending")]).to_numpy()
        docs = docs.take(order)
        dtype = _dtype(self.tokenizer.vocab_size, p.format)
        lengths = docs["n_tokens"].to_numpy()
        flat = _gather_tokens(group["tokens"], drawn[order], int(lengths.sum()), dtype)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        artifacts, shards = [], []
        # a partition whose documents were all drawn zero times writes no shard (Megatron cannot map an empty one)
        pieces = [] if not docs.num_rows else _token_cuts(int(ends[-1]), p.shard_tokens) if p.split_documents \
            else [(int(starts[lo]), int(ends[hi - 1])) for lo, hi in _cuts(lengths, p.shard_tokens)]
        for k, (lo, hi) in enumerate(pieces):
            # the documents (or, split, the parts of documents) whose tokens lie in [lo, hi)
            first, last = int(np.searchsorted(ends, lo, side="right")), int(np.searchsorted(starts, hi, side="left"))
            begin, finish = np.maximum(starts[first:last], lo), np.minimum(ends[first:last], hi)
            name = f"shard-{partition:05d}-{k:03d}"
            files = {f"{name}{suffix}": data for suffix, data in
                     encode_shard(flat[lo:hi], finish - begin, p.format).items()}
            sidecar = docs.slice(first, last - first).select(["id", "url", "source", "language", "bucket"])
            sidecar = sidecar.append_column("n_tokens", pa.array(finish - begin, pa.int64())) \
                .append_column("offset", pa.array(begin - starts[first:last], pa.int64()))
            buffer = io.BytesIO()
            pq.write_table(sidecar, buffer, compression="zstd")
            files[f"{name}.docs.parquet"] = buffer.getvalue()
            artifacts += [_artifact(path, data) for path, data in files.items()]
            shards.append({"name": name, "documents": sidecar.num_rows, "tokens": hi - lo,
                           "sha256": json.dumps({path: hashlib.sha256(data).hexdigest()
                                                 for path, data in sorted(files.items())})})
        schema = pa.schema([("name", pa.string()), ("documents", pa.int64()), ("tokens", pa.int64()),
                            ("sha256", pa.string())])
        return {ARTIFACTS: pa.Table.from_batches(artifacts, _ARTIFACT),
                "shards": pa.Table.from_pylist(shards, schema), "totals": totals}

    # -- 3. manifest

    def map_manifest(self, unit: UnitData) -> pa.Table:
        if unit.source.endswith("/shards"):
            rows = unit.read(["name", "documents", "tokens", "sha256"])
        else:
            rows = unit.read(["bucket", "language", "source", "documents_in", "documents", "tokens"])
        return rows.append_column("key", pa.array(["manifest"] * rows.num_rows, pa.string()))

    def reduce_manifest(self, caps: dict[str, float], group: pa.Table) -> dict[str, pa.Table]:
        p = self.params
        shards = group.filter(pc.is_valid(group["name"])).sort_by("name") if "name" in group.column_names else \
            pa.table({"name": pa.array([], pa.string())})
        totals = group.filter(pc.is_valid(group["bucket"])).select(_TOTALS.names) if "bucket" in group.column_names \
            else _totals(None)
        tokenizer = self.tokenizer
        tokens_all = int(pc.sum(totals["tokens"]).as_py() or 0)
        by_source = _sums(totals, "source")
        manifest = {
            "curate_shards": MANIFEST_VERSION, "format": p.format,
            "dtype": np.dtype(_dtype(tokenizer.vocab_size, p.format)).name, "seed": p.seed,
            "tokenizer": {"name": tokenizer.name, "spec": p.tokenizer, "sha256": tokenizer.sha256,
                          "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
                          "eos_token": tokenizer.eos_token},
            "shard_tokens": p.shard_tokens,
            "shards": [{"name": r["name"], "documents": r["documents"], "tokens": r["tokens"],
                        "sha256": json.loads(r["sha256"])} for r in shards.to_pylist()],
            "totals": {"documents": int(pc.sum(totals["documents"]).as_py() or 0), "tokens": tokens_all,
                       "documents_in": int(pc.sum(totals["documents_in"]).as_py() or 0),
                       "by_language": _sums(totals, "language"), "by_bucket": _sums(totals, "bucket"),
                       "sources": len(by_source),
                       "by_source": dict(list(by_source.items())[:MANIFEST_SOURCES])},
            "mix": {"rules": [r.model_dump() for r in p.mix], "max_host_share": p.max_host_share,
                    "realised": realised(totals, p.mix), "capped_hosts": caps},
            "order": "shards in name order; within a shard, documents in the order of the .docs.parquet sidecar",
        }
        totals_file = io.BytesIO()
        pq.write_table(totals.sort_by([("tokens", "descending"), ("source", "ascending")]), totals_file)
        artifacts = pa.table({"path": ["manifest.json", "totals.parquet"],
                              "data": pa.array([json.dumps(manifest, indent=1).encode(), totals_file.getvalue()],
                                               pa.large_binary())})
        report = pa.Table.from_pylist(manifest["mix"]["realised"]) if manifest["mix"]["realised"] else \
            pa.table({"bucket": pa.array([], pa.string()), "tokens": pa.array([], pa.int64())})
        return {ARTIFACTS: artifacts, "report": report}


def _dtype(vocab_size: int, fmt: str) -> np.dtype:
    from curate.shards.formats import token_dtype

    return np.dtype(token_dtype(vocab_size, fmt))


def _order_key(seed: int, id_: str, copy: int) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(f"{seed}\x00order\x00{id_}\x00{copy}")


def _cuts(lengths: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Row ranges of near-equal token counts, each at most ``limit`` tokens unless one document is longer;
    the fewest shards that fit."""
    total = int(lengths.sum())
    pieces = max(1, math.ceil(total / limit))
    if pieces == 1:
        return [(0, len(lengths))]
    ends = np.cumsum(lengths)
    bounds = [0]
    for k in range(1, pieces):
        cut = int(np.searchsorted(ends, k * total / pieces, side="right"))
        bounds.append(max(cut, bounds[-1]))
    bounds.append(len(lengths))
    out = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if hi > lo:
            # near-equal targets can still leave a piece over the limit: split it further
            if ends[hi - 1] - (ends[lo - 1] if lo else 0) > limit and hi - lo > 1:
                start = lo
                while start < hi:
                    base = ends[start - 1] if start else 0
                    stop = max(start + 1, int(np.searchsorted(ends, base + limit, side="right")))
                    out.append((start, min(stop, hi)))
                    start = min(stop, hi)
            else:
                out.append((lo, hi))
    return out


def _token_cuts(total: int, limit: int) -> list[tuple[int, int]]:
    """Token ranges of exactly ``limit`` tokens (the last one shorter), documents split where they fall."""
    return [(lo, min(lo + limit, total)) for lo in range(0, total, limit)]


def _gather_tokens(column: pa.ChunkedArray, rows: np.ndarray, count: int, dtype: np.dtype) -> np.ndarray:
    """The token blobs of ``rows``, in that order, back to back in one new array of ``count`` tokens."""
    out = np.empty(count, dtype)
    target = out.view(np.uint8)
    starts = np.cumsum([0, *(len(chunk) for chunk in column.chunks)])
    chunk_of = np.searchsorted(starts, rows, side="right") - 1
    blobs = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        blobs.append((np.frombuffer(offsets, np.int64, count=len(chunk) + 1, offset=chunk.offset * 8),
                      np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)))
    at = 0
    for c, i in zip(chunk_of.tolist(), (rows - starts[chunk_of]).tolist(), strict=True):
        offsets, data = blobs[c]
        begin, end = int(offsets[i]), int(offsets[i + 1])
        target[at:at + end - begin] = data[begin:end]
        at += end - begin
    if at != target.size:
        raise ValueError(f"token blobs hold {at} bytes, their n_tokens say {target.size}")
    return out


_ARTIFACT = pa.schema([("path", pa.string()), ("data", pa.large_binary())])


def _artifact(path: str, data: bytes | memoryview) -> pa.RecordBatch:
    """One artifact row whose data is ``data`` itself (a shard's tokens are not copied into Arrow)."""
    value = pa.py_buffer(data)
    offsets = pa.py_buffer(np.array([0, value.size], np.int64))
    return pa.record_batch([pa.array([path], pa.string()),
                            pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, value])],
                           schema=_ARTIFACT)


_TOTALS = pa.schema([("bucket", pa.string()), ("language", pa.string()), ("source", pa.string()),
                     ("documents_in", pa.int64()), ("documents", pa.int64()), ("tokens", pa.int64())])


def _totals(group: pa.Table | None) -> pa.Table:
    """Documents in, copies written and tokens per (bucket, language, source)."""
    if group is None or group.num_rows == 0:
        return _TOTALS.empty_table()
    copy = group["copy"]
    table = pa.table({"bucket": group["bucket"], "language": pc.fill_null(group["language"], ""),
                      "source": pc.fill_null(group["source"], ""),
                      "documents_in": pc.cast(pc.less_equal(copy, 0), pa.int64()),
                      "documents": pc.cast(pc.greater_equal(copy, 0), pa.int64()), "tokens": group["n_tokens"]})
    sums = table.group_by(["bucket", "language", "source"], use_threads=False).aggregate(
        [("documents_in", "sum"), ("documents", "sum"), ("tokens", "sum")])
    return pa.table({f.name: sums[f.name if f.name in ("bucket", "language", "source") else f"{f.name}_sum"]
                     for f in _TOTALS}, schema=_TOTALS)


def _sums(totals: pa.Table, column: str) -> dict[str, dict[str, int]]:
    """Documents and tokens per value of ``column``, largest first."""
    grouped = totals.group_by(column, use_threads=False).aggregate([("documents", "sum"), ("tokens", "sum")])
    rows = sorted(grouped.to_pylist(), key=lambda r: (-r["tokens_sum"], r[column]))
    return {r[column]: {"documents": r["documents_sum"], "tokens": r["tokens_sum"]} for r in rows}
