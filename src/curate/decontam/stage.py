"""``decontaminate``: remove (or cut) what documents share with evaluation benchmarks.

Every word n-gram of a document (13 by default, as GPT-3 and OLMo) is looked up in a prebuilt
:class:`~curate.decontam.index.NgramIndex`; a document sharing at least ``min_matches`` distinct n-grams
with one evaluation item is contaminated by it. ``mode: remove`` removes the document with the reason
``<benchmark>:<item id>`` and the number of shared n-grams as its score; ``mode: cut`` excises the
whitespace-delimited tokens the shared n-grams cover and keeps the rest (a document left without a word
is removed as in ``remove``). Casing, punctuation and spacing do not hide a copy (the words are
normalised as in MinHash dedup), and a few changed words only break the n-grams that contain them.

Columns: ``decontaminate_matches`` (shared n-grams with the most-matched item), ``decontaminate_item``
(``benchmark:item_id`` of that item, null when none), ``decontaminate_overlap`` (the share of that item's
n-grams found), and with ``mode: cut`` ``decontaminate_cut_chars``.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from curate.decontam.index import NgramIndex, ngram_values
from curate.dedup.minhash import _words_of_tokens, split_words
from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams

#: The white space :func:`split_words` cuts tokens at (ASCII: str.split's set below 0x80).
_TOKEN = re.compile(r"[^\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f ]+")


class DecontaminateParams(StageParams):
    index: str = Field(description="the index file `curate decontam build` wrote")
    min_matches: int = Field(1, ge=1, description="distinct n-grams a document must share with one item "
                             "(GPT-3, OLMo: any 13-gram)")
    mode: Literal["remove", "cut"] = Field("remove", description="remove the document, or cut the shared spans")

    @field_validator("index")
    @classmethod
    def _exists(cls, index: str) -> str:
        if not Path(index).is_file():
            raise ValueError(f"index not found: {index} (build it with `curate decontam build EVAL... -o {index}`)")
        return index


@register
class Decontaminate(DocumentStage):
    """Removes documents (or cuts their spans) that share n-grams with an evaluation item."""

    name = "decontaminate"
    Params = DecontaminateParams
    params: DecontaminateParams

    def setup(self) -> None:
        self.index = NgramIndex(self.params.index)

    def process(self, batch: pa.Table) -> pa.Table:
        p, index = self.params, self.index
        n = batch.num_rows
        texts = pc.fill_null(batch["text"], "").combine_chunks() if n else pa.array([], pa.string())
        words, offsets = split_words(texts, index.normalisation) if n else (np.zeros(0, np.uint64), np.zeros(1))
        values, docs, starts, sizes = ngram_values(words, offsets.astype(np.int64), index.ngram, index.lengths)
        positions, items = index.lookup(values)
        hit_doc, hit_value = docs[positions], values[positions]
        # distinct shared n-grams per (document, item)
        order = np.lexsort((hit_value, items, hit_doc))
        hit_doc, items, hit_value, positions = hit_doc[order], items[order], hit_value[order], positions[order]
        new_pair = np.ones(len(order), bool)
        new_pair[1:] = (hit_doc[1:] != hit_doc[:-1]) | (items[1:] != items[:-1])
        new_value = new_pair.copy()
        new_value[1:] |= hit_value[1:] != hit_value[:-1]
        pair_starts = np.flatnonzero(new_pair)
        pair_doc, pair_item = hit_doc[pair_starts], items[pair_starts]
        pair_count = np.add.reduceat(new_value.astype(np.int64), pair_starts) if len(pair_starts) else \
            np.zeros(0, np.int64)
        # per document, the item it shares most with (ties: the lowest item number)
        best = np.lexsort((pair_item, -pair_count, pair_doc))
        first = np.ones(len(best), bool)
        first[1:] = pair_doc[best][1:] != pair_doc[best][:-1]
        best = best[first]
        matches = np.zeros(n, np.int64)
        best_item = np.full(n, -1, np.int64)
        matches[pair_doc[best]] = pair_count[best]
        best_item[pair_doc[best]] = pair_item[best]
        table = index.table
        labels = np.full(n, None, object)
        overlap = np.zeros(n)
        hit = np.flatnonzero(best_item >= 0)
        if len(hit):
            rows = pa.array(best_item[hit])
            names = pc.take(table["benchmark"], rows).cast(pa.string()).to_pylist()
            ids = pc.take(table["item_id"], rows).to_pylist()
            grams = pc.take(table["n_grams"], rows).to_numpy(zero_copy_only=False)
            labels[hit] = [f"{b}:{i}" for b, i in zip(names, ids, strict=True)]
            overlap[hit] = matches[hit] / np.maximum(grams, 1)
        contaminated = matches >= p.min_matches
        batch = set_column(batch, "decontaminate_matches", pa.array(matches, pa.int64()))
        batch = set_column(batch, "decontaminate_item", pa.array(labels, pa.string()))
        batch = set_column(batch, "decontaminate_overlap", pa.array(overlap, pa.float64()))
        remove = contaminated
        if p.mode == "cut":
            # every shared n-gram of an item the document meets min_matches with is cut
            qualifying = pair_count >= p.min_matches
            keep_hit = qualifying[np.cumsum(new_pair) - 1] if len(new_pair) else np.zeros(0, bool)
            cut_docs, cut_positions = hit_doc[keep_hit], positions[keep_hit]  # sorted by document
            bounds = np.flatnonzero(np.concatenate([[True], cut_docs[1:] != cut_docs[:-1], [True]]))
            spans = {}  # document -> (first word, end word) of every n-gram to cut
            for a, b in itertools.pairwise(bounds if len(cut_docs) else []):
                where = cut_positions[a:b]
                spans[int(cut_docs[a])] = (starts[where], starts[where] + sizes[where])
            cut_text = texts.to_pylist() if spans else []
            cut_chars = np.zeros(n, np.int64)
            emptied = np.zeros(n, bool)
            tokens = {doc: [(m.start(), m.end()) for m in _TOKEN.finditer(cut_text[doc])] for doc in spans}
            counts = self._words_per_token([cut_text[doc][s:e] for doc in spans for s, e in tokens[doc]])
            at = 0
            for doc, word_ranges in spans.items():
                per_token, at = counts[at:at + len(tokens[doc])], at + len(tokens[doc])
                if int(per_token.sum()) != offsets[doc + 1] - offsets[doc]:  # both follow split_words: never cut blind
                    raise RuntimeError(f"{self.name}: token split disagrees with the word split in row {doc}")
                cut, removed = self._cut(cut_text[doc], tokens[doc], per_token, word_ranges)
                cut_text[doc], cut_chars[doc] = cut, removed
                emptied[doc] = not cut.strip()
            if spans:
                changed = pa.array(cut_chars > 0)
                batch = set_column(batch, "text", pc.if_else(changed, pa.array(cut_text, pa.string()), batch["text"]))
            batch = set_column(batch, "decontaminate_cut_chars", pa.array(cut_chars, pa.int64()))
            remove = emptied
        return self.remove(batch, pa.array(remove), pa.array(labels, pa.string()),
                           pa.array(matches.astype(np.float64)), float(p.min_matches))

    def _words_per_token(self, tokens: list[str]) -> np.ndarray:
        """How many words :func:`split_words` makes of each white-space token (0 for "—", 2 for "well-known")."""
        array = pa.array(tokens, pa.string())
        if self.index.normalisation.lowercase:
            array = pc.utf8_lower(array)
        words = _words_of_tokens(array, self.index.normalisation)
        nonempty = pc.greater(pc.binary_length(pc.list_flatten(words)), 0)
        parents = pc.list_parent_indices(words).filter(nonempty).to_numpy(zero_copy_only=False)
        return np.bincount(parents, minlength=len(tokens))

    @staticmethod
    def _cut(text: str, tokens: list[tuple[int, int]], per_token: np.ndarray,
             word_ranges: tuple[np.ndarray, np.ndarray]) -> tuple[str, int]:
        """``text`` without the tokens that words [start, end) of each range came from; chars removed."""
        token_of_word = np.repeat(np.arange(len(tokens)), per_token)
        cover = np.zeros(len(tokens) + 1, np.int64)  # +1 where a cut range of tokens starts, -1 after it ends
        np.add.at(cover, token_of_word[word_ranges[0]], 1)
        np.add.at(cover, token_of_word[word_ranges[1] - 1] + 1, -1)
        covered = np.concatenate([[0], (np.cumsum(cover[:-1]) > 0).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(covered))  # runs of cut tokens: white space between them goes too
        merged = [(tokens[a][0], tokens[b - 1][1]) for a, b in zip(edges[0::2], edges[1::2], strict=True)]
        out = text[:merged[0][0]]
        for k, (start, end) in enumerate(merged):
            after = text[end:merged[k + 1][0]] if k + 1 < len(merged) else text[end:]
            out, after = out.rstrip(" \t"), after.lstrip(" \t")
            if out.endswith("\n") or after.startswith("\n"):
                separator = ""
            else:  # a newline where the cut crossed one
                separator = "\n" if "\n" in text[start:end] else " "
            out = out + separator + after
        out = out.strip()
        return out, len(text) - len(out)
