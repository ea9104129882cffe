"""Source keys and the source_quarantine global stage (partial → shuffle by key → decide), without Ray."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import lxml.html
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from pydantic import ValidationError
from warcio.archiveiterator import ArchiveIterator

from curate.config import build_stage
from curate.registry import get_stage
from curate.schema import DOCUMENT_SCHEMA, mark_removed
from curate.sources import SourceRule, SourceRules, source_keys
from curate.stage import REMOVALS_SCHEMA
from curate.stages.quarantine import EXAMPLE_CHARS, PARTIAL_SCHEMA, REPORT_SCHEMA, QuarantineParams, SourceQuarantine


def _load_fixture_builder():
    """tests/ is not a package (and has no conftest), so load the builder by path."""
    path = Path(__file__).resolve().parents[1] / "fixtures" / "build_reddit_warc.py"
    spec = importlib.util.spec_from_file_location("build_reddit_warc", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


build = _load_fixture_builder()


def keys(*urls: str | None, rules: SourceRules | None = None) -> list[str | None]:
    return source_keys(pa.array(urls, pa.string()), rules or SourceRules()).to_pylist()


# --- source_keys ---------------------------------------------------------------------------------


def test_reddit_keys_by_subreddit_on_every_host_and_case() -> None:
    assert keys(
        "https://www.reddit.com/r/microwavegang/comments/3a0000/mmmm/",
        "https://old.reddit.com/r/MicrowaveGang/",
        "http://np.reddit.com/r/microwavegang/comments/x/y/?context=3",
        "https://m.reddit.com/r/microwavegang",
        "https://www.reddit.com/r/MachineLearning/comments/1aw7/x/",
    ) == ["reddit.com/r/microwavegang"] * 4 + ["reddit.com/r/machinelearning"]


def test_reddit_users_and_other_pages_fold_hosts() -> None:
    assert keys(
        "https://www.reddit.com/user/Some_One/comments/",
        "https://old.reddit.com/u/some_one",
        "https://old.reddit.com/comments/3a0000",
        "https://www.reddit.com/",
        "https://notreddit.com/r/microwavegang/",
    ) == ["reddit.com/user/some_one", "reddit.com/user/some_one", "reddit.com", "reddit.com", "notreddit.com"]


def test_stackexchange_keys_by_site() -> None:
    assert keys(
        "https://math.stackexchange.com/questions/1/why",
        "https://cooking.stackexchange.com/forum/not-a-board/",
        "https://meta.math.stackexchange.com/questions/2",
    ) == ["math.stackexchange.com", "cooking.stackexchange.com", "meta.math.stackexchange.com"]


def test_forum_boards() -> None:
    assert keys(
        "http://forum.example.org/viewforum.php?f=12",
        "http://forum.example.org/viewtopic.php?f=12&t=345",
        "http://forum.example.org/viewtopic.php?t=345",  # no board in the URL: the host
        "http://example.org/forums/forumdisplay.php?f=7",
        "http://example.org/forums/forumdisplay.php?7-General-Chat",
        "http://example.org/index.php?board=5.0",
        "http://example.org/index.php/board,5.0.html",
        "https://example.org/forum/Cooking/some-thread-123/",
        "https://example.org/forums/general-discussion.5/",
        "https://example.org/forum/index.php",
        "https://example.org/board/news?page=2",
        "https://boards.4chan.org/g/thread/1",
        "https://groups.google.com/g/comp.lang.python/c/abc",
    ) == [
        "forum.example.org/viewforum.php?f=12",
        "forum.example.org/viewforum.php?f=12",
        "forum.example.org",
        "example.org/forumdisplay.php?f=7",
        "example.org/forumdisplay.php?f=7",
        "example.org/index.php?board=5",
        "example.org/index.php?board=5",
        "example.org/forum/cooking",
        "example.org/forum/general-discussion.5",
        "example.org",
        "example.org/board/news",
        "4chan.org/g",
        "groups.google.com/g/comp.lang.python",
    ]


def test_default_is_the_normalised_host() -> None:
    assert keys(
        "https://WWW.Example.COM:8080/a/b?c=d#e",
        "http://user:pw@blog.example.com/post",
        "https://example.com./",
        "http://[::1]:8080/x",
        None,
        "not a url",
        "file:///etc/passwd",
    ) == ["example.com", "blog.example.com", "example.com", "[::1]", None, None, None]


def test_chunked_input_and_extra_rules_first() -> None:
    rules = SourceRules(
        extra_rules=[
            SourceRule(host="*.blogspot.com", key="blogspot.com"),
            SourceRule(host_regex=r"^reddit\.com$", key="reddit"),
        ]
    )
    urls = pa.chunked_array([["https://a.blogspot.com/x"], ["https://www.reddit.com/r/books/"]])
    assert source_keys(urls, rules).to_pylist() == ["blogspot.com", "reddit"]


def test_rules_from_yaml() -> None:
    text = """
    rules:
      - {host: "*.fandom.com", path: '^/wiki/(?P<page>[^/]+)', key: "{host}/wiki"}
      - {host_regex: '^lemmy\\.[a-z]+$', path: '^/c/(?P<community>[A-Za-z0-9_]+)', key: "{host}/c/{community}"}
    """
    rules = SourceRules.model_validate(yaml.safe_load(text))
    assert keys(
        "https://starwars.fandom.com/wiki/Yoda",
        "https://lemmy.world/c/Python/post/1",
        "https://www.reddit.com/r/x",
        rules=rules,
    ) == ["starwars.fandom.com/wiki", "lemmy.world/c/python", "reddit.com"]  # defaults replaced: reddit is a host


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"key": "{host}"}, "exactly one of"),
        ({"host": "*", "host_regex": ".*", "key": "{host}"}, "exactly one of"),
        ({"host": "*", "path": "/r/(?P<name>x)", "key": "{host}/{board}"}, "uses ['board']"),
        ({"host": "*", "path": "/r/([a-z]+)", "key": "{host}"}, "unnamed groups"),
        ({"host": "*", "path": "/r/(?=x)(?P<name>x)", "key": "{host}"}, "invalid perl operator"),
        ({"host": "*", "key": "{host}", "hots": "typo"}, "Extra inputs"),
    ],
)
def test_invalid_rules_fail_at_load(rule: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        SourceRule.model_validate(rule)


# --- partial / decide on hand-made tables ----------------------------------------------------------


def documents(rows: list[tuple[str, str, str | None, str | None]], text: str = "text") -> pa.Table:
    """Rows of (id, source, removed_by, reason) with the stage's columns, typed as in the document schema."""
    columns = {
        "id": [r[0] for r in rows],
        "url": [f"https://{r[1]}/{r[0]}" for r in rows],
        "source": [r[1] for r in rows],
        "removed_by": [r[2] for r in rows],
        "reason": [r[3] for r in rows],
        "text": [f"{text} {r[0]}" for r in rows],
    }
    return pa.table({name: pa.array(values, DOCUMENT_SCHEMA.field(name).type) for name, values in columns.items()})


