"""fastText classifiers (the DCLM quality filter; topic models): training, and scoring in a pipeline.

fastText reads one example per line, so a document's white space is folded to single spaces before
training and scoring alike (one function, :func:`fasttext_line`). Training is deterministic for a given
seed with one thread (``thread: 1``, fastText's Hogwild updates are not otherwise); ``wordNgrams: 2`` is
DCLM's setting and avoids fastText's NaN failures on small data seen with unigrams
(../shared/notes/dependencies.md).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from curate.classify.base import Classifier, ClassifierParams, register_classifier

LABEL_PREFIX = "__label__"
log = logging.getLogger(__name__)


def fasttext_line(text: str, max_chars: int | None = None) -> str:
    """A document as fastText sees it: one line, white space folded (``max_chars``: a prefix only)."""
    if max_chars is not None:
        text = text[:max_chars]
    return " ".join(text.split())


class FastTextParams(ClassifierParams):
    model: str = Field(description="path of a fastText .bin/.ftz model (`curate classifiers train fasttext`)")
    max_chars: int | None = Field(None, ge=1, description="score only this prefix of each document")


def load_model(path: str):
    """A fastText model, with its per-load stderr warning silenced."""
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fastText model not found: {path}")
    return fasttext.load_model(path)


@register_classifier
class FastTextClassifier(Classifier):
    """Probabilities of every label of a fastText supervised model (``<name>_<label>`` columns)."""

    name = "fasttext"
    Params = FastTextParams
    params: FastTextParams
    batch_size = 1024

    def load(self) -> None:
        self.model = load_model(self.params.model)
        self._labels = sorted(label.removeprefix(LABEL_PREFIX) for label in self.model.labels)

    def labels(self) -> list[str]:
        return self._labels

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        lines = [fasttext_line(t or "", self.params.max_chars) for t in texts]
        predicted, probabilities = self.model.predict(lines, k=len(self._labels))
        index = {f"{LABEL_PREFIX}{label}": i for i, label in enumerate(self._labels)}
        scores = np.zeros((len(lines), len(self._labels)), dtype=np.float64)
        for row, (names, probs) in enumerate(zip(predicted, probabilities, strict=True)):
            scores[row, [index[n] for n in names]] = np.clip(probs, 0.0, 1.0)
        return {label: scores[:, i] for i, label in enumerate(self._labels)}


class FastTextTraining(ClassifierParams):
    """fastText's supervised options (names as in the fastText CLI)."""

    epoch: int = Field(5, ge=1)
    lr: float = Field(0.1, gt=0)
    dim: int = Field(100, ge=1)
    wordNgrams: int = Field(2, ge=1)
    minCount: int = Field(1, ge=1)
    bucket: int = Field(200_000, ge=1, description="rows of the hashed word-n-gram table; fastText's default "
                        "2,000,000 makes an 814 MB model at dim 100 however small the data: raise it for "
                        "millions of training documents")
    loss: str = Field("softmax")
    thread: int = Field(1, ge=1, description="1: deterministic for a given seed")
    seed: int = 0
    max_chars: int | None = Field(None, ge=1, description="train on this prefix of each document")


def train_fasttext(examples: Iterable[tuple[str, str]], out: str | Path, training: FastTextTraining | None = None):
    """Fit a supervised model on (label, text) pairs and save it to ``out``; returns the model."""
    import fasttext

    training = training or FastTextTraining()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for label, text in examples:
            line = fasttext_line(text, training.max_chars)
            if line:
                f.write(f"{LABEL_PREFIX}{label} {line}\n")
                counts[label] = counts.get(label, 0) + 1
        path = f.name
    try:
        if len(counts) < 2:
            raise ValueError(f"training needs at least two labels with text, got {counts or 'none'}")
        fasttext.FastText.eprint = lambda *args, **kwargs: None
        options = training.model_dump(exclude={"max_chars"})
        model = _train_halving_lr(fasttext, path, options, counts)
    finally:
        os.unlink(path)
    model.save_model(str(out))
    return model


DIVERGENCE_RETRIES = 3


def _train_halving_lr(fasttext, path: str, options: dict, counts: dict[str, int]):
    """fastText now and then diverges to NaN on small sets (the same call, seed and data passed here and
    failed on the CI machine); halving the learning rate is what a person would do, so it is done here,
    up to ``DIVERGENCE_RETRIES`` times, with a warning; the model's ``lr`` records the rate that worked."""
    lr = options["lr"]
    for attempt in range(DIVERGENCE_RETRIES + 1):
        try:
            return fasttext.train_supervised(input=path, verbose=0, **{**options, "lr": lr})
        except RuntimeError as exc:
            if "NaN" not in str(exc):
                raise
            if attempt == DIVERGENCE_RETRIES:
                raise ValueError(f"fastText training diverged ({exc}) on {counts} down to lr {lr:g}: raise "
                                 "dim or add data (wordNgrams 2 avoids most of these on small sets)") from exc
            log.warning("fastText training diverged at lr %g; retrying at lr %g", lr, lr / 2)
            lr /= 2
