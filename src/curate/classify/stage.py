"""The ``classify`` stage: a classifier's scores as columns, and an optional ``keep`` rule that removes."""

from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.classify.base import Classifier, get_classifier
from curate.registry import register
from curate.stage import DocumentStage, StageParams

_RULE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(>=|<=|>|<|==|!=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
              "!=": operator.ne}


def parse_rule(rule: str) -> tuple[str, str, float]:
    """``"quality_hq >= 0.3"`` → (column, operator, value): a comparison, never evaluated as code."""
    match = _RULE.match(rule)
    if not match:
        raise ValueError(f"keep rule {rule!r}: expected '<column> <op> <number>' with op one of "
                         f"{', '.join(_OPERATORS)}, e.g. 'quality_hq >= 0.3'")
    return match.group(1), match.group(2), float(match.group(3))


class ClassifyParams(StageParams):
    classifier: str = Field(description="built-in name (fasttext), an installed plug-in's entry-point name, "
                            "or module:Class (`curate classifiers list` shows what is installed)")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="this stage's name: score columns are "
                      "<name>_<label>, removals go to removed/<name>/")
    options: dict[str, Any] = Field(default_factory=dict, description="the classifier's own parameters")
    keep: str | None = Field(None, description="keep documents where '<column> <op> <number>' holds, e.g. "
                             "'quality_hq >= 0.3'; others are removed with the rule as reason; unset: score only")
    embeddings: bool = Field(False, description="also keep each document's embedding as <name>_embedding "
                             "(classifiers that score from embeddings: transformer, embedding_topics)")

    @model_validator(mode="after")
    def _check(self) -> ClassifyParams:
        from curate.classify.transformer import EmbeddingClassifier

        cls = get_classifier(self.classifier)
        options = cls.Params(**self.options)  # a bad option is a configuration error now, not a failed unit later
        declared = cls.declared_labels(options)
        if self.embeddings and not issubclass(cls, EmbeddingClassifier):
            raise ValueError(f"embeddings: classifier {self.classifier!r} does not score from embeddings")
        if self.keep is not None:
            column, _, _ = parse_rule(self.keep)
            if not column.startswith(f"{self.name}_"):
                raise ValueError(f"keep rule {self.keep!r}: the column must be one of this stage's scores "
                                 f"({self.name}_<label>)")
            if declared is not None and column.removeprefix(f"{self.name}_") not in declared:
                raise ValueError(f"keep rule {self.keep!r}: no such score; this classifier gives "
                                 f"{', '.join(f'{self.name}_{label}' for label in declared)}")
        return self


@register
class Classify(DocumentStage):
    """Scores every document with a classifier; removes those failing ``keep``."""

    name = "classify"
    Params = ClassifyParams
    params: ClassifyParams

    def __init__(self, params: ClassifyParams | None = None) -> None:
        super().__init__(params)
        cls = get_classifier(self.params.classifier)
        self.name = self.params.name  # one stage per classifier in a pipeline, each with its own removed/
        self.classifier: Classifier = cls(cls.Params(**self.params.options))
        self.resources = self.classifier.resources  # a GPU classifier gets a step and actor pool of its own
        self.rule = parse_rule(self.params.keep) if self.params.keep else None

    def setup(self) -> None:
        self.classifier.load()
        labels = self.classifier.labels()
        bad = [label for label in labels if not re.fullmatch(r"\w+", label)]
        if bad:
            raise ValueError(f"classifier {self.params.classifier!r} has labels {bad} that cannot name a column "
                             "(letters, digits and _ only)")
        self.columns = [f"{self.name}_{label}" for label in labels]
        if self.rule and self.rule[0] not in self.columns:
            raise ValueError(f"keep rule {self.params.keep!r}: no such score; this classifier gives "
                             f"{', '.join(self.columns)}")

    def teardown(self) -> None:
        self.classifier.close()

    def process(self, batch: pa.Table) -> pa.Table:
        texts = batch["text"].to_pylist()
        size = self.classifier.batch_size
        chunks = [texts[i:i + size] for i in range(0, len(texts), size)]
        if self.params.embeddings:
            vectors = [self.classifier.encode(chunk) for chunk in chunks]
            parts = [self.classifier.score_embeddings(v) for v in vectors]
        else:
            parts = [self.classifier.score(chunk) for chunk in chunks]
        for label, column in zip(self.classifier.labels(), self.columns, strict=True):
            values = np.concatenate([p[label] for p in parts]) if parts else np.zeros(0)
            batch = batch.append_column(pa.field(column, pa.float64()), pa.array(values, pa.float64()))
        if self.params.embeddings:
            matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
            width = matrix.shape[1] if matrix.size else 384
            column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), width)
            batch = batch.append_column(f"{self.name}_embedding", column)
        if self.rule is None:
            return batch
        column, op, value = self.rule
        scores = batch[column].to_numpy()
        drop = ~_OPERATORS[op](scores, value)
        reason = f"{self.params.classifier}:{self.params.keep.strip()}"
        return self.remove(batch, pa.array(drop), pa.repeat(pa.scalar(reason), batch.num_rows),
                           scores=pc.cast(batch[column], pa.float64()), thresholds=value)
