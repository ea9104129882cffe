"""A third-party plug-in as a user installs it: classifiers/example_plugin built by pip into a site folder,
then found by curate through its entry points alone (``keyword_topic`` classifier, ``word_count`` stage).

The package is installed with ``--no-build-isolation`` (no network: the venv's own setuptools builds it)
into a folder only the subprocesses see on PYTHONPATH, so nothing but the entry points can have found it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from test_runner import REPO, cli_command, cli_env

pytestmark = pytest.mark.e2e
PLUGIN = REPO / "classifiers" / "example_plugin"
TOPICS = {
    "gaming": ["game", "games", "gaming", "gamer", "gamers", "gameplay", "console", "consoles", "xbox", "playstation",
               "ps4", "nintendo", "wii", "steam", "multiplayer", "dlc", "rpg", "fps", "mods", "video game"],
    "news": ["government", "minister", "president", "police", "election", "military", "war", "officials",
             "country", "united nations", "prime minister"],
}
RULE = "topic_gaming < 0.5"
HALF_RATE = 10.0  # KeywordTopicParams' default


def build_corpus(shared_data: Path, folder: Path) -> dict[str, str]:
    """Real text of three kinds, one JSONL file each (so the run goes through Ray workers): r/gaming and
    r/worldnews threads (12 consecutive comments each, as a thread page reads) and ABC news articles (the
    Lee background corpus, one per line)."""
    kinds: dict[str, dict[str, str]] = {}
    for subreddit, count in (("gaming", 25), ("worldnews", 25)):
        raw = gzip.decompress((shared_data / "text" / "reddit-2015" / f"{subreddit}_2015-04-07.json.gz").read_bytes())
        pairs = json.loads(raw.decode().replace("[,", "[", 1))  # some files start with "[," (SOURCES.md)
        comments = list(dict.fromkeys(t for p in pairs for t in (p["question"], p["answer"])))
        kinds[subreddit] = {f"{subreddit}-{i:02d}": "\n\n".join(comments[i * 12:(i + 1) * 12]) for i in range(count)}
    articles = (shared_data / "text" / "gensim-lee_background.cor.txt").read_text().splitlines()
    kinds["lee"] = {f"lee-{i:02d}": line for i, line in enumerate(articles[:30])}
    for kind, docs in kinds.items():
        (folder / f"{kind}.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs.items()))
    return {i: t for docs in kinds.values() for i, t in docs.items()}


def reference_words(text: str) -> list[str]:
    """The plug-in's notion of a word (runs of letters and digits, lower-cased), written independently."""
    return re.findall(r"[^\W_]+", text.lower())


def reference_score(text: str, keywords: list[str]) -> float:
    words = reference_words(text)
    hits = 0
    for phrase in (tuple(reference_words(k)) for k in keywords):
        hits += sum(tuple(words[i:i + len(phrase)]) == phrase for i in range(len(words) - len(phrase) + 1))
    rate = 1000 * hits / max(len(words), 1)
    return rate / (rate + HALF_RATE)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plug-in installed as pip would install it for a user, into a folder of its own."""
    for build_requirement in ("setuptools", "wheel"):  # setuptools < 70.1 builds wheels with `wheel`
        if importlib.util.find_spec(build_requirement) is None:
            pytest.fail(f"{build_requirement} is not installed in this venv: --no-build-isolation needs it to build "
                        "the example plug-in")
    root = tmp_path_factory.mktemp("plugin")
    # pip builds in the source folder: a copy keeps build/ and *.egg-info out of the repo
    source = shutil.copytree(PLUGIN, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--target", str(target), str(source)], check=True, timeout=120)
    return target


def plugin_env(site: Path) -> dict[str, str]:
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    return env


def test_classifiers_list_shows_the_installed_entry_point(site: Path) -> None:
    listing = subprocess.run([sys.executable, "-m", "curate.cli", "classifiers", "list"], env=plugin_env(site),
                             capture_output=True, text=True, check=True, timeout=60).stdout
    line = next(line for line in listing.splitlines() if line.split()[:1] == ["keyword_topic"])
    assert "curate-example-plugin 0.1.0" in line
    assert line.split()[-1] == "curate_example_plugin.keyword_topic:KeywordTopic"
    without = subprocess.run([sys.executable, "-m", "curate.cli", "classifiers", "list"], env=cli_env(),
                             capture_output=True, text=True, check=True, timeout=60).stdout
    assert "keyword_topic" not in without  # only the site folder provides it
    where = subprocess.run([sys.executable, "-c", "import curate_example_plugin.keyword_topic as m; print(m.__file__)"],
                           env=plugin_env(site), capture_output=True, text=True, check=True, timeout=60).stdout
    assert Path(where.strip()).is_relative_to(site)


def test_a_pipeline_runs_the_plugin_classifier_and_stage_by_name(shared_data: Path, site: Path,
                                                                  tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = build_corpus(shared_data, corpus)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "plugin", "stages": [
        {"jsonl_read": {}},
        {"word_count": {}},
        {"classify": {"classifier": "keyword_topic", "name": "topic", "options": {"topics": TOPICS}, "keep": RULE}},
    ]}))
    out = tmp_path / "out"
    run = subprocess.run(cli_command(pipeline, sorted(corpus.glob("*.jsonl")), out), env=plugin_env(site),
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-3000:]

    kept = pq.read_table(sorted((out / "kept").glob("*.parquet"))).to_pylist()
    removed = pa.concat_tables(pq.read_table(p) for p in sorted((out / "removed" / "topic").glob("*.parquet")))
    removed = removed.to_pylist()
    rows = {r["id"]: r for r in kept + removed}
    assert sorted(rows) == sorted(docs) and len(rows) == len(kept) + len(removed)

    # every score is the documented formula, recomputed here from the text; word_count_words is its denominator
    for doc_id, row in rows.items():
        assert row["word_count_words"] == len(reference_words(docs[doc_id])), doc_id
        for topic, keywords in TOPICS.items():
            assert np.isclose(row[f"topic_{topic}"], reference_score(docs[doc_id], keywords)), (doc_id, topic)

    # removed are exactly the documents whose score fails the rule, with the rule, score and threshold
    assert {r["id"] for r in removed} == {i for i, r in rows.items() if not r["topic_gaming"] < 0.5}
    assert {r["id"] for r in kept} == {i for i, r in rows.items() if r["topic_gaming"] < 0.5}
    for row in removed:
        assert (row["removed_by"], row["reason"], row["threshold"]) == ("topic", f"keyword_topic:{RULE}", 0.5)
        assert row["score"] == row["topic_gaming"]
    # real text: only r/gaming threads go, though not all (many of its comments are memes with no keyword)
    assert all(r["id"].startswith("gaming-") for r in removed) and len(removed) >= 8

    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["conservation_ok"] and stats["files"] == 3
