"""Main-text extraction: resiliparse's main-content pass, then a learned line classifier drops boilerplate.

Why this shape: resiliparse's ``main_content`` heuristics keep almost all of an article (recall 0.99 on
the scrapinghub benchmark) but also menus, "related" lists, bylines, newsletter boxes and footers that
sit next to it (precision 0.86). Trafilatura removes more of them but costs ~15x the time. Asking
resiliparse for ``minimal_html`` output costs about the same as plain text and still tells, per line, the
enclosing block tag (p, li, h1-6, pre, none) and which characters are link text, which is most of what a
boilerplate classifier needs. The classifier is a small gradient-boosted tree ensemble over cheap line
features plus the same features averaged over neighbouring lines (boilerplate comes in runs), shipped as
JSON and evaluated with numpy only (scikit-learn trains it, see ``classifiers/boilerplate/train.py``).
"""

from __future__ import annotations

import html as html_lib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL = Path(__file__).with_name("data") / "boilerplate.json"

_COMMENTS = False  # resiliparse comments= option of the base pass
#: Main content shorter than this (characters) sends the classifier to the whole page; 500 measured best
#: of 500/1000 (1000 also takes short news pages whose main content was right: held-out precision -0.03).
SHORT_MAIN_CONTENT = 500
_TAG = re.compile(r"<[^>]*>")
_TAG_IN_LINE = re.compile(r"<[^>\n]*>")
_BLOCK = re.compile(r"<(/?)(p|li|h[1-6]|pre)\b[^>]*>")
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>")
# Words (lower case) that mark page furniture in the languages of the training pages (en, de, fr, ...);
# a set lookup rather than a regex alternation, which costs ~20x more per line.
_FURNITURE = frozenset(
    ["copyright", "rights", "reserved", "rechte", "advertisement", "advertising", "advertise", "ad", "ads", "anzeige", "werbung", "newsletter", "subscribe", "subscription", "subscribers", "abonnieren", "abonnement", "abo", "sign", "login", "logout", "anmelden", "registrieren", "register", "cookie", "cookies", "datenschutz", "datenschutzerklärung", "privacy", "terms", "impressum", "agb", "follow", "share", "shares", "teilen", "related", "read", "weiterlesen", "mehr", "könnte", "interessieren", "recommended", "comments", "comment", "kommentar", "kommentare", "click", "klicken", "tags", "tag", "categories", "category", "kategorie", "kategorien", "photo", "photos", "foto", "fotos", "image", "getty", "reuters", "ap", "afp", "dpa", "updated", "published", "posted", "veröffentlicht", "aktualisiert", "trending", "popular", "stories", "sponsored", "contact", "kontakt", "sitemap", "menu", "menü", "home", "startseite", "navigation", "facebook", "twitter", "whatsapp", "instagram", "linkedin", "pinterest", "email", "print", "drucken", "video", "videos"])
