r"""Shard file formats: Megatron-LM's indexed dataset, and headerless token arrays with an offsets file.

Both hold one flat array of token ids, every document's tokens back to back (the caller appends EOS to each
document), so a trainer can memory-map a shard and cut windows anywhere without parsing anything.

``megatron``: ``<name>.bin`` is the raw tokens and ``<name>.idx`` the index that megatron.core's
``IndexedDataset`` reads (``megatron/core/datasets/indexed_dataset.py``, ``_IndexWriter`` and ``_IndexReader``),
all little-endian:

==========  ===================  ===========================================================================
bytes       field                value
==========  ===================  ===========================================================================
9           magic                ``b"MMIDIDX\x00\x00"``
8           version ``<Q``       1
1           dtype code ``<B``    Megatron's ``DType`` enum (:data:`MEGATRON_DTYPE_CODES`)
8           sequence count       ``n``: one sequence per document here
8           document count       ``n + 1``: the length of the document-index array below, which starts at 0
4·n         sequence lengths     int32 tokens per sequence
8·n         sequence pointers    int64 byte offset of each sequence in ``.bin``
8·(n + 1)   document indices     int64 ``[0, 1, …, n]``: document ``i`` is sequences ``[d[i], d[i + 1])``
==========  ===================  ===========================================================================

The header's "document count" is the length of that array, one more than the number of documents: Megatron's
builder starts the list at ``[0]`` and appends an entry per ``end_document()``, and its reader reports
``document_indices.shape[0] - 1`` documents and asserts ``document_indices[-1] == sequence count``.

``npy``: ``<name>.npy`` is the raw tokens with **no** NumPy header, the memmap layout OLMo and nanoGPT train
from (``np.memmap(path, dtype)``; ``np.load`` cannot read it), so its dtype comes from the manifest;
``<name>.offsets.npy`` is an ordinary ``np.save`` file of ``n + 1`` int64 document offsets from 0 to the token
count.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path

import numpy as np

FORMATS = ("megatron", "npy")

#: The files of one shard, by format: ``prefix + suffix``. Both formats also have ``prefix + DOCS_SUFFIX``.
SUFFIXES = {"megatron": (".bin", ".idx"), "npy": (".npy", ".offsets.npy")}
DOCS_SUFFIX = ".docs.parquet"
#: docs.parquet: one row per document in shard order; ``n_tokens`` counts the appended EOS.
DOCS_COLUMNS = ("id", "url", "source", "language", "n_tokens")

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
#: megatron.core.datasets.indexed_dataset.DType: the code the .idx stores for the token dtype.
MEGATRON_DTYPE_CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7,
                        "uint16": 8}
_MEGATRON_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count

#: Largest vocabulary whose ids all fit in uint16 (ids 0 … 65535).
_UINT16_VOCAB = 1 << 16


class ShardFormatError(ValueError):
    """A shard file or manifest is not what its format says; the message names the file and what is wrong."""


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown shard format {fmt!r}; choose one of {', '.join(FORMATS)}")


def token_dtype(vocab_size: int, fmt: str) -> np.dtype:
    """The narrowest dtype that holds every id of a vocabulary of ``vocab_size`` ids, in format ``fmt``.

    uint16 when all ids fit (``vocab_size <= 65536``), else int32 for megatron (Megatron's ``DType`` has no
    uint32; int32 is what its ``DType.optimal_dtype`` picks for large vocabularies) and uint32 for npy (OLMo's
    choice for vocabularies past 65536). Megatron's own builder switches to int32 a little earlier, below 65,500
    rather than 65,536, with no reason given; its reader takes the dtype from the .idx, so a uint16 shard of a
    65,500–65,536 vocabulary reads the same.
    """
    _check_format(fmt)
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= _UINT16_VOCAB:
        return np.dtype(np.uint16)
    if fmt == "megatron":
        if vocab_size > 1 << 31:
            raise ValueError(f"a vocabulary of {vocab_size} ids does not fit Megatron's int32 tokens")
        return np.dtype(np.int32)
    if vocab_size > 1 << 32:
        raise ValueError(f"a vocabulary of {vocab_size} ids does not fit uint32 tokens")
    return np.dtype(np.uint32)


def encode_shard(tokens: np.ndarray, lengths: np.ndarray, fmt: str) -> dict[str, bytes | memoryview]:
    """The files of one shard as ``{suffix: bytes}``: ``.bin``/``.idx`` (megatron) or ``.npy``/``.offsets.npy``;
    the token file (``.bin``/``.npy``) is a ``memoryview`` of ``tokens`` itself, so do not change them after.

    ``tokens`` is the flat array of the shard's documents already in the shard dtype (EOS appended by the
    caller); ``lengths`` the token count of each document, summing to ``len(tokens)``. Zero documents give a
    valid empty shard. Everything is written little-endian, as both readers expect on the machines they run on.
    """
    _check_format(fmt)
    tokens = np.asarray(tokens)
    lengths = np.asarray(lengths)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer array, got {tokens.ndim}-D {tokens.dtype}")
    if lengths.ndim != 1 or not (np.issubdtype(lengths.dtype, np.integer) or lengths.size == 0):
        raise ValueError(f"lengths must be a 1-D integer array, got {lengths.ndim}-D {lengths.dtype}")
    lengths = lengths.astype(np.int64)
    if lengths.size and lengths.min() < 0:
        raise ValueError("document lengths must not be negative")
    if int(lengths.sum()) != tokens.size:
        raise ValueError(f"document lengths sum to {int(lengths.sum())} but there are {tokens.size} tokens")
    # the token file is a byte view of ``tokens`` (no copy of what may be a whole shard)
    data = memoryview(np.ascontiguousarray(tokens, dtype=tokens.dtype.newbyteorder("<")).view(np.uint8))
    n = lengths.size
    if fmt == "npy":
        offsets = np.zeros(n + 1, dtype="<i8")
        np.cumsum(lengths, out=offsets[1:])
        buffer = io.BytesIO()
        np.save(buffer, offsets, allow_pickle=False)
        return {".npy": data, ".offsets.npy": buffer.getvalue()}

    code = MEGATRON_DTYPE_CODES.get(tokens.dtype.name)
    if code is None:
        raise ValueError(f"Megatron's index has no code for {tokens.dtype}; use one of "
                         f"{', '.join(MEGATRON_DTYPE_CODES)}")
    if n and lengths.max() > np.iinfo(np.int32).max:
        raise ValueError("a Megatron sequence length is int32: a document has more than 2**31 - 1 tokens")
    pointers = np.zeros(n, dtype="<i8")
    if n > 1:
        np.cumsum(lengths[:-1] * tokens.dtype.itemsize, out=pointers[1:])
    index = b"".join([
        _MEGATRON_HEADER.pack(MEGATRON_MAGIC, MEGATRON_VERSION, code, n, n + 1),
        lengths.astype("<i4").tobytes(),
        pointers.tobytes(),
        np.arange(n + 1, dtype="<i8").tobytes(),
    ])
    return {".bin": data, ".idx": index}


def write_shard(prefix: str | os.PathLike, tokens: np.ndarray, lengths: np.ndarray, fmt: str) -> dict[str, str]:
    """Write :func:`encode_shard`'s files to ``prefix + suffix``; returns ``{file name: sha256 hex}``.

    Each file is written under a temporary name and renamed into place, so a reader never sees half a file.
    """
    prefix = os.fspath(prefix)
    digests = {}
    for suffix, data in encode_shard(tokens, lengths, fmt).items():
        path = prefix + suffix
        partial = f"{path}.partial"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
        digests[os.path.basename(path)] = hashlib.sha256(data).hexdigest()
    return digests


class ShardReader:
    """One shard, memory-mapped: ``tokens`` is the flat token array, ``offsets`` the n + 1 document offsets.

    Only the index (n + 1 offsets) is read into memory; token pages are read by the OS when touched.
    """

    def __init__(self, prefix: str, fmt: str, tokens: np.ndarray, offsets: np.ndarray) -> None:
        self.prefix = prefix
        self.format = fmt
        self.tokens = tokens
        self.offsets = offsets

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> np.dtype:
        return self.tokens.dtype

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document (int64)."""
        return np.diff(self.offsets)

    def document(self, i: int) -> np.ndarray:
        """The tokens of document ``i`` (a view into the memory map; EOS included)."""
        if not -self.num_documents <= i < self.num_documents:
            raise IndexError(f"document {i} out of range: {self.prefix} has {self.num_documents}")
        i %= self.num_documents
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def __repr__(self) -> str:
        return (f"ShardReader({self.prefix!r}, {self.format!r}, {self.num_documents} documents, "
                f"{self.num_tokens} {self.dtype} tokens)")


