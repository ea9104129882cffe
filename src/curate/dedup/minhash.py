"""MinHash LSH near-duplicate removal across the whole corpus, as shuffle rounds with bounded memory.

Rounds (each a map → hash partition → reduce over Parquet, resumable from its marker):

1. ``minhash_signatures`` (documents [+ earlier corpora]): shingle and sign every still-kept document,
   vectorised over whole batches; the reduce gives each document a compact node id (partition << 32 | row)
   and writes the signatures, the stage's lasting artefact, under ``work/``.
2. ``buckets``: every band of every signature is a bucket key; each bucket links its members to its
   smallest node (a star, never all pairs, so a bucket of 10^5 templated pages costs 10^5 edges).
3. ``large_star_<i>`` / ``small_star_<i>``: connected components by alternating large-star and small-star
   (Kiveris et al., 2014), each a shuffle of edges keyed by node, until a large-star changes nothing: every
   node then points at its component's minimum. No process ever holds all edges or all signatures.
4. ``members``: join the component labels with the signatures of the nodes in a component.
5. ``clusters``: per component, the representative (by ``keep``), and every other member is removed if it
   is similar enough to a representative: exact Jaccard of the shingle sets when ``verify`` (drops LSH
   false positives and chains), the signature estimate otherwise (the datatrove/FineWeb behaviour keeps
   no threshold at all; here ``threshold`` always means the Jaccard the removal needed).

Hash family (so ``datasketch`` can load and query the signatures): shingles are word n-grams of the
normalised text (see :func:`reference_shingles`), each a 32-bit value; signatures are datasketch's
``affine32`` scheme, ``MinHash(num_perm=bands*rows, seed=seed, scheme="affine32", hashfunc=int)`` updated
with those values gives the same hash values (``tests/dedup/test_minhash.py`` asserts it).

Word split: white space after Unicode normalisation; every Han, Hiragana, Katakana, Thai, Lao, Khmer and
Myanmar character is a word of its own, so text in scripts written without spaces gets character n-grams
instead of one "word" per sentence.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.commit import round_output_glob
from curate.execute import PARTITION_COLUMN, UNIT_COLUMN
from curate.registry import register
from curate.stage import GlobalStage, RoundResult, ShuffleRound, StageParams, UnitData

REASON = "near_duplicate"
SIGNATURE_ROUND = "minhash_signatures"
#: Schema metadata key of signature files: the parameters that made them (a later run checks them).
METADATA_KEY = b"curate.minhash"
#: Characters of scripts written without spaces: each is a word of its own.
_NO_SPACE_SCRIPTS = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
_MASK64 = (1 << 64) - 1
_SHINGLE_MULTIPLIER = 0x9E3779B97F4A7C15
#: Shingle hashes per chunk of the signature kernel: the (perms × chunk) uint32 block (~4 MB) stays in
#: cache (1.6× faster than 16 MB blocks here).
_CHUNK_SHINGLES = 1 << 13
#: Documents signed at a time by a unit's map: bounds the kernel's memory (~100 MB at 2 kB per document).
SIGN_BATCH_ROWS = 8192
#: Rounds of large-star/small-star after which the stage gives up (components converge in O(log² n)).
MAX_COMPONENT_ITERATIONS = 40


class MinHashParams(StageParams):
    ngram: int = Field(5, ge=1, description="shingle length in words (FineWeb, datatrove: 5)")
    bands: int = Field(20, ge=1, description="LSH bands; with rows=6 a pair at Jaccard 0.8 becomes a candidate "
                       "with probability 0.998, at 0.5 with 0.27 (`curate dedup --explain` prints the S-curve)")
    rows: int = Field(6, ge=1, description="hashes per band; bands*rows = permutations (120)")
    seed: int = Field(1, description="seed of the permutations (datasketch's `seed`)")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard at or above which two documents are duplicates")
    verify: bool = Field(True, description="check each removal by the exact Jaccard of the shingle sets (costs "
                         "~4 bytes per word of work/ storage); off: by the signature estimate")
    lowercase: bool = True
    punctuation: bool = Field(True, description="Unicode punctuation and symbols separate words")
    digits: bool = Field(False, description="map every digit to 0 (dates, counters and prices differ)")
    keep: Literal["earliest", "longest", "min_id", "highest_score"] = Field(
        "earliest", description="the representative of a cluster: earliest fetch time, longest text, smallest "
        "id, or highest value of `score_column`; ties break on the smallest id")
    score_column: str | None = Field(None, description="column ranked by keep: highest_score (e.g. a classifier's)")
    against: list[str] = Field(default_factory=list, description="output folders of earlier finished runs: "
                               "documents duplicating their kept documents are removed; they are not rewritten")
    max_representatives: int = Field(1024, ge=1, description="per cluster, the representatives a member is "
                                     "compared with (bounds pathological clusters; beyond it a member is kept)")

    @model_validator(mode="after")
    def _check(self) -> MinHashParams:
        if (self.keep == "highest_score") != (self.score_column is not None):
            raise ValueError("keep: highest_score needs score_column, and score_column needs keep: highest_score")
        if self.bands * self.rows > 1024:
            raise ValueError(f"bands*rows = {self.bands * self.rows} permutations; at most 1024")
        return self

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def family(self) -> dict:
        """What makes two signatures comparable (stored with them; a later run's `against` checks it)."""
        return {"scheme": "curate-words-v1/datasketch-affine32", "num_perm": self.num_perm, "seed": self.seed,
                "ngram": self.ngram, "lowercase": self.lowercase, "punctuation": self.punctuation,
                "digits": self.digits}


# ---- shingles and signatures -------------------------------------------------------------------------

class WordNormalisation(Protocol):
    """What :func:`split_words` needs of a stage's parameters (MinHash's, decontamination's)."""

    lowercase: bool
    punctuation: bool
    digits: bool


def _token_hash(token: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(token.encode("utf-8"))


def _hash_words(words: pa.Array) -> np.ndarray:
    """:func:`_token_hash` of every word: xxh3 mapped straight over the UTF-8 bytes (~5× a generator of
    ``str.encode`` calls, the one Python-level step of :func:`split_words`)."""
    import xxhash

    return np.fromiter(map(xxhash.xxh3_64_intdigest, words.cast(pa.large_binary()).to_pylist()), np.uint64,
                       len(words))


def _combine(hashes: list[int]) -> int:
    """A shingle's 32-bit value from its words' 64-bit hashes (mirrored, vectorised, in :func:`shingle_hashes`)."""
    h = hashes[0]
    for w in hashes[1:]:
        h = ((h * _SHINGLE_MULTIPLIER) & _MASK64) ^ w
    return (h ^ (h >> 32)) & 0xFFFFFFFF


def _words_of_tokens(tokens: pa.Array, params: WordNormalisation) -> pa.ListArray:
    """White-space tokens → their words: NFKC, punctuation and symbols as separators, digits → 0, a word
    per character of scripts without spaces (a token may give 0 words, e.g. "—", or several, "well-known").
    One definition (RE2's Unicode classes) for the vectorised kernel and the reference alike."""
    normal = pc.utf8_normalize(tokens, "NFKC")
    if params.punctuation:
        normal = pc.replace_substring_regex(normal, r"[\p{P}\p{S}]", " ")
    if params.digits:
        normal = pc.replace_substring_regex(normal, r"\p{Nd}", "0")
    normal = pc.replace_substring_regex(normal, f"({_NO_SPACE_SCRIPTS})", r" \1 ")
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(normal))


def reference_shingles(text: str, params: MinHashParams | None = None) -> set[int]:
    """The shingle values of one document, one at a time (Python's white-space split, words through the
    same normalisation, n-grams and their hashes in plain Python): the definition the kernel follows.

    Feed them to ``datasketch.MinHash(num_perm, seed, scheme="affine32", hashfunc=int)`` to query the
    stored signatures. A document of fewer than ``ngram`` words is one shingle of all its words.
    """
    params = params or MinHashParams()
    if params.lowercase:
        text = text.lower()
    tokens = text.split()
    words = [w for ws in _words_of_tokens(pa.array(tokens, pa.string()), params).to_pylist() for w in ws if w]
    hashes = [_token_hash(w) for w in words]
    if not hashes:
        return set()
    n = params.ngram
    if len(hashes) < n:
        return {_combine(hashes)}
    return {_combine(hashes[i:i + n]) for i in range(len(hashes) - n + 1)}


#: ASCII white space (what ``str.split`` splits on below 0x80); other Unicode white space is split per
#: distinct token.
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True


def _tokens(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """White-space tokens of every document, each with its trailing white space, as a zero-copy view of
    the text buffer (token boundaries found in numpy over the bytes, ~5× Arrow's split), and each
    document's offsets into them."""
    texts = pa.array(texts, pa.large_string()) if texts.offset or texts.null_count else texts.cast(pa.large_string())
    bounds = np.frombuffer(texts.buffers()[1], np.int64)[: len(texts) + 1]
    data = np.frombuffer(texts.buffers()[2], np.uint8)[: bounds[-1]] if bounds[-1] else np.zeros(0, np.uint8)
    space = _ASCII_SPACE[data]
    cut = np.zeros(len(data) + 1, dtype=bool)
    np.less(space[1:], space[:-1], out=cut[1:-1])  # a word begins after white space ...
    cut[bounds] = True  # ... and every document begins a token
    cuts = np.flatnonzero(cut).astype(np.int64, copy=False)
    tokens = pa.LargeStringArray.from_buffers(len(cuts) - 1, pa.py_buffer(cuts), texts.buffers()[2])
    return tokens, np.searchsorted(cuts, bounds)


def split_words(texts: pa.Array, params: WordNormalisation) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes (64-bit xxh3 of the normalised word) of every document, flattened, and each document's
    offsets into them: the words MinHash shingles and decontamination n-grams are made of.

    The text is lowercased in Arrow and cut at white space in numpy; the rest of the normalisation (NFKC,
    punctuation, digits, scripts without spaces) runs once per distinct token, not once per token.
    """
    if params.lowercase:
        texts = pc.utf8_lower(texts)
    tokens, offsets = _tokens(texts)
    encoded = pc.dictionary_encode(tokens)
    distinct = encoded.dictionary
    words = _words_of_tokens(distinct, params)
    word_values = pc.list_flatten(words)
    nonempty = pc.greater(pc.binary_length(word_values), 0)  # a token of only punctuation: [""]
    word_values = word_values.filter(nonempty)
    parents = pc.list_parent_indices(words).filter(nonempty).to_numpy(zero_copy_only=False)
    word_offsets = np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=len(distinct)))])
    word_codes = pc.dictionary_encode(word_values)
    word_hashes = _hash_words(word_codes.dictionary)
    per_distinct = pa.LargeListArray.from_arrays(
        pa.array(word_offsets, pa.int64()), pa.array(word_hashes[word_codes.indices.to_numpy(zero_copy_only=False)]))
    stream = pc.take(per_distinct, encoded.indices)  # the token stream → its words (a ragged gather, in C++)
    ends = stream.offsets.to_numpy()
    return stream.values.to_numpy()[ends[0]:ends[-1]], (ends - ends[0])[offsets]


def shingle_hashes(texts: pa.Array | pa.ChunkedArray, params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit shingle values of every document (equal to :func:`reference_shingles`, with repeats),
    flattened, and each document's offsets into them."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    texts = pc.fill_null(texts, "")
    words, doc_offsets = split_words(texts, params)
    n = params.ngram
    lengths = np.diff(doc_offsets)
    m = len(words)
    h = words[: max(m - n + 1, 0)].copy()  # h[i]: the n-gram starting at word i (valid if inside its doc)
    with np.errstate(over="ignore"):
        for j in range(1, n):
            h = (h * np.uint64(_SHINGLE_MULTIPLIER)) ^ words[j: m - n + 1 + j]
    counts = np.maximum(lengths - n + 1, 0)
    total = int(counts.sum())
    starts = np.repeat(doc_offsets[:-1] - (np.cumsum(counts) - counts), counts) + np.arange(total)
    docs_of = np.repeat(np.arange(len(lengths)), counts)
    values = h[starts]
    # documents shorter than n words: one shingle of all their words
    short = np.nonzero((lengths > 0) & (lengths < n))[0]
    if len(short):
        short_values = np.empty(len(short), np.uint64)
        for k, d in enumerate(short):
            value = int(words[doc_offsets[d]])
            for w in words[doc_offsets[d] + 1: doc_offsets[d + 1]]:
                value = ((value * _SHINGLE_MULTIPLIER) & _MASK64) ^ int(w)
            short_values[k] = value
        values = np.concatenate([values, short_values])
        docs_of = np.concatenate([docs_of, short])
        order = np.argsort(docs_of, kind="stable")
        values, docs_of = values[order], docs_of[order]
    folded = (values ^ (values >> np.uint64(32))).astype(np.uint32)  # the cast keeps the low 32 bits
    offsets = np.searchsorted(docs_of, np.arange(len(lengths) + 1))
    return folded, offsets


def permutations(params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters for ``seed`` (odd multipliers a, offsets b)."""
    gen = np.random.RandomState(params.seed)
    a = gen.randint(0, 1 << 31, params.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, params.num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, which datasketch applies to every input hash before permuting it."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def signatures(shingles: np.ndarray, offsets: np.ndarray, params: MinHashParams) -> np.ndarray:
    """MinHash signatures (documents × permutations, uint32) of flattened shingle values.

    One (permutations × chunk) block per chunk of shingles: a*h+b in uint32 (the wrap-around is the
    modulo), then a segmented minimum per document. A document without shingles gets all 0xFFFFFFFF.
    """
    a, b = permutations(params)
    n_docs = len(offsets) - 1
    out = np.full((params.num_perm, n_docs), 0xFFFFFFFF, dtype=np.uint32)
    mixed = _fmix32(shingles)
    nonempty = np.nonzero(np.diff(offsets) > 0)[0]
    i = 0
    while i < len(nonempty):
        # documents nonempty[i:j] whose shingles fit one chunk (at least one document)
        limit = offsets[nonempty[i]] + _CHUNK_SHINGLES
        j = max(i + 1, int(np.searchsorted(offsets[nonempty + 1], limit, side="right")))
        docs = nonempty[i:j]
        lo, hi = offsets[docs[0]], offsets[docs[-1] + 1]
        with np.errstate(over="ignore"):
            block = a[:, None] * mixed[None, lo:hi]
            block += b[:, None]
        # segment starts of these docs; empty docs in between were skipped, so starts are increasing
        out[:, docs] = np.minimum.reduceat(block, offsets[docs] - lo, axis=1)
        i = j
    return out.T.copy()


def estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard: the share of equal signature values (rows of ``a`` against row ``b``)."""
    return (a == b).mean(axis=-1)


class _ShingleSets:
    """A cluster partition's shingle lists, as numpy slices made into sets only for the rows compared."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        self.valid = lists.is_valid().to_numpy(zero_copy_only=False)
        self.offsets = lists.offsets.to_numpy()  # absolute positions in .values, even for a sliced array
        self.values = lists.values.to_numpy(zero_copy_only=False)
        self._unique: dict[int, np.ndarray] = {}

    def has(self, row: int) -> bool:
        return bool(self.valid[row])

    def get(self, row: int) -> np.ndarray:
        if row not in self._unique:
            self._unique[row] = np.unique(self.values[self.offsets[row]:self.offsets[row + 1]])
        return self._unique[row]

    def jaccard(self, a: int, b: int) -> float:
        x, y = self.get(a), self.get(b)
        if not len(x) and not len(y):
            return 1.0
        inter = len(np.intersect1d(x, y, assume_unique=True))
        return inter / (len(x) + len(y) - inter)


def band_keys(sigs: np.ndarray, params: MinHashParams) -> np.ndarray:
    """One 63-bit bucket key per (document, band): the band's values and its index, mixed (documents ×
    bands, int64). Equal keys ⇔ equal bands (up to 2^-63 collisions, which only add a candidate)."""
    bands = sigs.reshape(len(sigs), params.bands, params.rows).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = np.broadcast_to(np.arange(params.bands, dtype=np.uint64)[None, :] * np.uint64(0xD6E8FEB86659FD93),
                            bands.shape[:2]).copy()
        for r in range(params.rows):
            h = (h ^ bands[:, :, r]) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
    return (h >> np.uint64(1)).astype(np.int64)


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(two documents of this Jaccard share at least one band): the LSH S-curve."""
    return 1 - (1 - np.asarray(similarity, dtype=float) ** rows) ** bands


def explain(params: MinHashParams) -> str:
    """The S-curve of a band layout as text: what ``curate dedup --explain`` prints."""
    b, r, t = params.bands, params.rows, params.threshold
    lines = [f"MinHash LSH: {b} bands x {r} rows = {params.num_perm} permutations, word {params.ngram}-grams, "
             f"threshold J >= {t}",
             f"  S-curve midpoint (1/b)^(1/r) = {(1 / b) ** (1 / r):.3f}; "
             f"estimate std at J={t}: {np.sqrt(t * (1 - t) / params.num_perm):.3f}",
             "  Jaccard  P(candidate)"]
    for j in (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0):
        p = float(candidate_probability(j, b, r))
        mark = "  <- threshold" if abs(j - t) < 1e-9 else ""
        lines.append(f"  {j:7.2f}  {p:12.4f}  {'#' * round(p * 40)}{mark}")
    miss = 1 - float(candidate_probability(t, b, r))
    lines.append(f"  a pair at the threshold is missed with probability {miss:.4f}; candidates below it are "
                 + ("checked by exact Jaccard (verify: true)" if params.verify else
                    "checked by the signature estimate (verify: false)"))
    return "\n".join(lines)


# ---- the stage ---------------------------------------------------------------------------------------

SIGNATURE_COLUMNS = ("key", "id", UNIT_COLUMN, "origin", "rank", "signature", "shingles")


@register
class MinHashDedup(GlobalStage):
    """Remove near-duplicates: all but one document of every cluster of documents at Jaccard >= threshold."""

    name = "minhash_dedup"
    Params = MinHashParams
    params: MinHashParams
    reads = ("id", "text", "fetch_time", "removed_by")
    reads_removed = False  # the kept corpus only
    report_order = (("removed", "descending"), ("cluster_id", "ascending"))

    def __init__(self, params: MinHashParams | None = None) -> None:
        super().__init__(params)
        if self.params.score_column:
            self.reads = (*type(self).reads, self.params.score_column)

    # -- rounds

    def rounds(self) -> Generator[ShuffleRound, RoundResult, None]:
        inputs: dict[str, tuple[str, ...]] = {}
        sources: list[str] = ["documents"]
        for k, folder in enumerate(self.params.against, start=1):
            folder = folder.rstrip("/")
            inputs[f"against{k}_signatures"] = (round_output_glob(folder, SIGNATURE_ROUND, "signatures"),)
            inputs[f"against{k}_kept"] = (f"{folder}/kept/*.parquet",)
            sources += [f"input:against{k}_signatures", f"input:against{k}_kept"]
        signed_result = yield ShuffleRound(SIGNATURE_ROUND, map=self.map_signatures, reduce=self.reduce_signatures,
                                           source=tuple(sources), inputs=inputs)
        signed = f"{SIGNATURE_ROUND}/signatures"
        result = yield ShuffleRound("buckets", map=self.map_buckets, reduce=self.reduce_buckets, source=signed)
        if not result.outputs.get("edges"):
            return  # no candidate pair anywhere
        edges = yield from self.components("buckets/edges")
        # labels go to the partitions holding their nodes' signatures (a node id starts with its partition)
        yield ShuffleRound("members", map=self.map_members, reduce=self.reduce_members, source=edges,
                           beside=(signed,), partitions=signed_result.partitions)
        yield ShuffleRound("clusters", map=self.map_clusters, reduce=self.reduce_clusters, source="members/members")

    def components(self, edges: str) -> Generator[ShuffleRound, RoundResult, str]:
        """Large-star / small-star rounds over the edges in source ``edges`` until neither changes an edge:
        then each component is a star centred on its smallest node. Returns the source of those edges."""
        for i in range(MAX_COMPONENT_ITERATIONS):
            large = yield ShuffleRound(f"large_star_{i:02d}", map=self.map_large_star,
                                       reduce=self.reduce_large_star, source=edges)
            small = yield ShuffleRound(f"small_star_{i:02d}", map=self.map_small_star, reduce=self.reduce_small_star,
                                       source=f"large_star_{i:02d}/edges")
            edges = f"small_star_{i:02d}/edges"
            if not large.outputs.get("changes") and not small.outputs.get("changes"):
                return edges
        raise RuntimeError(f"{self.name}: connected components did not converge in {MAX_COMPONENT_ITERATIONS} "
                           "iterations")

    # -- 1. signatures

    def map_signatures(self, unit: UnitData) -> pa.Table:
        if unit.source.endswith("_kept"):  # an earlier run's kept documents: their ids only
            ids = unit.read(["id"])["id"]
            return pa.table({"key": _earlier_keys(unit.source, ids), "id": ids,
                             "kept": pa.repeat(pa.scalar(True), len(ids))})
        if unit.source.endswith("_signatures"):
            return self._earlier_signatures(unit)
        rows = unit.read(list(self.reads))
        rows = rows.filter(pc.is_null(rows["removed_by"]))
        # in slices, so the kernel's temporaries stay bounded whatever the size of the unit
        return pa.concat_tables([self._sign(rows.slice(i, SIGN_BATCH_ROWS))
                                 for i in range(0, max(rows.num_rows, 1), SIGN_BATCH_ROWS)])

    def _sign(self, rows: pa.Table) -> pa.Table:
        p = self.params
        shingles, offsets = shingle_hashes(rows["text"], p)
        has = np.diff(offsets) > 0  # a document without a word has no signature and is never a duplicate
        sigs = signatures(shingles, offsets, p)[has]
        rows = rows.filter(pa.array(has))
        table = {"key": rows["id"], "id": rows["id"], "origin": pa.repeat(pa.scalar(0, pa.int8()), rows.num_rows),
                 "rank": self._rank(rows), "signature": _fixed_lists(sigs, p.num_perm)}
        if p.verify:
            table["shingles"] = _shingle_sets(shingles, offsets, has)
        return pa.table(table)

    def _rank(self, rows: pa.Table) -> pa.Array:
        """Sorts ascending to the preferred representative (nulls last)."""
        keep = self.params.keep
        if keep == "earliest":
            return pc.cast(rows["fetch_time"], pa.string())
        if keep == "longest":
            return pc.negate(pc.cast(pc.fill_null(pc.utf8_length(rows["text"]), 0), pa.float64()))
        if keep == "highest_score":
            return pc.negate(pc.cast(rows[self.params.score_column], pa.float64()))
        return pa.nulls(rows.num_rows, pa.float64())

    def _earlier_signatures(self, unit: UnitData) -> pa.Table:
        stored = json.loads(unit.metadata().get(METADATA_KEY, b"{}"))
        family = self.params.family()
        if stored.get("family") != family:
            raise ValueError(f"against: signatures in {unit.unit} were made with {stored.get('family')}, this run "
                             f"uses {family}; re-run the earlier corpus's dedup with the same parameters")
        rows = unit.read(["id", "origin", "signature", "shingles"])
        rows = rows.filter(pc.equal(rows["origin"], 0))  # its own documents, not ones it was deduped against
        k = int(unit.source.removeprefix("input:against").split("_")[0])
        return pa.table({"key": _earlier_keys(unit.source, rows["id"]), "id": rows["id"],
                         "origin": pa.repeat(pa.scalar(k, pa.int8()), rows.num_rows),
                         "signature": rows["signature"], "shingles": rows["shingles"]})

    def reduce_signatures(self, group: pa.Table) -> dict[str, pa.Table]:
        """Earlier corpora's signatures of documents still kept there, and this run's; a node id per row."""
        if "kept" in group.column_names or pc.any(pc.greater(group["origin"], 0)).as_py():
            kept_keys = group.filter(pc.fill_null(_column(group, "kept", pa.bool_()), False))["key"]
            signed = group.filter(pc.is_valid(group["signature"]))
            earlier = pc.fill_null(pc.greater(signed["origin"], 0), False)
            group = signed.filter(pc.or_(pc.invert(earlier), pc.is_in(signed["key"], kept_keys)))
        group = group.sort_by([("key", "ascending")])
        partition = int(group[PARTITION_COLUMN][0].as_py()) if group.num_rows else 0
        nodes = (np.int64(partition) << np.int64(32)) + np.arange(group.num_rows, dtype=np.int64)
        columns = {"node": pa.array(nodes), "id": group["id"],
                   UNIT_COLUMN: group[UNIT_COLUMN] if UNIT_COLUMN in group.column_names else
                   pa.nulls(group.num_rows, pa.string()),
                   "origin": group["origin"], "rank": _column(group, "rank", pa.null()),
                   "signature": group["signature"]}
        if "shingles" in group.column_names:
            columns["shingles"] = group["shingles"]
        table = pa.table(columns)
        meta = {METADATA_KEY: json.dumps({"family": self.params.family(), "stage": self.name}).encode()}
        return {"signatures": table.replace_schema_metadata(meta)}

    # -- 2. band buckets → star edges

    def map_buckets(self, unit: UnitData) -> pa.Table:
        rows = unit.read(["node", "signature"])
        sigs = _matrix(rows["signature"], self.params.num_perm)
        keys = band_keys(sigs, self.params)
        nodes = np.repeat(rows["node"].to_numpy(zero_copy_only=False), self.params.bands)
        return pa.table({"key": pa.array(keys.ravel()), "node": pa.array(nodes), UNIT_COLUMN: pa.nulls(len(nodes),
                                                                                                        pa.string())})

    def reduce_buckets(self, group: pa.Table) -> dict[str, pa.Table]:
        """Each bucket links its members to its smallest node; a pair found in several bands is one edge."""
        keys = group["key"].to_numpy(zero_copy_only=False)
        nodes = group["node"].to_numpy(zero_copy_only=False)
        order = np.lexsort((nodes, keys))
        keys, nodes = keys[order], nodes[order]
        first = np.concatenate([[True], keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, bool)
        bucket_min = nodes[np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))]
        link = nodes != bucket_min
        return {"edges": _edges(bucket_min[link], nodes[link])}

    # -- 3. connected components: large-star / small-star

    def map_large_star(self, unit: UnitData) -> pa.Table:
        e = unit.read(["u", "v"])
        u, v = e["u"].to_numpy(zero_copy_only=False), e["v"].to_numpy(zero_copy_only=False)
        return pa.table({"key": pa.array(np.concatenate([u, v])), "nbr": pa.array(np.concatenate([v, u])),
                         UNIT_COLUMN: pa.nulls(2 * len(u), pa.string())})

    def reduce_large_star(self, group: pa.Table) -> dict[str, pa.Table]:
        """Per node n with neighbourhood N: link every neighbour larger than n to min(N ∪ {n})."""
        key, nbr = _sorted_pairs(group)
        if not len(key):
            return {"edges": _edges(key, nbr)}
        starts, degree, minimum = _neighbourhoods(key, nbr)
        m = np.repeat(minimum, degree)
        larger = nbr > key
        changed = int(np.count_nonzero(larger & (m != key)))
        out = {"edges": _edges(m[larger], nbr[larger])}
        if changed:
            out["changes"] = pa.table({"changed": [changed]})
        return out

    def map_small_star(self, unit: UnitData) -> pa.Table:
        e = unit.read(["u", "v"])  # u < v: key by the larger end
        return pa.table({"key": e["v"], "nbr": e["u"], UNIT_COLUMN: pa.nulls(e.num_rows, pa.string())})

    def reduce_small_star(self, group: pa.Table) -> dict[str, pa.Table]:
        """Per node n with smaller neighbours N: link every node of N ∪ {n} to min(N ∪ {n})."""
        key, nbr = _sorted_pairs(group)
        if not len(key):
            return {"edges": _edges(key, nbr)}
        distinct = np.concatenate([[True], (key[1:] != key[:-1]) | (nbr[1:] != nbr[:-1])])
        key, nbr = key[distinct], nbr[distinct]
        starts, degree, minimum = _neighbourhoods(key, nbr)
        m = np.repeat(minimum, degree)
        out = {"edges": _edges(np.concatenate([m, minimum]), np.concatenate([nbr, key[starts]]))}
        changed = int(np.count_nonzero(degree > 1))  # one smaller neighbour: its edge stays as it was
        if changed:
            out["changes"] = pa.table({"changed": [changed]})
        return out

    # -- 4. component labels joined with signatures

    def map_members(self, unit: UnitData) -> pa.Table:
        e = unit.read(["u", "v"])  # converged: every edge is (component minimum, member)
        u, v = e["u"].to_numpy(zero_copy_only=False), e["v"].to_numpy(zero_copy_only=False)
        nodes = np.concatenate([v, u])
        return pa.table({"key": pa.array(nodes), "label": pa.array(np.concatenate([u, u])),
                         UNIT_COLUMN: pa.nulls(2 * len(u), pa.string()),
                         PARTITION_COLUMN: pa.array(nodes >> np.int64(32))})

    def reduce_members(self, group: pa.Table) -> dict[str, pa.Table]:
        """The signed rows of this partition (beside the shuffle) that have a component label, keyed by it."""
        columns = ["node", "id", UNIT_COLUMN, "origin", "rank", "signature"] + (["shingles"] if self.params.verify
                                                                                 else [])
        if "node" not in group.column_names:
            raise ValueError(f"{self.name} members: partition {group[PARTITION_COLUMN][0]} has component labels "
                             "but no signatures beside them")
        labelled = group.filter(pc.is_valid(group["label"]))
        signed = group.filter(pc.is_valid(group["node"])).select(columns)
        labels = labelled.group_by("key", use_threads=False).aggregate([("label", "min")])
        index = pc.index_in(signed["node"], labels["key"])
        members = signed.filter(pc.is_valid(index))
        label = pc.take(labels["label_min"], index.filter(pc.is_valid(index)))
        return {"members": members.set_column(0, "key", label)}

    # -- 5. one cluster per component: representatives and removals

    def map_clusters(self, unit: UnitData) -> pa.Table:
        columns = ["key", "id", UNIT_COLUMN, "origin", "rank", "signature"]
        if self.params.verify:
            columns.append("shingles")
        return unit.read(columns)

    def reduce_clusters(self, group: pa.Table) -> dict[str, pa.Table]:
        """Per cluster, in order of preference (earlier corpora first, then ``keep``, then id): a member
        similar enough to a representative already chosen is removed as its duplicate, else it becomes one."""
        p = self.params
        earlier_first = pc.negate(pc.cast(pc.greater(group["origin"], 0), pa.int8()))
        group = group.append_column("_earlier", earlier_first)
        group = group.sort_by([("key", "ascending"), ("_earlier", "ascending"), ("rank", "ascending"),
                               ("id", "ascending")])
        keys = group["key"].to_numpy(zero_copy_only=False)
        ids = group["id"].to_pylist()
        origin = group["origin"].to_numpy(zero_copy_only=False)
        sigs = _matrix(group["signature"], p.num_perm)
        sets = _ShingleSets(group["shingles"]) if p.verify else None
        removed: dict[str, list] = {n: [] for n in ("row", "duplicate_of", "similarity", "verified")}
        report: dict[str, list] = {n: [] for n in ("cluster_id", "size", "removed", "representatives",
                                                   "representative", "against", "min_similarity")}
        bounds = np.nonzero(np.concatenate([[True], keys[1:] != keys[:-1], [True]]))[0] if len(keys) else [0]
        sizes = np.zeros(len(keys), np.int64)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            sizes[lo:hi] = hi - lo
            reps: list[int] = []
            gone = 0
            lowest = None
            for row in range(lo, hi):
                match = self._match(row, reps, sigs, sets) if origin[row] == 0 else None
                if match is None:
                    reps.append(row)
                    continue
                rep, similarity, verified = match
                removed["row"].append(row)
                removed["duplicate_of"].append(ids[rep])
                removed["similarity"].append(similarity)
                removed["verified"].append(verified)
                gone += 1
                lowest = similarity if lowest is None else min(lowest, similarity)
            report["cluster_id"].append(int(keys[lo]))
            report["size"].append(hi - lo)
            report["removed"].append(gone)
            report["representatives"].append(len(reps))
            report["representative"].append(ids[lo])
            report["against"].append(bool(origin[lo] > 0))
            report["min_similarity"].append(lowest)
        rows = pa.array(removed["row"], pa.int64())
        similarity = pa.array(removed["similarity"], pa.float64())
        removals = pa.table({
            "id": pc.take(group["id"], rows),
            "reason": pa.repeat(pa.scalar(REASON), len(rows)),
            "score": similarity,
            "threshold": pa.repeat(pa.scalar(p.threshold), len(rows)),
            "duplicate_of": pa.array(removed["duplicate_of"], pa.string()),
            "cluster_id": pc.take(group["key"], rows),
            "cluster_size": pa.array(sizes[removed["row"]] if len(rows) else [], pa.int64()),
            "similarity": similarity,
            "verified": pa.array(removed["verified"], pa.bool_()),
            UNIT_COLUMN: pc.take(group[UNIT_COLUMN], rows),
        })
        return {"removals": removals, "report": pa.table(report, schema=_REPORT_SCHEMA)}

    def _match(self, row: int, reps: list[int], sigs: np.ndarray, sets: _ShingleSets | None
               ) -> tuple[int, float, bool] | None:
        """The representative ``row`` duplicates (and the similarity), or None."""
        if not reps:
            return None
        p = self.params
        recent = reps[-p.max_representatives:]
        estimates = estimate(sigs[recent], sigs[row])
        if sets is None or not sets.has(row):
            best = int(np.argmax(estimates))
            return (recent[best], float(estimates[best]), False) if estimates[best] >= p.threshold else None
        # verify the most promising few: an estimate far below the threshold cannot hide a duplicate
        slack = 4 * np.sqrt(p.threshold * (1 - p.threshold) / p.num_perm) + 1 / p.num_perm
        for k in np.argsort(-estimates, kind="stable")[:8]:
            if estimates[k] < p.threshold - slack:
                break
            rep = recent[k]
            if not sets.has(rep):  # an earlier corpus signed without shingle sets: the estimate decides
                if estimates[k] >= p.threshold:
                    return rep, float(estimates[k]), False
                continue
            similarity = sets.jaccard(row, rep)
            if similarity >= p.threshold:
                return rep, similarity, True
        return None


_REPORT_SCHEMA = pa.schema([
    pa.field("cluster_id", pa.int64()), pa.field("size", pa.int64()), pa.field("removed", pa.int64()),
    pa.field("representatives", pa.int64()), pa.field("representative", pa.string()),
    pa.field("against", pa.bool_()), pa.field("min_similarity", pa.float64()),
])


def _earlier_keys(source: str, ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Keys of an earlier corpus's rows: its number and the id, so they never meet this run's ids."""
    k = source.removeprefix("input:against").split("_")[0]
    return pc.binary_join_element_wise(pa.repeat(pa.scalar(f"\x1f{k}"), len(ids)), ids, "\x1f")


def _fixed_lists(matrix: np.ndarray, width: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.uint32()), width)


def _matrix(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A fixed-size list column of uint32 as a (rows × width) matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], pa.list_(pa.uint32(), width))
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), width)