_STOP = frozenset(
    ["the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "was", "were", "be", "been", "it", "that", "this", "as", "at", "by", "from", "has", "have", "had", "he", "she", "they", "we", "you", "i", "his", "her", "their", "its", "not", "but", "which", "who", "will", "would", "said", "says", "der", "die", "das", "und", "oder", "ist", "sind", "war", "ein", "eine", "einen", "dem", "den", "des", "zu", "im", "in", "auf", "mit", "von", "für", "nicht", "sich", "auch", "es", "er", "sie", "wir", "ich", "bei", "aus", "nach", "wie", "als", "dass", "hat", "haben", "wird", "werden", "noch", "nur", "le", "la", "les", "et", "ou", "est", "sont", "un", "une", "des", "du", "de", "en", "dans", "pour", "avec", "sur", "pas", "que", "qui", "il", "elle", "el", "los", "las", "y", "es", "son", "un", "una", "del", "en", "con", "por", "para", "no", "que", "se", "su", "i", "w", "z", "na", "się", "nie", "do", "jest", "to", "że", "o"])
_KINDS = ("text", "p", "li", "h1", "h2", "h3", "h4", "pre", "link")
_KIND_INDEX = {kind: i for i, kind in enumerate(_KINDS)}
_HEADING = {"h5": "h4", "h6": "h4"}

LINE_FEATURES = (
    "kind", "log_chars", "log_words", "link_share", "n_links", "punct_per_word", "ends_sentence",
    "digit_share", "upper_word_share", "mean_word_len", "stop_share", "furniture", "duplicate",
    "long_p",
)
PAGE_FEATURES = ("rel_line", "rel_char", "log_page_chars", "page_long_p_share",
                 "before_first_long_p", "after_last_long_p", "lines_to_long_p", "whole_page")
_CONTEXT = ("log_chars", "link_share", "punct_per_word", "stop_share", "long_p", "furniture")
_WINDOWS = (1, 3, 8)
_CONTEXT_COLS = [LINE_FEATURES.index(name) for name in _CONTEXT]
_WINDOW_ARRAY = np.array(_WINDOWS)
_N_FEATURES = len(LINE_FEATURES) + len(PAGE_FEATURES) + 2 * len(_WINDOWS) * len(_CONTEXT)


Lines = tuple[list[str], list[str], bool]  # a page's raw lines, their text, whether they are the whole page


def feature_names() -> list[str]:
    """Column names of :func:`line_features`' matrix, in order (the model file records them)."""
    names = list(LINE_FEATURES) + list(PAGE_FEATURES)
    for w in _WINDOWS:
        names += [f"{name}_prev{w}" for name in _CONTEXT] + [f"{name}_next{w}" for name in _CONTEXT]
    return names


def page_lines(html_text: str) -> Lines:
    """(raw minimal-HTML lines with text, their plain text, whether they are the whole page); no line
    holds a newline.

    Resiliparse's main content, unless it holds under ``SHORT_MAIN_CONTENT`` characters: then its
    heuristics most often missed the article (a body built of teasers, comments or ticker entries), and
    the classifier reads the whole page instead, less its ``<nav>`` elements (navigation by definition; a
    category page that is all links then stays empty; held-out precision 0.9492 -> 0.94999, ``with``
    0.920 -> 0.912, ``without`` 0.900 -> 0.904). The page is parsed once for both passes (extracting
    from a parsed tree gives the same text as from the string, and does not change the tree).
    """
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html_text)
    raws, texts = _lines(tree, main_content=True)
    if sum(map(len, texts)) < SHORT_MAIN_CONTENT:
        if tree.body is not None:
            for node in tree.body.query_selector_all("nav"):
                node.decompose()
        return (*_lines(tree, main_content=False), True)
    return raws, texts, False


def _lines(tree: Any, main_content: bool) -> tuple[list[str], list[str]]:
    from resiliparse.extract.html2text import extract_plain_text

    out = extract_plain_text(tree, preserve_formatting="minimal_html", main_content=main_content, links=True,
                             alt_texts=False, noscript=False, comments=_COMMENTS)
    raws = [raw for raw in out.split("\n") if raw and not raw.isspace()]
    plain = _TAG.sub("", "\n".join(raws)).split("\n") if "<" in out else raws
    if len(plain) != len(raws):  # a tag spanning lines; strip line by line
        plain = [_TAG.sub("", raw) for raw in raws]
    if "\xad" in out or "\u200b" in out:  # soft hyphens and zero-width spaces are invisible
        plain = [text.replace("\xad", "").replace("\u200b", "") for text in plain]
    keep_raws, texts = [], []
    for raw, text in zip(raws, plain):
        if "&" in text:
            text = html_lib.unescape(text).replace("\n", " ")  # an escaped newline must not split a line
        text = text.strip()
        if text:
            keep_raws.append(raw)
            texts.append(text)
    return keep_raws, texts


# Per-code-point classes for the vectorised character and word counts. Code points from U+2100 up share
# the last entry (letters of other scripts: word characters); U+2000-U+20FF (dashes, quotes, currency
# signs) are not word characters, as for ``\\w``.
_CP_DIGIT, _CP_PUNCT, _CP_UPPER, _CP_WORD, _CP_END = 1, 2, 4, 8, 16
_CP_LAST = 0x2100
_CP_CLASS = np.zeros(_CP_LAST + 1, dtype=np.uint8)
_CP_CLASS[ord("0"):ord("9") + 1] |= _CP_DIGIT | _CP_WORD
_CP_CLASS[[ord(c) for c in ".,;:!?"]] |= _CP_PUNCT
_CP_CLASS[ord("A"):ord("Z") + 1] |= _CP_UPPER | _CP_WORD
_CP_CLASS[[c for c in range(0xC0, 0xDF) if c != 0xD7]] |= _CP_UPPER  # lower case is +0x20, as for A-Z
_CP_CLASS[ord("a"):ord("z") + 1] |= _CP_WORD
_CP_CLASS[[ord("_"), 0xAA, 0xB5, 0xBA] + [c for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7)]] |= _CP_WORD
_CP_CLASS[0x100:0x2000] |= _CP_WORD
_CP_CLASS[_CP_LAST] |= _CP_WORD
_CP_CLASS[[ord(c) for c in '.!?:")\xbb\u201c\u201d']] |= _CP_END

