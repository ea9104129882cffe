"""``keyword_topic``: how much of a document is about each topic, from lists of keywords and phrases.

A topic's score is its keyword hits per 1,000 words, ``rate``, passed through ``rate / (rate + half_rate)``:

* *per 1,000 words*, so a long document does not score high for being long, nor a short one low for
  being short: a 3,000-word forum thread that says "game" 15 times is as much about games as a
  200-word one that says it once;
* *saturating*, so the score stays in [0, 1) and the first mentions count most: 0 → 5 hits per 1,000
  words separates off-topic from on-topic text, 50 → 55 changes nothing. This is the term-frequency
  saturation of BM25 (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond",
  2009); ``half_rate`` is the rate that scores 0.5, like BM25's ``k1``.

Each keyword (or phrase) occurrence is one hit, counted on whole words (:mod:`curate_example_plugin.words`),
case-insensitively; a keyword in two topics counts for both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate.classify import Classifier, ClassifierParams
from curate_example_plugin.words import words

_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")


class KeywordTopicParams(ClassifierParams):
    topics: dict[str, list[str]] = Field(min_length=1, description="topic -> keywords or phrases; the topic "
                                         "names are the labels (score columns <name>_<topic>)")
    half_rate: float = Field(10.0, gt=0, description="keyword hits per 1,000 words that score 0.5 (one word "
                             "in a hundred)")

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, topics: dict[str, list[str]]) -> dict[str, list[str]]:
        for topic, keywords in topics.items():
            if not _LABEL.match(topic):
                raise ValueError(f"topic {topic!r}: a label must match {_LABEL.pattern} (it names a column)")
            if not keywords:
                raise ValueError(f"topic {topic!r} has no keywords")
            empty = [k for k in keywords if not len(words(pa.array([k]))[0])]
            if empty:
                raise ValueError(f"topic {topic!r}: keywords {empty} contain no word")
        return topics


class KeywordTopic(Classifier):
    """One score per topic: the saturated rate of its keywords (see the module docstring)."""

    name = "keyword_topic"
    Params = KeywordTopicParams
    params: KeywordTopicParams

    def load(self) -> None:
        """Keywords become tuples of word ids, so matching a batch is integer comparisons in numpy."""
        phrases = {t: [tuple(words(pa.array([k]))[0].to_pylist()) for k in ks] for t, ks in self.params.topics.items()}
        self._vocabulary = pa.array(sorted({w for ps in phrases.values() for p in ps for w in p}), pa.string())
        index = {w: i for i, w in enumerate(self._vocabulary.to_pylist())}
        self._phrases = {t: [tuple(index[w] for w in p) for p in ps] for t, ps in phrases.items()}

    def labels(self) -> list[str]:
        return list(self.params.topics)

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        n = len(texts)
        flat, parents = words(pa.array(texts, pa.large_string()))
        ids = pc.fill_null(pc.index_in(flat, value_set=self._vocabulary), -1).to_numpy(zero_copy_only=False)
        per_thousand = 1000.0 / np.maximum(np.bincount(parents, minlength=n), 1)
        scores = {}
        for topic, phrases in self._phrases.items():
            rate = _hits(ids, parents, phrases, n) * per_thousand
            scores[topic] = rate / (rate + self.params.half_rate)
        return scores


def _hits(ids: np.ndarray, parents: np.ndarray, phrases: list[tuple[int, ...]], n: int) -> np.ndarray:
    """Occurrences of any of ``phrases`` in each of ``n`` texts; a phrase never spans two texts."""
    hits = np.bincount(parents[np.isin(ids, [p[0] for p in phrases if len(p) == 1])], minlength=n)
    for phrase in (p for p in phrases if len(p) > 1):
        starts = len(ids) - len(phrase) + 1
        if starts <= 0:
            continue
        match = ids[:starts] == phrase[0]
        for offset, word in enumerate(phrase[1:], start=1):
            match &= (ids[offset:offset + starts] == word) & (parents[offset:offset + starts] == parents[:starts])
        hits += np.bincount(parents[:starts][match], minlength=n)
    return hits.astype(np.float64)