def _shingle_sets(shingles: np.ndarray, offsets: np.ndarray, has: np.ndarray) -> pa.Array:
    """Each signed document's shingle values as they come (repeats included: sorting every document's set
    here would cost more than the signatures; the clusters round makes sets of the few it compares)."""
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(shingles, pa.uint32()))
    return lists.filter(pa.array(has))


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.ChunkedArray | pa.Array:
    return table[name] if name in table.column_names else pa.nulls(table.num_rows, type_)


def _sorted_pairs(group: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    key = group["key"].to_numpy(zero_copy_only=False)
    nbr = group["nbr"].to_numpy(zero_copy_only=False)
    order = np.lexsort((nbr, key))
    return key[order], nbr[order]


def _neighbourhoods(key: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per node of (key, nbr) pairs sorted by key: where its run starts, its degree, and min(N(n) ∪ {n})."""
    starts = np.nonzero(np.concatenate([[True], key[1:] != key[:-1]]))[0]
    degree = np.diff(np.append(starts, len(key)))
    return starts, degree, np.minimum(np.minimum.reduceat(nbr, starts), key[starts])


def _edges(u: np.ndarray, v: np.ndarray) -> pa.Table:
    """Distinct edges without self-loops; the next round's map keys them."""
    keep = u != v
    u, v = u[keep], v[keep]
    if len(u):
        order = np.lexsort((v, u))
        u, v = u[order], v[order]
        distinct = np.concatenate([[True], (u[1:] != u[:-1]) | (v[1:] != v[:-1])])
        u, v = u[distinct], v[distinct]
    return pa.table({"u": pa.array(u, pa.int64()), "v": pa.array(v, pa.int64())})