# Stop and furniture words are found by a polynomial hash of each word's lower-cased code points,
# computed for all words of a page at once in numpy and looked up with one searchsorted: a regex
# tokeniser plus a dict lookup per word cost ~4x more. Words over _MAX_WORD code points are never looked up.
_MAX_WORD = 24
_HASH_POW = np.cumprod(np.full(_MAX_WORD, 0x9E3779B97F4A7C15, dtype=np.uint64), dtype=np.uint64)
_STOPWORD, _FURNITURE_WORD = 1, 2
# Per class byte: the counts line_features sums per line (the upper-case column is kept at word starts).
_CLASS_COUNTS = np.array([[(c & _CP_DIGIT) != 0, (c & _CP_PUNCT) != 0, (c & _CP_WORD) != 0, (c & _CP_UPPER) != 0]
                          for c in range(256)], dtype=np.int32)


def _words(cp: np.ndarray, cls: np.ndarray, word: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start position, length, hash) of each word (a run of ``word`` characters) of a page's code points."""
    at = np.flatnonzero(word)
    first = np.ones(at.size, dtype=bool)
    first[1:] = at[1:] != at[:-1] + 1
    bounds = np.flatnonzero(first)
    lengths = np.empty_like(bounds)
    lengths[:-1] = bounds[1:] - bounds[:-1]
    lengths[-1:] = at.size - bounds[-1:]
    if not at.size:
        return at, lengths, np.zeros(0, dtype=np.uint64)
    offset = np.arange(at.size) - np.repeat(bounds, lengths)
    lower = cp[at].astype(np.uint64)
    lower[(cls[at] & _CP_UPPER) != 0] += 0x20
    return at[bounds], lengths, np.add.reduceat(lower * _HASH_POW[np.minimum(offset, _MAX_WORD - 1)], bounds)


def _vocabulary() -> tuple[np.ndarray, np.ndarray]:
    words = sorted(_STOP | _FURNITURE)
    cp = np.frombuffer("\n".join(words).encode("utf-32-le"), dtype=np.uint32)
    cls = _CP_CLASS.take(np.minimum(cp, _CP_LAST))
    _, lengths, hashes = _words(cp, cls, (cls & _CP_WORD) != 0)
    assert hashes.size == len(words) and lengths.max() <= _MAX_WORD, "a listed word is not one word"
    codes = np.array([(_STOPWORD if w in _STOP else 0) | (_FURNITURE_WORD if w in _FURNITURE else 0) for w in words],
                     dtype=np.uint8)
    order = np.argsort(hashes)
    sentinel = np.iinfo(np.uint64).max  # after every hash: a lookup's index stays in range
    return np.append(hashes[order], np.uint64(sentinel)), np.append(codes[order], np.uint8(0))