def source(name: str, docs: int, pathological: int, removed_other: int = 0) -> list[tuple]:
    """A source with ``pathological`` repetition removals, ``removed_other`` language removals, the rest kept."""
    rows = []
    for i in range(docs):
        removed = ("repetition", "char_run") if i < pathological else (None, None)
        if pathological <= i < pathological + removed_other:
            removed = ("language", "not_en")
        rows.append((f"{name}-{i:02d}", name, *removed))
    return rows


def run(stage: SourceQuarantine, batches: list[pa.Table], partitions: int = 3) -> tuple[pa.Table, pa.Table]:
    """What the runner does: partial per batch, shuffle by key into partitions, decide per partition."""
    rows = pa.concat_tables([stage.partial(b) for b in batches])
    order = {k: i for i, k in enumerate(sorted(set(rows["key"].to_pylist())))}
    part = pa.array([order[k] % partitions for k in rows["key"].to_pylist()])
    results = [stage.decide(rows.filter(pc.equal(part, p))) for p in range(partitions)]
    removals = pa.concat_tables([r for r, _ in results]).sort_by("id")
    report = pa.concat_tables([r for _, r in results]).sort_by("source")
    return removals, report


def test_partial_rows() -> None:
    batch = documents(
        [
            ("a", "s.com", None, None),
            ("b", "s.com", "repetition", "char_run"),
            ("c", "s.com", "language", "not_en"),
            ("d", "s.com", "gopher_repetition", "dup_line_frac"),
            ("e", None, "repetition", "char_run"),
        ],
        text="m" * 1000,
    )
    stage = SourceQuarantine(QuarantineParams(pathological_reasons=("dup_line_frac",)))
    out = stage.partial(batch)
    assert out.schema == PARTIAL_SCHEMA
    assert out.to_pydict() == {
        "key": ["s.com"] * 4,  # 'e' has no source: it belongs to none
        "id": ["a", "b", "c", "d"],
        "active": [True, False, False, False],
        "pathological": [False, True, False, True],
        "example": [None, "m" * EXAMPLE_CHARS, None, "m" * EXAMPLE_CHARS],
    }


def test_partial_recomputes_keys_with_rules() -> None:
    batch = documents([("a", "ignored", None, None)]).set_column(
        1, "url", pa.array(["https://old.reddit.com/r/MicrowaveGang/comments/x/"])
    )
    out = SourceQuarantine(QuarantineParams(rules=SourceRules())).partial(batch)
    assert out["key"].to_pylist() == ["reddit.com/r/microwavegang"]


