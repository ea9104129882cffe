"""Assistant-output contamination: chatbot answers pasted into web pages.

Since late 2022 the web holds many pages that are raw LLM output ("As an AI language model, I don't have
personal opinions…"). Training on them teaches a base model to refuse and to claim to be someone else's
assistant. Their fingerprints are a few stock phrases, so a phrase list finds them; but news and blog
posts *about* chatbots quote those phrases too. A page is therefore removed only when it has at least
``min_matches`` matches **and** a density of at least ``max_density`` matches per 1,000 words: a chatbot
paste packs several into a few hundred words, an article quotes one once.

Matching is case-insensitive; curly and other apostrophes (’ ‘ ʼ ` ´ ′ ＇) count as ``'``, any run of
spaces, tabs, newlines or no-break spaces counts as one space, and commas inside a phrase are optional
("I'm sorry but I cannot" matches "I'm sorry, but I cannot"). Matches never overlap: the leftmost wins,
and of phrases starting at the same place the longest. All phrases compile into one alternation
that pyarrow runs in RE2 over the whole batch (about 200 MB/s); only the rare rows that match are
revisited in Python to list which phrases they hold.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams

#: Stock phrases of ChatGPT-style assistants, written lower-case with ``'`` apostrophes.
DEFAULT_PHRASES: tuple[str, ...] = (
    "as an ai language model",
    "as a large language model",
    "as an ai assistant",
    "as an ai developed by openai",
    "as an ai, i",
    "i am an ai language model",
    "i'm an ai language model",
    "i am chatgpt",
    "i'm chatgpt",
    "a large language model trained by openai",
    "i'm sorry, but i cannot",
    "i'm sorry, but i can't",
    "i apologize, but i cannot",
    "i apologize, but i can't",
    "i apologize for any confusion",
    "i apologize for the confusion",
    "as of my knowledge cutoff",
    "as of my last knowledge update",
    "as of my last update",
    "my knowledge cutoff",
    "i don't have personal opinions",
    "i do not have personal opinions",
    "i don't have personal feelings",
    "i do not have personal feelings",
    "i don't have the ability to browse",
    "i don't have access to real-time",
    "i do not have access to real-time",
    "i cannot browse the internet",
    "i cannot fulfill this request",
    "i can't fulfill this request",
    "i cannot assist with that",
    "i can't assist with that",
    "regenerate response",
    "violates openai's content policy",
    "openai's use case policy",
)

_APOSTROPHES = "'’‘ʼ`´′＇"
# Explicit classes instead of \s and Unicode \b: RE2 (pyarrow) and Python's re then agree, except that
# RE2 folds a few more non-ASCII case variants, so the RE2 prefilter never misses a row Python would match.
_SPACE = r"[ \t\n\r\f\v\xa0]+"
_APOSTROPHE = "[" + re.escape(_APOSTROPHES) + "]"


def normalize_phrase(text: str) -> str:
    """The canonical form a phrase and its matches share: lower case, one apostrophe, no commas."""
    text = text.lower().replace(",", "")
    for apostrophe in _APOSTROPHES[1:]:
        text = text.replace(apostrophe, "'")
    return " ".join(text.split())


def _phrase_regex(phrase: str) -> str:
    """``\b`` only at a phrase edge that is a word character ("certainly!" must not need one after '!')."""
    canonical = normalize_phrase(phrase)
    words = [_APOSTROPHE.join(re.escape(part) for part in word.split("'")) for word in canonical.split(" ")]
    start = r"\b" if re.match(r"\w", canonical) else ""
    end = r"\b" if re.search(r"\w$", canonical) else ""
    return start + (",?" + _SPACE).join(words) + end


def phrase_pattern(phrases: list[str]) -> str:
    """One alternation, longest first: of two phrases starting at one place the longer one matches."""
    alternatives = sorted({_phrase_regex(p) for p in phrases}, key=len, reverse=True)
    return "(?:" + "|".join(alternatives) + ")"


class ContaminationParams(StageParams):
    phrases: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PHRASES),
        description="assistant phrases; case, apostrophe style, commas and spacing are normalised",
    )
    min_matches: int = Field(2, ge=1, description="matches needed before the density rule applies")
    max_density: float = Field(
        5.0, gt=0, description="remove at this many matches per 1,000 whitespace-separated words"
    )

    @field_validator("phrases")
    @classmethod
    def _phrases_not_blank(cls, phrases: list[str]) -> list[str]:
        blank = [p for p in phrases if not normalize_phrase(p)]
        if blank:
            raise ValueError(f"blank phrases: {blank!r}")
        return phrases


@register
class Contamination(DocumentStage):
    """Adds ``contamination_phrases`` (distinct canonical phrases, in order of first match),
    ``contamination_matches`` and ``contamination_density`` (matches per 1,000 words); removes rows with
    reason ``assistant_phrases`` (score = density, threshold = ``max_density``).
    """

    name = "contamination"
    Params = ContaminationParams

    def setup(self) -> None:
        phrases = self.params.phrases
        self._canonical = {normalize_phrase(p): p for p in phrases}
        self._pattern = phrase_pattern(phrases) if phrases else None
        self._regex = re.compile(self._pattern, re.IGNORECASE | re.ASCII) if phrases else None

    def find(self, text: str) -> list[str]:
        """Every match in ``text``, as the configured phrase it matched (repeats included)."""
        return [self._canonical[normalize_phrase(m.group(0))] for m in self._regex.finditer(text)]

    def process(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        phrases: list[list[str]] = [[] for _ in range(n)]
        matches = np.zeros(n, dtype=np.int64)
        density = np.zeros(n, dtype=np.float64)
        if self._pattern is not None and n:
            candidates = pc.greater(pc.count_substring_regex(batch["text"], self._pattern, ignore_case=True), 0)
            rows = np.flatnonzero(pc.fill_null(candidates, False).to_numpy(zero_copy_only=False))
            texts = batch["text"].take(pa.array(rows, pa.int64())).to_pylist() if len(rows) else []
            for row, text in zip(rows, texts):
                found = self.find(text)
                phrases[row] = list(dict.fromkeys(found))
                matches[row] = len(found)
                density[row] = 1000.0 * len(found) / max(len(text.split()), 1)
        batch = set_column(batch, "contamination_phrases", pa.array(phrases, pa.list_(pa.string())))
        batch = set_column(batch, "contamination_matches", pa.array(matches, pa.int64()))
        batch = set_column(batch, "contamination_density", pa.array(density, pa.float64()))
        p = self.params
        failing = (matches >= p.min_matches) & (density >= p.max_density)
        return self.remove(batch, pa.array(failing), "assistant_phrases", pa.array(density), p.max_density)