_VOCAB_HASH, _VOCAB_CODE = _vocabulary()


_BLOCK_CODE = {}  # a _BLOCK match -> 1 + kind index (opening) or 0 (closing: back to "text")
for _tag in ("p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre"):
    _BLOCK_CODE[("", _tag)] = 1 + _KIND_INDEX[_HEADING.get(_tag, _tag)]
    _BLOCK_CODE[("/", _tag)] = 0


def _line_kinds(pages_raws: Sequence[list[str]], texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind index, link characters, links) per line of the pages' minimal HTML, all pages' lines in order.

    A line's kind is its first opening block tag (p, li, h1-h6, pre), else the block left open by an
    earlier line of its page, else "text"; a "text" line that is >= 90 % link text is "link". One C-level
    ``findall`` per line; link texts are stripped of tags in one pass over all lines.
    """
    n = len(texts)
    kinds = []
    for raws in pages_raws:
        state = 0  # the block left open, 0 = "text"
        for tags in map(_BLOCK.findall, raws):
            if not tags:
                kinds.append(state)
                continue
            codes = list(map(_BLOCK_CODE.__getitem__, tags))
            kinds.append(next((c - 1 for c in codes if c), state))
            state = max(codes[-1] - 1, 0)
    kind = np.array(kinds, dtype=np.intp)
    link_chars = n_links = np.zeros(n)
    found = list(map(_LINK.findall, chain.from_iterable(pages_raws)))
    per_line = np.fromiter(map(len, found), dtype=np.intp, count=n)
    if per_line.any():
        inner = "\n".join(chain.from_iterable(found))  # link texts hold no newline (a line's own)
        if "<" in inner:
            inner = _TAG_IN_LINE.sub("", inner)
        lengths = np.fromiter(map(len, map(str.strip, inner.split("\n"))), dtype=np.float64, count=per_line.sum())
        link_chars = np.bincount(np.repeat(np.arange(n), per_line), weights=lengths, minlength=n)
        n_links = per_line.astype(np.float64)
        chars = np.fromiter(map(len, texts), dtype=np.float64, count=n)
        kind[(kind == 0) & (link_chars >= 0.9 * chars)] = _KIND_INDEX["link"]
    return kind, link_chars, n_links


def line_features(raws: list[str], texts: list[str], whole_page: bool = False) -> np.ndarray:
    """One row of cheap features per line of one page (see :func:`feature_names`); ``whole_page``: the
    lines are the whole page, not its main content (:func:`page_lines`)."""
    return pages_features([(raws, texts, whole_page)])


def pages_features(pages: Sequence[Lines]) -> np.ndarray:
    """:func:`line_features` of several pages in one pass, their rows in page order.

    Each row has the bits it has when its page is featurised alone (the model file and its rebuild depend
    on them): the only sums that are not exact, the neighbour means, run per page. One pass over a few
    dozen pages costs ~2/3 of featurising them one by one, most numpy calls being per call, not per line.
    Character counts are numpy kernels over the code points of all lines (words: :func:`_words`), tags
    come from one ``findall`` per line (:func:`_line_kinds`).
    """
    texts = list(chain.from_iterable(page[1] for page in pages))
    n = len(texts)
    sizes = np.fromiter((len(page[1]) for page in pages), dtype=np.intp, count=len(pages))
    kind_arr, link_chars, n_links = _line_kinds([page[0] for page in pages], texts)
    lens = np.fromiter(map(len, texts), dtype=np.intp, count=n)
    starts = np.zeros(n, dtype=np.intp)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    joined = "\n".join(texts)
    copyright_ = np.fromiter(("©" in t for t in texts), dtype=bool, count=n) if "©" in joined else False
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    cls = _CP_CLASS.take(np.minimum(cp, _CP_LAST))
    word = (cls & _CP_WORD) != 0
    word_at, word_len, hashes = _words(cp, cls, word)
    word_line = np.searchsorted(starts, word_at, side="right") - 1
    found = np.searchsorted(_VOCAB_HASH, hashes)  # the sentinel keeps it in range
    code = np.where((_VOCAB_HASH[found] == hashes) & (word_len <= _MAX_WORD), _VOCAB_CODE[found], 0)
    # Words per line and code (0 other, 1 stop, 2 furniture, 3 both) in one bincount.
    per_code = np.bincount(word_line * 4 + code, minlength=4 * n).reshape(n, 4).astype(np.float64)
    n_words = per_code.sum(axis=1)
    n_stop = per_code[:, 1] + per_code[:, 3]
    n_furniture = per_code[:, 2] + per_code[:, 3]
    per_cp = _CLASS_COUNTS.take(cls, axis=0)  # digit, punctuation, word character, upper case
    upper_start = np.zeros(cp.size, dtype=np.int32)
    upper_start[word_at] = per_cp[word_at, 3]
    per_cp[:, 3] = upper_start
    counts = np.add.reduceat(per_cp, starts, axis=0)
    last = starts + lens - 1
    ends = (cls.take(last) & _CP_END) != 0
    chars = lens.astype(np.float64)
    nw = np.maximum(n_words, 1.0)
    link_share = np.minimum(1.0, link_chars / chars)
    long_p = (chars >= 150) & (link_share < 0.3) & (kind_arr <= 2)  # text, p, li
    out = np.empty((n, _N_FEATURES))
    base = out[:, :len(LINE_FEATURES)]
    base[:, 0] = kind_arr
    base[:, 1] = _log1p(chars)
    base[:, 2] = _log1p(n_words)
    base[:, 3] = link_share
    base[:, 4] = n_links
    base[:, 5] = counts[:, 1] / nw
    base[:, 6] = ends
    base[:, 7] = counts[:, 0] / chars
    base[:, 8] = counts[:, 3] / nw
    base[:, 9] = counts[:, 2] / nw
    base[:, 10] = n_stop / nw
    base[:, 11] = (chars < 400) & ((n_furniture > 0) | copyright_)
    base[:, 12] = _duplicates(pages, n)
    base[:, 13] = long_p
    _add_context(out, chars, long_p, sizes, np.array([page[2] for page in pages], dtype=bool))
    return out


def _duplicates(pages: Sequence[Lines], n: int) -> np.ndarray:
    """Per line: does the same text occur on another line of its page."""
    dup = np.zeros(n, dtype=bool)
    at = 0
    for _, texts, _ in pages:
        if len(set(texts)) < len(texts):
            seen = Counter(texts)
            dup[at:at + len(texts)] = [seen[t] > 1 for t in texts]
        at += len(texts)
    return dup


#: log1p of the whole numbers most counts fall under, from the C library: see :func:`_log1p`.
_LOG1P = np.array([math.log1p(i) for i in range(1 << 16)])


def _log1p(counts: np.ndarray | float) -> np.ndarray:
    """log(1 + x) of non-negative whole numbers (lengths, counts, distances), with the same bits on every
    x86-64 CPU: numpy's own log1p takes a SIMD path where there is AVX-512 and another where there is not,
    which moved the trained model's thresholds (and its file's bytes) from one machine to the next."""
    x = np.asarray(counts, dtype=np.float64)
    out = np.empty(x.shape)
    small = (x < len(_LOG1P)) & (x == np.floor(x))
    out[small] = _LOG1P[x[small].astype(np.intp)]
    out[~small] = [math.log1p(v) for v in x[~small]]
    return out


def _add_context(out: np.ndarray, chars: np.ndarray, long_p: np.ndarray, sizes: np.ndarray,
                 whole_page: np.ndarray) -> None:
    """Fill the page and neighbour columns of ``out`` (after the line features) in place; ``sizes`` are
    the pages' line counts (the rows of ``out`` are their lines in order)."""
    n = out.shape[0]
    first = np.zeros(len(sizes) + 1, dtype=np.intp)  # each page's first row; the last entry is n
    np.cumsum(sizes, out=first[1:])
    page_of = np.repeat(np.arange(len(sizes)), sizes)
    local = np.arange(n) - first[:-1][page_of]  # line number within its page
    idx = local.astype(np.float64)
    page_lines = sizes[page_of]
    # Whole numbers below 2**53 (characters, line numbers) add up exactly in any order.
    upto = np.concatenate([[0.0], np.cumsum(chars)])  # characters of the rows before each row
    seen_chars = upto[1:] - upto[first[:-1]][page_of]
    total = np.bincount(page_of, weights=chars, minlength=len(sizes))
    total[total == 0] = 1.0
    col = len(LINE_FEATURES)
    page = out[:, col:col + len(PAGE_FEATURES)]
    page[:, 0] = idx / np.maximum(1, page_lines - 1)
    page[:, 1] = (seen_chars - chars) / total[page_of]
    page[:, 2] = _log1p(total)[page_of]
    page[:, 3] = (np.bincount(page_of, weights=chars * long_p, minlength=len(sizes)) / total)[page_of]
    # The nearest long paragraph of the line's page at or before it, at or after it.
    rows = np.arange(n)
    before = np.maximum.accumulate(np.where(long_p, rows, -1))
    after = np.minimum.accumulate(np.where(long_p, rows, n)[::-1])[::-1]
    has_before = before >= first[:-1][page_of]
    has_after = after < first[1:][page_of]
    distance = np.minimum(np.where(has_before, rows - before, n), np.where(has_after, after - rows, n))
    any_long = np.bincount(page_of, weights=long_p, minlength=len(sizes))[page_of] > 0
    page[:, 4] = np.where(any_long, ~has_before, True)
    page[:, 5] = np.where(any_long, ~has_after, False)
    page[:, 6] = _log1p(np.where(any_long, distance, page_lines))
    page[:, 7] = whole_page[page_of]
    col += len(PAGE_FEATURES)
    # Means over the w lines before / after each line within its page: per page a cumulative sum behind
    # a zero row (the only sums here that are not exact, so they must start where the page starts).
    values = out[:, _CONTEXT_COLS]
    csum = np.zeros((n + len(sizes), len(_CONTEXT)))
    for p in range(len(sizes)):
        np.cumsum(values[first[p]:first[p + 1]], axis=0, out=csum[first[p] + p + 1:first[p + 1] + p + 1])
    at = (first[:-1] + np.arange(len(sizes)))[page_of][:, None]  # each line's page's zero row in csum
    j = local[:, None]
    lo = np.maximum(j - _WINDOW_ARRAY, 0)
    hi = np.minimum(j + _WINDOW_ARRAY + 1, page_lines[:, None])
    ctx = out[:, col:].reshape(n, len(_WINDOWS), 2, len(_CONTEXT))
    ctx[:, :, 0] = (csum[at + j] - csum[at + lo]) / np.maximum(j - lo, 1)[:, :, None]
    ctx[:, :, 1] = (csum[at + hi] - csum[at + j + 1]) / np.maximum(hi - j - 1, 1)[:, :, None]