def test_decide_thresholds_at_the_edges() -> None:
    rows = (
        source("exactly-min-docs", 5, 3)  # 5 docs (= min_docs), 0.6 ≥ 0.5: quarantined
        + source("below-min-docs", 4, 4)  # 100 % pathological but only 4 docs: too little evidence
        + source("exactly-share", 10, 5, removed_other=2)  # 5/10 = 0.5 exactly: quarantined, 3 kept go
        + source("just-below-share", 10, 4)  # 0.4: keeps its 6 healthy pages
        + source("healthy", 20, 0)
    )
    batch = documents(rows)
    removals, report = run(SourceQuarantine(), [batch.slice(0, 20), batch.slice(20)])

    assert removals.schema == REMOVALS_SCHEMA
    assert removals["id"].to_pylist() == [f"exactly-min-docs-0{i}" for i in (3, 4)] + [
        f"exactly-share-0{i}" for i in (7, 8, 9)
    ]
    assert set(removals["reason"].to_pylist()) == {"source_quarantine"}
    assert removals["score"].to_pylist() == [0.6, 0.6, 0.5, 0.5, 0.5]
    assert set(removals["threshold"].to_pylist()) == {0.5}

    assert report.schema == REPORT_SCHEMA
    assert report.to_pydict() == {
        "source": ["exactly-min-docs", "exactly-share"],
        "docs": [5, 10],
        "pathological": [3, 5],
        "share": [0.6, 0.5],
        "removed": [2, 3],
        "example": ["text exactly-min-docs-00", "text exactly-share-00"],
    }


def test_decide_share_is_exact_for_decimal_thresholds() -> None:
    """3 of 10 meets max_pathological_share 0.3 (0.3 * 10 would be 3.0000000000000004)."""
    stage = SourceQuarantine(QuarantineParams(max_pathological_share=0.3, min_docs=10))
    removals, report = run(stage, [documents(source("s", 10, 3))])
    assert report["share"].to_pylist() == [0.3]
    assert removals.num_rows == 7


def test_decide_ignores_row_order_and_handles_empty_groups() -> None:
    stage = SourceQuarantine()
    rows = stage.partial(documents(source("a", 6, 6) + source("b", 8, 5)))
    forward = stage.decide(rows)
    backward = stage.decide(rows.take(pa.array(range(rows.num_rows - 1, -1, -1))))
    assert forward[0].sort_by("id").equals(backward[0].sort_by("id"))
    assert forward[1].equals(backward[1])
    assert forward[1]["removed"].to_pylist() == [0, 3]  # 'a' was already all removed, 'b' loses 3

    removals, report = stage.decide(PARTIAL_SCHEMA.empty_table())
    assert removals.schema == REMOVALS_SCHEMA and removals.num_rows == 0
    assert report.schema == REPORT_SCHEMA and report.num_rows == 0


def test_params_from_yaml() -> None:
    params = QuarantineParams.model_validate(
        yaml.safe_load(
            """
            min_docs: 10
            max_pathological_share: 0.8
            pathological_stages: [repetition, gopher_repetition]
            rules: {extra_rules: [{host: "*.tumblr.com", key: tumblr.com}]}
            """
        )
    )
    assert params.pathological_stages == ("repetition", "gopher_repetition")
    assert params.rules is not None and params.rules.extra_rules[0].key == "tumblr.com"
    with pytest.raises(ValidationError):
        QuarantineParams(max_pathological_share=1.5)
    with pytest.raises(ValidationError, match="Extra inputs"):
        QuarantineParams.model_validate({"min_doc": 3})


def test_registered_and_built_from_pipeline_yaml() -> None:
    assert get_stage("source_quarantine") is SourceQuarantine
    stage = build_stage("source_quarantine", {"min_docs": 3}, "pipelines/x.yaml", "stages[4]")
    assert isinstance(stage, SourceQuarantine) and stage.params.min_docs == 3


# --- the reddit WARC fixture ---------------------------------------------------------------------

#: Stand-in for the repetition stage: a run of 32 one character (its max_repeats for period 1).
CHAR_RUN = re.compile(r"(\S)\1{31,}")


def read_reddit_warc(path: Path) -> pa.Table:
    """Document rows as the reader + extract + repetition stages would leave them (source from the URL)."""
    ids, urls, texts = [], [], []
    with path.open("rb") as fh:
        for record in ArchiveIterator(fh):
            if record.rec_type != "response":
                continue
            assert record.http_headers.get_header("Content-Type") == "text/html; charset=utf-8"
            page = lxml.html.fromstring(record.content_stream().read())
            ids.append(record.rec_headers.get_header("WARC-Record-ID"))
            urls.append(record.rec_headers.get_header("WARC-Target-URI"))
            texts.append("\n".join(el.text_content() for el in page.xpath("//main//h1 | //main//p")))
    batch = pa.table({"id": ids, "url": urls, "text": texts})
    batch = batch.append_column("source", source_keys(batch["url"], SourceRules()))
    for field in DOCUMENT_SCHEMA:
        if field.name not in batch.column_names:
            batch = batch.append_column(field, pa.nulls(batch.num_rows, field.type))
    runs = pa.array([CHAR_RUN.search(t) is not None for t in texts])
    return mark_removed(batch, runs, "repetition", "repeated_character")


