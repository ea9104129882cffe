"""sample and diff against decisions computed directly from the runs' Parquet files.

``sample`` is checked on the shared audit run (real pages removed by the quality filters and exact dedup)
and on a run that adds one small WARC of pathological pages built here from real prose (a token loop, a
separator line, a pasted chatbot answer, an exact and a near copy), since the shared WARCs hold none that
the repetition, contamination or MinHash stages remove. ``diff`` compares that run with a second one over
overlapping inputs with two thresholds moved.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.audit.sample import CONTEXT, draw_key, repeated_runs
from curate.cli import main

pytestmark = pytest.mark.e2e

PIPELINE = """name: sample_diff
stages:
  - warc_read: {{}}
  - extract: {{}}
  - language: {{keep: [en], min_score: {min_score}}}
  - gopher_quality: {{min_doc_words: {min_words}}}
  - repetition: {{}}
  - contamination: {{}}
  - exact_dedup: {{}}
  - minhash_dedup: {{threshold: 0.8}}
"""
# A and B share these; A alone reads the first, B alone the last (documents counted apart by diff)
COMMON = ["dolma-wget-sample-0001.warc.gz", "IAH-20080430204825-00000-blackbook.part-A.warc.gz"]
ONLY_A, ONLY_B = "dolma-wget-sample-0000.warc.gz", "pywb-iana.org-liveweb-2014.warc.gz"
ASSISTANT = ("As an AI language model, I don't have personal opinions about which of these views is right. "
             "I apologize for any confusion my earlier answer caused.")
NEAR_EXTRA = ("Later writers returned to these questions again and again, and each new generation read the old "
              "arguments in the light of its own hopes.")


def write_warc(path: Path, pages: list[tuple[str, str, str]]) -> None:
    """A gzipped WARC of HTML responses (url, WARC-Date, html)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, date, body in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body.encode()),
                                                          http_headers=http, warc_headers_dict={"WARC-Date": date}))


def page(title: str, paragraphs: list[str]) -> str:
    body = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
    return f"<html><head><title>{html.escape(title)}</title></head><body><article><h1>{html.escape(title)}</h1>\n" \
           f"{body}</article></body></html>"


def pathological_pages(shared_data: Path) -> dict[str, tuple[str, str, str]]:
    """Pages of real encyclopedia prose (no paragraph shared by two), each with one defect. The paragraphs
    are ones with few punctuation marks, so that every page passes Gopher's alphabetic-words rule."""
    reference = (shared_data / "text" / "cs336-high_quality_wiki_reference.txt").read_text()
    paras = [p for p in map(str.strip, reference.splitlines()) if 400 <= len(p) <= 1000
             and len(p.split()) / (len(p.split()) + len(re.findall(r"[^\w\s]", p))) >= 0.86]
    assert len(paras) >= 13
    short = " ".join(" ".join(paras[11:13]).split()[:135])  # between A's 50 words and B's 150; with NEAR_EXTRA above
    return {
        "loop": ("https://patho.example/loop", "2024-01-02T00:00:00Z",
                 page("Loop", paras[0:3] + ["buy now " * 60])),
        "rule": ("https://patho.example/noooo", "2024-01-02T00:00:00Z",
                 page("Noooo", paras[3:6] + ["N" + "o" * 100 + "!"])),
        "assistant": ("https://patho.example/assistant", "2024-01-02T00:00:00Z",
                      page("Assistant", paras[6:8] + [ASSISTANT])),
        "original": ("https://patho.example/original", "2024-01-01T00:00:00Z", page("Original", paras[8:11])),
        "copy": ("https://mirror.example/copy", "2024-01-05T00:00:00Z", page("Original", paras[8:11])),
        "near_a": ("https://patho.example/near-a", "2024-01-01T00:00:00Z", page("Near", [short])),
        "near_b": ("https://patho.example/near-b", "2024-01-06T00:00:00Z", page("Near", [short + " " + NEAR_EXTRA])),
    }