class Model:
    """A gradient-boosted tree ensemble, renumbered breadth-first (right child = left child + 1, a leaf
    is its own child with an infinite threshold) and flattened, so that all trees are walked together
    with a handful of 1-D ``np.take`` calls per level instead of a Python loop over trees."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.features: list[str] = spec["features"]
        if self.features != feature_names():
            raise ValueError("boilerplate model was built for other features; retrain it")
        self.threshold: float = spec["threshold"]
        self.baseline: float = spec["baseline"]
        self.depth: int = spec["depth"]
        feature, cut, child, value, roots = [], [], [], [], []
        for tree in spec["trees"]:
            base = len(feature)
            roots.append(base)
            order = [0]  # breadth-first, children of one node adjacent
            position = {0: 0}
            i = 0
            while i < len(order):
                node = order[i]
                left, right = tree["left"][node], tree["right"][node]
                if left != node:
                    position[left], position[right] = len(order), len(order) + 1
                    order += [left, right]
                i += 1
            for node in order:
                leaf = tree["left"][node] == node
                feature.append(0 if leaf else tree["feature"][node])
                cut.append(np.inf if leaf else tree["threshold"][node])
                child.append(base + (position[node] if leaf else position[tree["left"][node]]))
                value.append(tree["value"][node])
        self._feature = np.array(feature, dtype=np.intp)
        self._cut = np.array(cut)
        self._child = np.array(child, dtype=np.intp)
        self._value = np.array(value)
        roots_ = np.array(roots, dtype=np.intp)
        self._root_feature, self._root_cut, self._root_child = (
            self._feature[roots_], self._cut[roots_], self._child[roots_])  # the first level, for every row

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(content) per row; in blocks of rows, so the (rows x trees) temporaries stay small."""
        if len(features) <= CHUNK_LINES:
            return self._predict(features)
        return np.concatenate([self._predict(features[i:i + CHUNK_LINES])
                               for i in range(0, len(features), CHUNK_LINES)])

    def _predict(self, features: np.ndarray) -> np.ndarray:
        n, width = features.shape
        if n == 0:
            return np.zeros(0)
        flat = np.ascontiguousarray(features, dtype=np.float64).ravel()
        offset = (np.arange(n, dtype=np.intp) * width)[:, None]
        node = self._root_child + (flat.take(offset + self._root_feature) > self._root_cut)
        for _ in range(self.depth - 1):
            at = self._feature.take(node)
            at += offset
            above = flat.take(at) > self._cut.take(node)
            node = self._child.take(node)
            node += above
        raw = self.baseline + self._value.take(node).sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