def test_reddit_warc_quarantines_microwavegang_only(tmp_path: Path) -> None:
    pages = build.build_reddit_warc(tmp_path / "reddit.warc.gz")
    batch = read_reddit_warc(tmp_path / "reddit.warc.gz")
    assert batch.num_rows == len(pages) == 30 + 6 * 12

    mwg = pc.equal(batch["source"], "reddit.com/r/microwavegang")
    healthy_sources = set(batch.filter(pc.invert(mwg))["source"].to_pylist())
    # r/MachineLearning and old.reddit.com pages fold into one lowercase key per subreddit.
    assert healthy_sources == {f"reddit.com/r/{name}" for name in build.SUBREDDITS}
    # The short posts (20 and 25 m's) escape a per-page repetition filter: the reason for this stage.
    survivors = batch.filter(pc.and_(mwg, pc.is_null(batch["removed_by"])))
    assert [len(t.split("\n")[0]) for t in survivors["text"].to_pylist()] == [20, 25]

    removals, report = run(SourceQuarantine(), [batch.slice(0, 50), batch.slice(50)])

    assert sorted(removals["id"].to_pylist()) == sorted(survivors["id"].to_pylist())
    assert removals["score"].to_pylist() == [28 / 30] * 2
    assert report.num_rows == 1
    row = report.to_pylist()[0]
    assert {k: row[k] for k in ("source", "docs", "pathological", "removed")} == {
        "source": "reddit.com/r/microwavegang",
        "docs": 30,
        "pathological": 28,
        "removed": 2,
    }
    assert row["share"] == pytest.approx(28 / 30)
    assert row["example"] and set(row["example"]) == {"m"} and len(row["example"]) == EXAMPLE_CHARS

    # Applied as the runner would: no microwavegang post survives, no healthy subreddit loses a post.
    removed_now = pc.is_in(batch["id"], value_set=removals["id"])
    kept = batch.filter(pc.and_(pc.is_null(batch["removed_by"]), pc.invert(removed_now)))
    assert not pc.any(pc.equal(kept["source"], "reddit.com/r/microwavegang")).as_py()
    assert not pc.any(pc.and_(removed_now, pc.invert(mwg))).as_py()
    healthy = batch.filter(pc.invert(mwg))
    assert kept.num_rows == pc.sum(pc.is_null(healthy["removed_by"])).as_py()


def test_fixture_pages_survive_main_content_extraction(tmp_path: Path) -> None:
    """The later end-to-end run extracts text with resiliparse: the fixture's bodies must reach it."""
    html2text = pytest.importorskip("resiliparse.extract.html2text")
    pages = {p.url: p for p in build.build_reddit_warc(tmp_path / "reddit.warc.gz", pages_per_subreddit=2)}
    with (tmp_path / "reddit.warc.gz").open("rb") as fh:
        for record in ArchiveIterator(fh):
            if record.rec_type == "response":
                page = pages[record.rec_headers.get_header("WARC-Target-URI")]
                text = html2text.extract_plain_text(record.content_stream().read().decode(), main_content=True)
                first_line = " ".join(page.paragraphs[0].split("\n")[0].split())  # extractors collapse spaces
                assert first_line in " ".join(text.split())
                assert page.m_run is None or "m" * page.m_run in text


def test_fixture_shape(tmp_path: Path) -> None:
    pages = build.build_reddit_warc(tmp_path / "reddit.warc.gz")
    mwg = [p for p in pages if p.subreddit == "microwavegang"]
    assert [p.m_run for p in mwg] == build.m_run_lengths()
    assert mwg[0].m_run == 20 and mwg[-1].m_run == 20_000
    assert sum("beep beep" in p.paragraphs for p in mwg) == len(build.BEEP_POSTS)
    for page in pages:
        if page.subreddit != "microwavegang":
            assert f"/r/{page.subreddit}/comments/" in page.url
            assert sum(len(t.split()) for t in (page.title, *page.paragraphs)) >= build.MIN_PAGE_WORDS
    assert (tmp_path / "reddit.warc.gz").stat().st_size < 200_000
    assert build.build_reddit_warc(tmp_path / "again" / "reddit.warc.gz") == pages
    assert (tmp_path / "again" / "reddit.warc.gz").read_bytes() == (tmp_path / "reddit.warc.gz").read_bytes()
