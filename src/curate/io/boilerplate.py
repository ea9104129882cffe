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
import re
from collections import Counter
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL = Path(__file__).with_name("data") / "boilerplate.json"

_COMMENTS = False  # resiliparse comments= option of the base pass
_BLOCK = re.compile(r"<(/?)(p|li|h[1-6]|pre|ul|ol)\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.DOTALL)
_WORD = re.compile(r"\w+|\n")
_NO_DIGITS = dict.fromkeys(map(ord, "0123456789"))
_UPPER_START = re.compile(r"\b[^\W\d_a-zà-ÿ]")
# Words (lower case) that mark page furniture in the languages of the training pages (en, de, fr, ...);
# a set lookup rather than a regex alternation, which costs ~20x more per line.
_FURNITURE = frozenset(
    ["copyright", "rights", "reserved", "rechte", "advertisement", "advertising", "advertise", "ad", "ads", "anzeige", "werbung", "newsletter", "subscribe", "subscription", "subscribers", "abonnieren", "abonnement", "abo", "sign", "login", "logout", "anmelden", "registrieren", "register", "cookie", "cookies", "datenschutz", "datenschutzerklärung", "privacy", "terms", "impressum", "agb", "follow", "share", "shares", "teilen", "related", "read", "weiterlesen", "mehr", "könnte", "interessieren", "recommended", "comments", "comment", "kommentar", "kommentare", "click", "klicken", "tags", "tag", "categories", "category", "kategorie", "kategorien", "photo", "photos", "foto", "fotos", "image", "getty", "reuters", "ap", "afp", "dpa", "updated", "published", "posted", "veröffentlicht", "aktualisiert", "trending", "popular", "stories", "sponsored", "contact", "kontakt", "sitemap", "menu", "menü", "home", "startseite", "navigation", "facebook", "twitter", "whatsapp", "instagram", "linkedin", "pinterest", "email", "print", "drucken", "video", "videos"])
_STOP = frozenset(
    ["the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "was", "were", "be", "been", "it", "that", "this", "as", "at", "by", "from", "has", "have", "had", "he", "she", "they", "we", "you", "i", "his", "her", "their", "its", "not", "but", "which", "who", "will", "would", "said", "says", "der", "die", "das", "und", "oder", "ist", "sind", "war", "ein", "eine", "einen", "dem", "den", "des", "zu", "im", "in", "auf", "mit", "von", "für", "nicht", "sich", "auch", "es", "er", "sie", "wir", "ich", "bei", "aus", "nach", "wie", "als", "dass", "hat", "haben", "wird", "werden", "noch", "nur", "le", "la", "les", "et", "ou", "est", "sont", "un", "une", "des", "du", "de", "en", "dans", "pour", "avec", "sur", "pas", "que", "qui", "il", "elle", "el", "los", "las", "y", "es", "son", "un", "una", "del", "en", "con", "por", "para", "no", "que", "se", "su", "i", "w", "z", "na", "się", "nie", "do", "jest", "to", "że", "o"])
# One dict lookup per token instead of one per set: bit flags of what a token is.
_NEWLINE, _STOPWORD, _FURNITURE_WORD = 1, 2, 4
_TOKEN_CODE = {"\n": _NEWLINE}
for _word in _STOP | _FURNITURE:
    _TOKEN_CODE[_word] = (_STOPWORD if _word in _STOP else 0) | (_FURNITURE_WORD if _word in _FURNITURE else 0)
_KINDS = ("text", "p", "li", "h1", "h2", "h3", "h4", "pre", "link")
_KIND_INDEX = {kind: i for i, kind in enumerate(_KINDS)}
_HEADING = {"h5": "h4", "h6": "h4"}

LINE_FEATURES = (
    "kind", "log_chars", "log_words", "link_share", "n_links", "punct_per_word", "ends_sentence",
    "digit_share", "upper_word_share", "mean_word_len", "stop_share", "furniture", "duplicate",
    "long_p",
)
PAGE_FEATURES = ("rel_line", "rel_char", "log_page_chars", "page_long_p_share",
                 "before_first_long_p", "after_last_long_p", "lines_to_long_p")
_CONTEXT = ("log_chars", "link_share", "punct_per_word", "stop_share", "long_p", "furniture")
_WINDOWS = (1, 3, 8)
_CONTEXT_COLS = [LINE_FEATURES.index(name) for name in _CONTEXT]


def feature_names() -> list[str]:
    """Column names of :func:`line_features`' matrix, in order (the model file records them)."""
    names = list(LINE_FEATURES) + list(PAGE_FEATURES)
    for w in _WINDOWS:
        names += [f"{name}_prev{w}" for name in _CONTEXT] + [f"{name}_next{w}" for name in _CONTEXT]
    return names


def page_lines(html_text: str) -> tuple[list[str], list[str]]:
    """(raw minimal-HTML lines with text, their plain text) of resiliparse's main-content extraction."""
    from resiliparse.extract.html2text import extract_plain_text

    out = extract_plain_text(html_text, preserve_formatting="minimal_html", main_content=True, links=True,
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
            text = html_lib.unescape(text)
        text = text.strip()
        if text:
            keep_raws.append(raw)
            texts.append(text)
    raws = keep_raws
    return raws, texts


# Per-code-point classes for the vectorised character counts (index 256 = any code point above U+00FF).
_CP_DIGIT, _CP_PUNCT, _CP_UPPER, _CP_WORD, _CP_END = 1, 2, 4, 8, 16
_CP_CLASS = np.zeros(257, dtype=np.uint8)
_CP_CLASS[ord("0"):ord("9") + 1] |= _CP_DIGIT | _CP_WORD
_CP_CLASS[[ord(c) for c in ".,;:!?"]] |= _CP_PUNCT
_CP_CLASS[ord("A"):ord("Z") + 1] |= _CP_UPPER | _CP_WORD
_CP_CLASS[[c for c in range(0xC0, 0xDF) if c != 0xD7]] |= _CP_UPPER
_CP_CLASS[ord("a"):ord("z") + 1] |= _CP_WORD
_CP_CLASS[[ord("_"), 0xAA, 0xB5, 0xBA] + [c for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7)]] |= _CP_WORD
_CP_CLASS[256] |= _CP_WORD
_CP_CLASS[[ord(c) for c in '.!?:")\xbb']] |= _CP_END


def line_features(raws: list[str], texts: list[str]) -> np.ndarray:
    """One row of cheap features per line (see :func:`feature_names`). Character counts are numpy
    kernels over the page's code points; the Python loop body (block tag, link text, words) runs once
    per line."""
    n = len(texts)
    seen = Counter(texts)
    kind_col, link_col, nlink_col = [], [], []
    open_tag = "text"
    for raw, text in zip(raws, texts):
        kind = open_tag
        link_chars = n_links = 0
        if "<" in raw:
            first = True
            for m in _BLOCK.finditer(raw):
                tag = m.group(2)
                if tag == "ul" or tag == "ol":
                    continue
                if m.group(1):
                    open_tag = "text"
                else:
                    if first:
                        kind = tag
                        first = False
                    open_tag = tag
            if "<a" in raw:
                for inner in _LINK.findall(raw):
                    n_links += 1
                    link_chars += len((_TAG.sub("", inner) if "<" in inner else inner).strip())
                if kind == "text" and link_chars >= 0.9 * len(text):
                    kind = "link"
        kind_col.append(_KIND_INDEX[_HEADING.get(kind, kind)])
        link_col.append(link_chars)
        nlink_col.append(n_links)
    lens = np.fromiter(map(len, texts), dtype=np.intp, count=n)
    starts = np.zeros(n, dtype=np.intp)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    joined = "\n".join(texts)
    # Words of the whole page in one regex pass, "\n" tokens marking line ends.
    tokens = _WORD.findall(joined.lower())
    code = np.fromiter(map(_TOKEN_CODE.get, tokens, repeat(0)), dtype=np.uint8, count=len(tokens))
    newline = (code & _NEWLINE) != 0
    line_of = np.cumsum(newline)
    n_words = np.bincount(line_of, weights=~newline, minlength=n)
    n_stop = np.bincount(line_of, weights=(code & _STOPWORD) != 0, minlength=n)
    n_furniture = np.bincount(line_of, weights=(code & _FURNITURE_WORD) != 0, minlength=n)
    copyright_ = np.fromiter(("©" in t for t in texts), dtype=bool, count=n) if "©" in joined else False
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    cls = _CP_CLASS.take(np.minimum(cp, 256))
    word = (cls & _CP_WORD) != 0
    starts_word = word.copy()
    starts_word[1:] &= ~word[:-1]
    counts = np.add.reduceat(np.stack([
        (cls & _CP_DIGIT) != 0, (cls & _CP_PUNCT) != 0, word, starts_word & ((cls & _CP_UPPER) != 0),
    ], axis=1).astype(np.int32), starts, axis=0)
    last = starts + lens - 1
    last_cp = cp.take(last)
    ends = ((cls.take(last) & _CP_END) != 0) | (last_cp == 0x201D) | (last_cp == 0x201C)  # ” “
    chars = lens.astype(np.float64)
    kind_arr = np.array(kind_col, dtype=np.float64)
    nw = np.maximum(n_words, 1.0)
    link_share = np.minimum(1.0, np.array(link_col, dtype=np.float64) / chars)
    long_p = (chars >= 150) & (link_share < 0.3) & (kind_arr <= 2)  # text, p, li
    dup = np.fromiter((seen[t] > 1 for t in texts), dtype=bool, count=n)
    base = np.column_stack([
        kind_arr, np.log1p(chars), np.log1p(n_words), link_share,
        np.array(nlink_col, dtype=np.float64), counts[:, 1] / nw, ends, counts[:, 0] / chars,
        counts[:, 3] / nw, counts[:, 2] / nw, n_stop / nw,
        (chars < 400) & ((n_furniture > 0) | copyright_), dup, long_p,
    ]).astype(np.float64)
    return _add_context(base, lens)


def _add_context(base: np.ndarray, lens: np.ndarray) -> np.ndarray:
    n = base.shape[0]
    chars = lens.astype(np.float64)
    total = chars.sum() or 1.0
    long_p = base[:, LINE_FEATURES.index("long_p")]
    ar = np.arange(n)
    idx = ar.astype(np.float64)
    page = np.zeros((n, len(PAGE_FEATURES)))
    page[:, 0] = idx / max(1, n - 1)
    page[:, 1] = (np.cumsum(chars) - chars) / total
    page[:, 2] = np.log1p(total)
    page[:, 3] = (chars * long_p).sum() / total
    where = np.flatnonzero(long_p)
    if where.size:
        first, last = where[0], where[-1]
        page[:, 4] = idx < first
        page[:, 5] = idx > last
        pos = np.searchsorted(where, idx)
        left = np.abs(idx - where[np.clip(pos - 1, 0, where.size - 1)])
        right = np.abs(where[np.clip(pos, 0, where.size - 1)] - idx)
        page[:, 6] = np.log1p(np.minimum(left, right))
    else:
        page[:, 4] = 1.0
        page[:, 6] = np.log1p(n)
    ctx = base[:, _CONTEXT_COLS]
    csum = np.zeros((n + 1, ctx.shape[1]))
    np.cumsum(ctx, axis=0, out=csum[1:])
    out = np.empty((n, base.shape[1] + page.shape[1] + 2 * len(_WINDOWS) * ctx.shape[1]))
    out[:, :base.shape[1]] = base
    col = base.shape[1]
    out[:, col:col + page.shape[1]] = page
    col += page.shape[1]
    width = ctx.shape[1]
    for w in _WINDOWS:
        lo = np.maximum(ar - w, 0)
        hi = np.minimum(ar + w + 1, n)
        prev_n = np.maximum(ar - lo, 1)[:, None]
        next_n = np.maximum(hi - ar - 1, 1)[:, None]
        out[:, col:col + width] = (csum[:n] - csum[lo]) / prev_n
        out[:, col + width:col + 2 * width] = (csum[hi] - csum[1:]) / next_n
        col += 2 * width
    return out


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
        self._roots = np.array(roots, dtype=np.intp)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(content) per row."""
        n, width = features.shape
        if n == 0:
            return np.zeros(0)
        flat = np.ascontiguousarray(features, dtype=np.float64).ravel()
        offset = (np.arange(n, dtype=np.intp) * width)[:, None]
        node = np.broadcast_to(self._roots, (n, self._roots.size))
        for _ in range(self.depth):
            x = flat.take(offset + self._feature.take(node))
            node = self._child.take(node) + (x > self._cut.take(node))
        raw = self.baseline + self._value.take(node).sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


@lru_cache(maxsize=4)
def load_model(path: str | Path | None = None) -> Model:
    """The shipped classifier (``data/boilerplate.json``) or one at ``path``; cached per process."""
    with open(path or DEFAULT_MODEL, encoding="utf-8") as f:
        return Model(json.load(f))


def extract_main_text(html_text: str, model: Model | None = None) -> tuple[str, float]:
    """(main text, share of characters dropped as boilerplate) of one decoded page."""
    text, _, share = split_main_text(html_text, model)
    return text, share


def split_main_text(html_text: str, model: Model | None = None) -> tuple[str, str, float]:
    """(main text, the lines cut as boilerplate, their share of the characters) of one decoded page.

    The share is measured against resiliparse's main-content text, so 0.0 means the classifier agreed
    with resiliparse; a high share flags a page that was mostly furniture.
    """
    model = model or load_model()
    raws, texts = page_lines(html_text)
    if not texts:
        return "", "", 0.0
    keep = model.predict(line_features(raws, texts)) >= model.threshold
    kept = [t for t, k in zip(texts, keep, strict=True) if k]
    cut = [t for t, k in zip(texts, keep, strict=True) if not k]
    total = sum(len(t) for t in texts)
    return "\n".join(kept), "\n".join(cut), (total - sum(len(t) for t in kept)) / max(total, 1)