def curate_run(tmp: Path, name: str, inputs: list[str], min_score: float, min_words: int) -> Path:
    pipeline = tmp / f"{name}.yaml"
    pipeline.write_text(PIPELINE.format(min_score=min_score, min_words=min_words))
    out = tmp / name
    assert main(["run", str(pipeline), "-i", *inputs, "-o", str(out), "--no-progress", "--workers", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(shared_data: Path, ray_session, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """Run A (language >= 0.65, gopher >= 50 words) and run B (>= 0.4, >= 150 words); the URLs of the
    pathological pages by name."""
    tmp = tmp_path_factory.mktemp("sample-diff")
    pages = pathological_pages(shared_data)
    write_warc(tmp / "pathological.warc.gz", list(pages.values()))
    warc = shared_data / "warc"
    common = [str(warc / name) for name in COMMON] + [str(tmp / "pathological.warc.gz")]
    a = curate_run(tmp, "a", [str(warc / ONLY_A), *common], 0.65, 50)
    b = curate_run(tmp, "b", [*common, str(warc / ONLY_B)], 0.4, 150)
    return a, b, {name: url for name, (url, _, _) in pages.items()}


def rows(out: Path, folder: str, columns: list[str] | None = None) -> list[dict]:
    return [r for f in sorted((out / folder).rglob("*.parquet")) for r in pq.read_table(f, columns=columns).to_pylist()]


def decisions(out: Path) -> dict[str, tuple]:
    """id -> (status, stage, reason), read straight from the Parquet files."""
    found = {r["id"]: ("kept", None, None) for r in rows(out, "kept", ["id"])}
    for r in rows(out, "removed", ["id", "removed_by", "reason"]):
        assert r["id"] not in found
        found[r["id"]] = ("removed", r["removed_by"], r["reason"])
    for r in rows(out, "errors"):
        found[r["record_id"]] = ("error", r["stage"], None)
    return found


def audit(capsys, *argv: str) -> dict:
    assert main(["audit", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def by_url(examples: list[dict]) -> dict[str, dict]:
    return {e["url"]: e for e in examples}


# --- sample ----------------------------------------------------------------------------------------------------


def test_sample_is_drawn_by_seed_and_filtered_by_reason(audited_run: Path, capsys) -> None:
    removed = rows(audited_run, "removed/gopher_quality", ["id", "reason", "score", "threshold"])
    assert len(removed) > 10
    ids = [r["id"] for r in removed]
    for seed in (0, 7):
        drawn = audit(capsys, "sample", str(audited_run), "--stage", "gopher_quality", "-n", "5", "--seed", str(seed))
        # the n smallest (seed, id) keys over every removal, whichever part holds them
        assert [e["id"] for e in drawn["examples"]] == sorted(ids, key=lambda i: (draw_key(seed, i), i))[:5]
        assert drawn["removed"] == len(removed)
        again = audit(capsys, "sample", str(audited_run), "--stage", "gopher_quality", "-n", "5", "--seed", str(seed))
        assert again == drawn
    other = audit(capsys, "sample", str(audited_run), "--stage", "gopher_quality", "-n", "5", "--seed", "1")
    assert {e["id"] for e in other["examples"]} != {e["id"] for e in drawn["examples"]}

    by_id = {r["id"]: r for r in removed}
    for reason, count in Counter(r["reason"] for r in removed).items():
        drawn = audit(capsys, "sample", str(audited_run), "--stage", "gopher_quality", "--reason", reason, "-n", "100")
        assert drawn["removed"] == count and len(drawn["examples"]) == count  # -n above the count: all of them
        for e in drawn["examples"]:
            r = by_id[e["id"]]
            assert (e["reason"], e["score"], e["threshold"]) == (reason, r["score"], r["threshold"])
            assert all(c.startswith("gopher_quality_") for c in e["signals"])
            assert e["measured_by"] and all(e["signals"][c] == e["score"] for c in e["measured_by"])
            assert e["snippet"]["kind"] == "opening"

    rc = main(["audit", "sample", str(audited_run), "--stage", "gopher_quality", "-n", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "drawn with seed 0" in out and "signals: gopher_quality_word_count=" in out


def test_sample_errors_and_empty_stages(audited_run: Path, capsys) -> None:
    assert main(["audit", "sample", str(audited_run), "--stage", "no_such_stage"]) == 2
    err = capsys.readouterr().err
    assert "no stage 'no_such_stage'" in err and "gopher_quality" in err and "exact_dedup" in err
    stats = json.loads((audited_run / "stats" / "stats.json").read_text())
    empty = next(name for name, s in stats["stages"].items() if not s["removed"])
    assert main(["audit", "sample", str(audited_run), "--stage", empty]) == 0
    assert f"{empty}: removed no documents" in capsys.readouterr().out
    assert main(["audit", "sample", str(audited_run), "--stage", "gopher_quality", "--reason", "no_such_reason"]) == 0
    assert "no removals for this reason; gopher_quality removed for: " in capsys.readouterr().out


def test_sample_of_exact_dedup_shows_the_kept_twin(audited_run: Path, capsys) -> None:
    kept = {r["id"]: r for r in rows(audited_run, "kept", ["id", "url", "text"])}
    removed = rows(audited_run, "removed/exact_dedup", ["id", "duplicate_of"])
    assert removed
    drawn = audit(capsys, "sample", str(audited_run), "--stage", "exact_dedup", "-n", "50")
    assert sorted(e["id"] for e in drawn["examples"]) == sorted(r["id"] for r in removed)
    for e in drawn["examples"]:
        twin = e["snippet"]["twin"]
        assert e["snippet"]["kind"] == "twin" and twin["status"] == "kept"
        assert twin["id"] == e["snippet"]["duplicate_of"] == e["signals"]["duplicate_of"]
        assert twin["url"] == kept[twin["id"]]["url"]
        assert twin["opening"] == " ".join(kept[twin["id"]]["text"].split())[:len(twin["opening"])]


def test_sample_shows_the_repeated_span(runs, capsys) -> None:
    a, _, urls = runs
    removed = {r["url"]: r for r in rows(a, "removed/repetition")}
    assert removed[urls["loop"]]["reason"] == "token_period_run"
    assert removed[urls["rule"]]["reason"] == "char_run"
    drawn = by_url(audit(capsys, "sample", str(a), "--stage", "repetition")["examples"])
    loop, rule = drawn[urls["loop"]]["snippet"], drawn[urls["rule"]]["snippet"]
    assert loop["kind"] == "repeated_span" and sorted(loop["unit"].split()) == ["buy", "now"]
    assert loop["copies"] >= 59 and loop["period"] == len("buy now ")
    span = removed[urls["loop"]]["text"][loop["start"]:loop["start"] + loop["span"]].split()
    assert span == ["buy", "now"] * (len(span) // 2) and len(span) >= 118
    assert (rule["unit"], rule["copies"], rule["span"]) == ("o", 100, 100)
    assert drawn[urls["rule"]]["score"] == removed[urls["rule"]]["repetition_char_run"] == 100
    assert drawn[urls["rule"]]["measured_by"] == ["repetition_char_run"]
    assert rule["before"].endswith("N") and rule["after"] == "!"
    assert removed[urls["rule"]]["text"][rule["start"] - 1:rule["start"] + 101] == "N" + "o" * 100 + "!"

    assert main(["audit", "sample", str(a), "--stage", "repetition", "--reason", "char_run"]) == 0
    out = capsys.readouterr().out
    assert "N⟦o⟧×100!…" in out and "100 copies of a unit of 1 character (" in out and urls["loop"] not in out


def test_repeated_runs_finds_long_periods() -> None:
    block = "The same paragraph, pasted over and over by a broken template engine. " * 3
    text = "Some opening words:\n" + block * 12 + "A closing line."
    best = max(repeated_runs(text), key=lambda r: r.span)
    assert (best.start, best.period, best.copies, best.span) == (20, len(block) // 3, 36, 36 * len(block) // 3)
    assert [r for r in repeated_runs("aaaa  bbb") if r.period == 1][0].span == 4


def test_sample_shows_the_matched_phrases(runs, capsys) -> None:
    a, _, urls = runs
    [row] = rows(a, "removed/contamination")
    assert row["url"] == urls["assistant"] and row["reason"] == "assistant_phrases"
    [e] = audit(capsys, "sample", str(a), "--stage", "contamination")["examples"]
    snippet = e["snippet"]
    assert snippet["kind"] == "phrases" and snippet["phrases"] == row["contamination_phrases"]
    assert snippet["matches"] == row["contamination_matches"] == len(snippet["shown"]) == 3
    for m in snippet["shown"]:
        assert row["text"][m["start"]:m["start"] + len(m["match"])] == m["match"]
        assert re.sub(r"[ ,]+", " ", m["match"].lower()) == re.sub(r"[ ,]+", " ", m["phrase"])
    assert e["score"] == row["contamination_density"] and e["threshold"] == 5.0


def test_sample_of_minhash_dedup_shows_the_near_twin(runs, capsys) -> None:
    a, _, urls = runs
    [row] = rows(a, "removed/minhash_dedup")
    kept = {r["url"]: r for r in rows(a, "kept", ["id", "url", "text"])}
    assert row["url"] == urls["near_b"] and row["duplicate_of"] == kept[urls["near_a"]]["id"]
    [e] = audit(capsys, "sample", str(a), "--stage", "minhash_dedup")["examples"]
    snippet = e["snippet"]
    assert snippet["kind"] == "twin" and snippet["twin"]["url"] == urls["near_a"]
    assert 0.8 <= snippet["similarity"] == row["similarity"] == e["score"] < 1.0
    assert snippet["opening"].startswith(" ".join(row["text"].split())[:100])
    twin_text = " ".join(kept[urls["near_a"]]["text"].split())
    assert snippet["twin"]["opening"] == twin_text[:len(snippet["twin"]["opening"])]
    # near_b is near_a and one more sentence: they first differ where near_a ends
    first = snippet["first_difference"]
    assert first["at"] == len(twin_text) and first["this"].endswith(" " + NEAR_EXTRA[:CONTEXT - 1])
    assert main(["audit", "sample", str(a), "--stage", "minhash_dedup"]) == 0
    out = capsys.readouterr().out
    assert f"duplicate of {row['duplicate_of']} (similarity " in out and f"[kept; {urls['near_a']}]" in out
    assert f"first difference at character {len(twin_text):,}:" in out


# --- diff ------------------------------------------------------------------------------------------------------


def test_diff_lists_exactly_the_documents_whose_decision_changed(runs, capsys, tmp_path: Path) -> None:
    a, b, urls = runs
    da, db = decisions(a), decisions(b)
    both = da.keys() & db.keys()
    changed = {i: (da[i], db[i]) for i in both if da[i] != db[i]}

    def kind(pair: tuple) -> str:
        return "newly_removed" if pair[0][0] == "kept" else "newly_kept" if pair[1][0] == "kept" else "changed"

    expected = Counter(kind(p) for p in changed.values())
    assert expected["newly_removed"] and expected["newly_kept"] and expected["changed"]

    out = tmp_path / "changes.parquet"
    figures = audit(capsys, "diff", str(a), str(b), "--examples", "1000", "-o", str(out))
    assert figures["documents"] == {"a": len(da), "b": len(db), "both": len(both), "only_a": len(da.keys() - both),
                                    "only_b": len(db.keys() - both)}
    assert figures["documents"]["only_a"] and figures["documents"]["only_b"]
    assert figures["unchanged"] == len(both) - len(changed)
    assert {k: figures[k] for k in expected} == dict(expected) and figures["changed_documents"] == len(changed)

    def decision(d: dict) -> tuple:
        return (d["status"], d["stage"], d["reason"])

    transitions = Counter({(decision(t["a"]), decision(t["b"])): t["documents"] for t in figures["transitions"]})
    assert transitions == Counter(changed.values())
    examples = {e["id"]: t for t in figures["transitions"] for e in t["examples"]}
    assert examples.keys() == changed.keys()
    for id_, t in examples.items():
        assert (decision(t["a"]), decision(t["b"])) == changed[id_] and t["kind"] == kind(changed[id_])
    # the near copies swap: B's 150 words remove the earlier one, so the later one is no longer its duplicate
    by_url_a = {r["url"]: r["id"] for r in rows(a, "kept", ["id", "url"]) + rows(a, "removed", ["id", "url"])}
    kept, short = ("kept", None, None), ("removed", "gopher_quality", "gopher_short_doc")
    assert changed[by_url_a[urls["near_a"]]] == (kept, short)
    assert changed[by_url_a[urls["near_b"]]] == (("removed", "minhash_dedup", "near_duplicate"), kept)

    written = pq.read_table(out).to_pylist()
    assert {r["id"]: r["kind"] for r in written} == {i: kind(p) for i, p in changed.items()}
    for r in written:
        assert ((r["a_status"], r["a_stage"], r["a_reason"]), (r["b_status"], r["b_stage"], r["b_reason"])) \
            == changed[r["id"]]

    only = Counter("kept" if d[0] == "kept" else f"{d[1]}/{d[2]}" for i, d in da.items() if i not in both)
    assert figures["only_a"] == dict(only)
    settings = {s["key"]: (s["a"], s["b"]) for s in figures["settings"]}
    assert settings == {"gopher_quality.min_doc_words": (50, 150), "language.min_score": (0.65, 0.4)}

    assert main(["audit", "diff", str(a), str(b), "--examples", "1"]) == 0
    text = capsys.readouterr().out
    assert "gopher_quality.min_doc_words: 50 → 150" in text
    assert f"newly kept (removed in A): {expected['newly_kept']:,}" in text
    assert "kept → gopher_quality/gopher_short_doc: " in text
    quiet = audit(capsys, "diff", str(a), str(b), "--examples", "0")
    assert all(not t["examples"] for t in quiet["transitions"]) and quiet["changed_documents"] == len(changed)
    # a run against itself: nothing changed
    same = audit(capsys, "diff", str(a), str(a))
    assert same["changed_documents"] == 0 and same["unchanged"] == len(da) and not same["settings"]