def _map_tokens(path: str, dtype: np.dtype) -> np.ndarray:
    size = os.path.getsize(path)
    if size % dtype.itemsize:
        raise ShardFormatError(f"{path}: {size} bytes is not a whole number of {dtype} tokens")
    if size == 0:  # mmap cannot map an empty file
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r")


def _read_megatron_index(path: str) -> tuple[np.dtype, np.ndarray]:
    """The token dtype and the n + 1 document offsets (in tokens) of a Megatron .idx file."""
    with open(path, "rb") as f:
        head = f.read(_MEGATRON_HEADER.size)
    if len(head) < _MEGATRON_HEADER.size:
        raise ShardFormatError(f"{path}: {len(head)} bytes is shorter than a Megatron index header")
    magic, version, code, n_seq, n_doc_index = _MEGATRON_HEADER.unpack(head)
    if magic != MEGATRON_MAGIC:
        raise ShardFormatError(f"{path}: not a Megatron index (magic {magic!r}, expected {MEGATRON_MAGIC!r})")
    if version != MEGATRON_VERSION:
        raise ShardFormatError(f"{path}: Megatron index version {version}; only version {MEGATRON_VERSION} is known")
    names = {c: name for name, c in MEGATRON_DTYPE_CODES.items()}
    if code not in names:
        raise ShardFormatError(f"{path}: unknown Megatron dtype code {code}")
    dtype = np.dtype(names[code])
    expected = _MEGATRON_HEADER.size + 12 * n_seq + 8 * n_doc_index
    size = os.path.getsize(path)
    if size not in (expected, expected + n_seq):  # + n_seq: a multimodal index's int8 modes, not needed here
        raise ShardFormatError(f"{path}: {size} bytes, but its header ({n_seq} sequences, {n_doc_index} document "
                               f"indices) needs {expected}")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    start = _MEGATRON_HEADER.size
    lengths = raw[start:start + 4 * n_seq].view("<i4").astype(np.int64)
    pointers = raw[start + 4 * n_seq:start + 12 * n_seq].view("<i8")
    doc_index = raw[start + 12 * n_seq:expected].view("<i8")
    if n_doc_index < 1 or doc_index[0] != 0 or doc_index[-1] != n_seq or np.any(np.diff(doc_index) < 0):
        raise ShardFormatError(f"{path}: document indices must rise from 0 to the sequence count {n_seq}")
    if n_seq and lengths.min() < 0:
        raise ShardFormatError(f"{path}: negative sequence length")
    starts = np.zeros(n_seq + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    if not np.array_equal(pointers, starts[:-1] * dtype.itemsize):
        raise ShardFormatError(f"{path}: sequences are not stored back to back in the .bin, so the shard is not "
                               "one flat token stream")
    return dtype, starts[doc_index]


def _read_offsets(path: str) -> np.ndarray:
    try:
        offsets = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ShardFormatError(f"{path}: not a NumPy offsets file ({exc})") from exc
    if offsets.ndim != 1 or offsets.size < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ShardFormatError(f"{path}: offsets must be a non-empty 1-D integer array, got {offsets.ndim}-D "
                               f"{offsets.dtype} of {offsets.size}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ShardFormatError(f"{path}: document offsets must start at 0 and never decrease")
    return offsets


def open_shard(prefix: str | os.PathLike, fmt: str, dtype: np.dtype | str | None = None) -> ShardReader:
    """Memory-map the local shard ``prefix + suffix`` (see :data:`SUFFIXES`); nothing but the index is read.

    A megatron shard's dtype comes from its .idx (``dtype``, when given, must agree). The npy format stores none,
    so ``dtype`` is required: the manifest's ``dtype``.
    """
    _check_format(fmt)
    prefix = os.fspath(prefix)
    if fmt == "megatron":
        stored, offsets = _read_megatron_index(prefix + ".idx")
        if dtype is not None and np.dtype(dtype) != stored:
            raise ShardFormatError(f"{prefix}.idx stores {stored} tokens, not the {np.dtype(dtype)} asked for")
        tokens_path, dtype = prefix + ".bin", stored
    else:
        if dtype is None:
            raise ValueError("an npy shard stores no dtype: pass the manifest's dtype")
        dtype = np.dtype(dtype)
        offsets = _read_offsets(prefix + ".offsets.npy")
        tokens_path = prefix + ".npy"
    tokens = _map_tokens(tokens_path, dtype)
    if len(tokens) != offsets[-1]:
        raise ShardFormatError(f"{tokens_path}: {len(tokens)} tokens, but the index ends at offset {offsets[-1]}")
    return ShardReader(prefix, fmt, tokens, offsets)


def read_manifest(directory: str | os.PathLike) -> dict:
    """The shard manifest of ``directory``: the shards folder itself or a run folder holding ``shards/``.

    Returns the parsed ``manifest.json`` plus ``"_dir"``: the absolute path of the folder that holds it and the
    shard files (a key added here, not part of the file: drop it before writing the dict back).
    """
    base = Path(directory)
    for folder in (base, base / "shards"):
        if (folder / MANIFEST_NAME).is_file():
            break
    else:
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {base} or {base / 'shards'}")
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ShardFormatError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("curate_shards") != MANIFEST_VERSION:
        found = manifest.get("curate_shards") if isinstance(manifest, dict) else None
        raise ShardFormatError(f"{path}: not a curate shard manifest version {MANIFEST_VERSION} "
                               f"(curate_shards = {found!r})")
    if manifest.get("format") not in FORMATS:
        raise ShardFormatError(f"{path}: format {manifest.get('format')!r} is not one of {', '.join(FORMATS)}")
    try:
        if not isinstance(manifest.get("dtype"), str):
            raise TypeError("not a string")
        np.dtype(manifest["dtype"])
    except TypeError as exc:
        raise ShardFormatError(f"{path}: dtype {manifest.get('dtype')!r} is not a NumPy dtype name") from exc
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and {"name", "documents", "tokens"} <= s.keys()
                                               for s in shards):
        raise ShardFormatError(f"{path}: 'shards' must be a list of {{name, documents, tokens, ...}}")
    manifest["_dir"] = str(folder.resolve())
    return manifest


def shard_prefix(manifest: dict, name: str) -> str:
    """The path prefix of shard ``name`` of a manifest from :func:`read_manifest`."""
    return os.path.join(manifest["_dir"], name)
