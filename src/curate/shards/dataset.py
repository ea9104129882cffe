"""A torch Dataset of fixed-length training windows over a shard manifest, memory-mapped.

All shards of the manifest, in manifest order, are one token stream: documents back to back, each ending with
EOS. Window ``k`` is stream positions ``[k·seq_len, k·seq_len + seq_len + 1)``: ``seq_len`` inputs plus the
next token as the last target, the GPT-2/nanoGPT convention, so consecutive windows share one token and every
token is predicted exactly once. Windows cross document and shard boundaries (as Megatron's GPTDataset and
OLMo's packing do; the model sees EOS where a document ends); the last, incomplete window is dropped.

With ``shuffle`` the order of windows is ``numpy.random.Generator(PCG64(seed)).permutation(n)``: a pure
function of the seed and the window count for a given NumPy (PCG64 is one bit stream on every platform), so
every rank and every restart of a run sees the same order without exchanging it.

Shards are opened lazily, on the first window that touches them, and never pickled: a DataLoader worker gets
the manifest (a few numbers per shard) and maps the files itself.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from curate.shards.formats import DOCS_SUFFIX, ShardFormatError, ShardReader, open_shard, read_manifest, shard_prefix

#: docs.parquet tables kept in memory for :meth:`TokenDataset.documents_at` (loss spikes touch few shards).
_DOCS_CACHE_SHARDS = 4


class TokenDataset(Dataset):
    """Item ``i``: a ``torch.int64`` tensor of ``seq_len + 1`` tokens, window ``order[i]`` of the token stream.

    ``directory`` is a shards folder or a run folder holding ``shards/`` (see ``read_manifest``).
    """

    def __init__(self, directory: str | os.PathLike, seq_len: int, seed: int = 0, shuffle: bool = True) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        self.manifest = read_manifest(directory)
        self.directory = self.manifest["_dir"]
        self.format = self.manifest["format"]
        self.dtype = np.dtype(self.manifest["dtype"])
        self.seq_len = seq_len
        self.seed = seed
        self.shuffle = shuffle
        self.shard_names = [s["name"] for s in self.manifest["shards"]]
        self._shard_documents = [int(s["documents"]) for s in self.manifest["shards"]]
        #: Stream position where each shard starts; the last entry is the stream's length.
        self.shard_starts = np.zeros(len(self.shard_names) + 1, dtype=np.int64)
        np.cumsum([int(s["tokens"]) for s in self.manifest["shards"]], out=self.shard_starts[1:])
        n = max(0, (self.num_tokens - 1) // seq_len)
        self.order = (np.random.Generator(np.random.PCG64(seed)).permutation(n) if shuffle
                      else np.arange(n, dtype=np.int64))
        self._readers: dict[int, ShardReader] = {}
        self._docs: dict[int, dict[str, list]] = {}

    @property
    def num_tokens(self) -> int:
        """Tokens in the whole stream, as the manifest counts them (checked against each shard when opened)."""
        return int(self.shard_starts[-1])

    def __len__(self) -> int:
        return len(self.order)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_readers"], state["_docs"] = {}, {}  # memory maps and tables stay with the process that made them
        return state

    def reader(self, shard: int) -> ShardReader:
        """Shard ``shard`` (manifest order), opened on first use and checked against the manifest."""
        reader = self._readers.get(shard)
        if reader is None:
            prefix = shard_prefix(self.manifest, self.shard_names[shard])
            reader = open_shard(prefix, self.format, self.dtype)
            expected = int(self.shard_starts[shard + 1] - self.shard_starts[shard])
            if reader.num_tokens != expected or reader.num_documents != self._shard_documents[shard]:
                raise ShardFormatError(
                    f"{prefix}: {reader.num_documents} documents and {reader.num_tokens} tokens on disk, but the "
                    f"manifest says {self._shard_documents[shard]} and {expected}")
            self._readers[shard] = reader
        return reader

    def window(self, i: int) -> tuple[int, int]:
        """The stream positions ``[start, end)`` of item ``i``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range: the dataset has {len(self)}")
        start = int(self.order[i]) * self.seq_len
        return start, start + self.seq_len + 1

    def _pieces(self, start: int, end: int):
        """(shard, first, last) local token ranges that make up stream positions [start, end)."""
        shard = int(np.searchsorted(self.shard_starts, start, side="right")) - 1
        while start < end:
            shard_end = int(self.shard_starts[shard + 1])
            if shard_end > start:  # empty shards hold no positions
                stop = min(end, shard_end)
                base = int(self.shard_starts[shard])
                yield shard, start - base, stop - base
                start = stop
            shard += 1

    def __getitem__(self, i: int) -> torch.Tensor:
        start, end = self.window(i)
        out = np.empty(end - start, dtype=np.int64)
        at = 0
        for shard, lo, hi in self._pieces(start, end):
            out[at:at + hi - lo] = self.reader(shard).tokens[lo:hi]
            at += hi - lo
        return torch.from_numpy(out)

    def _documents_table(self, shard: int) -> dict[str, list]:
        table = self._docs.get(shard)
        if table is None:
            import pyarrow.parquet as pq

            path = shard_prefix(self.manifest, self.shard_names[shard]) + DOCS_SUFFIX
            columns = [c for c in ("id", "url", "source") if c in pq.read_schema(path).names]
            table = pq.read_table(path, columns=columns).to_pydict()
            rows = len(next(iter(table.values()), []))
            if rows != self._shard_documents[shard]:
                raise ShardFormatError(f"{path}: {rows} rows, but the manifest says {self._shard_documents[shard]} "
                                       "documents")
            if len(self._docs) >= _DOCS_CACHE_SHARDS:
                self._docs.pop(next(iter(self._docs)))
            self._docs[shard] = table
        return table

    def documents_at(self, i: int) -> list[dict]:
        """The documents whose tokens item ``i`` covers, in stream order.

        Each is ``{"shard", "index" (in its shard), "id", "url", "source", "tokens_in_window"}``, read from the
        shard's docs.parquet: what names the documents behind a loss spike.
        """
        start, end = self.window(i)
        found = []
        for shard, lo, hi in self._pieces(start, end):
            offsets = self.reader(shard).offsets
            first = int(np.searchsorted(offsets, lo, side="right")) - 1
            last = int(np.searchsorted(offsets, hi - 1, side="right")) - 1
            table = self._documents_table(shard)
            for doc in range(first, last + 1):
                covered = min(hi, int(offsets[doc + 1])) - max(lo, int(offsets[doc]))
                if covered <= 0:  # an empty document at a boundary
                    continue
                found.append({"shard": self.shard_names[shard], "index": doc,
                              **{column: values[doc] for column, values in table.items()},
                              "tokens_in_window": covered})
        return found