@lru_cache(maxsize=4)
def load_model(path: str | Path | None = None) -> Model:
    """The shipped classifier (``data/boilerplate.json``) or one at ``path``; cached per process."""
    with open(path or DEFAULT_MODEL, encoding="utf-8") as f:
        return Model(json.load(f))


#: Lines featurised and scored in one pass by :func:`classify_pages`: some dozens of pages spread numpy's
#: per-call cost (per page: ~0.27 ms of ~0.86), while all 22k lines of the gold pages at once cost more per
#: line than 2,000 (their arrays leave the cache).
CHUNK_LINES = 2048


def classify_pages(pages: Sequence[Lines], model: Model | None = None) -> list[tuple[str, str, float]]:
    """Per page of :func:`page_lines` output: (main text, the lines cut as boilerplate, their share of the
    characters). Pages are scored together, each as it would be alone.

    The share is measured against the lines the classifier read (resiliparse's main content, or the
    whole page where that was short: :func:`page_lines`), so 0.0 means it cut nothing; a high share flags
    a page that was mostly furniture.
    """
    model = model or load_model()
    results = [("", "", 0.0)] * len(pages)
    chunk: list[int] = []
    lines = 0
    for i, page in enumerate(pages):
        if page[1]:
            chunk.append(i)
            lines += len(page[1])
        if chunk and (lines >= CHUNK_LINES or i == len(pages) - 1):
            keep = model.predict(pages_features([pages[k] for k in chunk])) >= model.threshold
            at = 0
            for k in chunk:
                texts = pages[k][1]
                kept = [t for t, m in zip(texts, keep[at:at + len(texts)], strict=True) if m]
                cut = [t for t, m in zip(texts, keep[at:at + len(texts)], strict=True) if not m]
                at += len(texts)
                total = sum(map(len, texts))
                results[k] = ("\n".join(kept), "\n".join(cut), (total - sum(map(len, kept))) / max(total, 1))
            chunk, lines = [], 0
    return results
