"""Benchmark decontamination: the n-gram index (built by the CLI, memory-mapped) and the decontaminate stage.

Passages of WikiText-2 validation lines (../shared/data), edited as copies in the wild are (casing,
punctuation, a few words changed, WikiText's tokenisation undone), are planted into real documents (the
DCLM-labelled Common Crawl documents and the English Wikipedia articles of ../shared/data): every planted
document is removed naming its item, no other document is, and ``mode: cut`` removes the passage only.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curate.cli import main
from curate.decontam.index import NgramIndex, Normalisation, build_index, ngram_values, read_eval_items
from curate.decontam.stage import Decontaminate, DecontaminateParams
from curate.dedup.minhash import split_words
from curate.schema import conform

PLANTED = 40


def batch_of(texts: list[str]) -> pa.Table:
    return conform(pa.table({"id": pa.array([f"d{i}" for i in range(len(texts))], pa.string()),
                             "text": pa.array(texts, pa.string())}))


def detokenise(line: str) -> str:
    """WikiText's tokenised form back to running text, as a page quoting the article would have it."""
    text = line.strip().replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = re.sub(r" ([,.;:!?)'])", r"\1", text).replace("( ", "(").replace(" n't", "n't")
    return text


@pytest.fixture(scope="module")
def wikitext(shared_data: Path) -> Path:
    return shared_data / "text" / "wikitext-2.valid.txt"


@pytest.fixture(scope="module")
def index(wikitext: Path, tmp_path_factory) -> Path:
    """The index, built by the command a user runs."""
    path = tmp_path_factory.mktemp("decontam") / "wikitext.idx"
    assert main(["decontam", "build", str(wikitext), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def real_documents(shared_data: Path) -> list[str]:
    dclm = [json.loads(line)["text"] for line in
            (shared_data / "text" / "dclm-human-quality-labels.shared.jsonl").read_text("utf-8").splitlines()]
    with gzip.open(shared_data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt", encoding="utf-8") as f:
        wiki = [json.loads(line)["text"] for line in f]
    return dclm + wiki


@pytest.fixture(scope="module")
def planted(wikitext: Path, real_documents: list[str]) -> tuple[list[str], dict[int, str]]:
    """The real documents with PLANTED of them carrying an edited passage: (texts, {row: item id})."""
    rng = random.Random(7)
    lines = wikitext.read_text("utf-8").split("\n")
    long_lines = [i for i, line in enumerate(lines) if len(line.split()) >= 110 and not line.startswith(" =")]
    texts = list(real_documents)
    where: dict[int, str] = {}
    for k, (row, line_index) in enumerate(zip(rng.sample(range(len(texts)), PLANTED),
                                             rng.sample(long_lines, PLANTED), strict=True)):
        words = detokenise(lines[line_index]).split()
        start = rng.randrange(0, len(words) - 80)
        passage = words[start:start + rng.randrange(70, 81)]
        for position in (5, 30, 55):  # a few words changed, at most 24 apart (no 13-gram survives two more)
            passage[position] = rng.choice(["banana", "very", "however", "the"])
        text = " ".join(passage)
        if k % 3 == 0:
            text = text.upper()
        elif k % 3 == 1:
            text = re.sub(r"[,.;:]", "", text)  # punctuation dropped
        paragraphs = texts[row].split("\n")
        at = rng.randrange(0, len(paragraphs) + 1)
        texts[row] = "\n".join(paragraphs[:at] + [text] + paragraphs[at:])
        where[row] = str(line_index + 1)  # plain-text items are numbered by their 1-based line
    return texts, where


def test_index_file_is_memory_mapped_with_its_parameters(index: Path, wikitext: Path) -> None:
    loaded = NgramIndex(index)
    assert isinstance(loaded.hashes, np.memmap) and isinstance(loaded.items, np.memmap)
    assert np.all(loaded.hashes[1:] >= loaded.hashes[:-1])
    header = loaded.header
    assert header["ngram"] == 13 and header["normalisation"] == {"lowercase": True, "punctuation": True,
                                                                  "digits": False}
    lines = [line for line in wikitext.read_text("utf-8").split("\n") if line.strip()]
    assert header["items"] + header["skipped_short_items"] == len(lines)
    assert header["benchmarks"] == {"wikitext-2.valid": header["items"]}
    assert 0 < header["false_positive_per_lookup"] < 1e-12
    assert header["false_positive_per_lookup"] == pytest.approx(header["distinct"] / 2**64)
    assert loaded.table.num_rows == header["items"] and int(loaded.table["n_grams"].to_numpy().sum()) >= \
        header["distinct"]


def test_every_planted_document_is_removed_and_no_other(index: Path, planted) -> None:
    texts, where = planted
    out = Decontaminate(DecontaminateParams(index=str(index)))(batch_of(texts))
    removed = {i for i, by in enumerate(out["removed_by"].to_pylist()) if by == "decontaminate"}
    print(f"\ndecontaminate: {len(removed)} of {len(texts)} real documents removed, {len(where)} planted")
    assert removed == set(where)
    reasons = out["reason"].to_pylist()
    for row, item in where.items():
        assert reasons[row] == f"wikitext-2.valid:{item}"
        assert out["score"][row].as_py() >= 1 and out["threshold"][row].as_py() == 1.0
        assert out["decontaminate_item"][row].as_py() == reasons[row]
        assert 0 < out["decontaminate_overlap"][row].as_py() < 1  # a part of the line was planted
    assert all(m == 0 for i, m in enumerate(out["decontaminate_matches"].to_pylist()) if i not in where)


def test_cut_mode_excises_the_passage_and_keeps_the_document(index: Path, planted, real_documents) -> None:
    texts, where = planted
    out = Decontaminate(DecontaminateParams(index=str(index), mode="cut"))(batch_of(texts))
    assert out["removed_by"].null_count == len(texts)  # every document keeps text of its own
    cut = out["text"].to_pylist()
    chars = out["decontaminate_cut_chars"].to_pylist()
    for row in where:
        assert chars[row] > 150
        # what is left shares no indexed n-gram, and nearly all of the original document survived
        again = Decontaminate(DecontaminateParams(index=str(index)))(batch_of([cut[row]]))
        assert again["decontaminate_matches"][0].as_py() == 0
        original = real_documents[row].split()
        left = cut[row].split()
        assert len(set(original) - set(left)) <= 0.02 * len(set(original)) + 3
    assert all(chars[i] == 0 and cut[i] == texts[i] for i in range(len(texts)) if i not in where)


def test_short_items_match_whole_and_min_matches(tmp_path: Path) -> None:
    evals = tmp_path / "quiz.jsonl"
    evals.write_text("\n".join(json.dumps(r) for r in [
        {"qid": "q1", "question": "Which river flows through the city of Vienna", "choices": ["Danube", "Rhine"]},
        {"qid": "q2", "question": "too short to match"},
    ]) + "\n")
    report = build_index(read_eval_items([str(evals)], ["question", "choices"], "qid"), tmp_path / "q.idx")
    assert report.items == 1 and report.skipped_short == 1 and report.per_benchmark == {"quiz": 1}
    texts = ["Trivia night: which river flows through the city of Vienna? Danube, Rhine. Next round.",
             "The Danube flows through Vienna."]
    out = Decontaminate(DecontaminateParams(index=str(tmp_path / "q.idx")))(batch_of(texts))
    assert out["reason"].to_pylist() == ["quiz:q1", None]
    strict = Decontaminate(DecontaminateParams(index=str(tmp_path / "q.idx"), min_matches=2))(batch_of(texts))
    assert strict["removed_by"].null_count == 2  # the one 10-word item is one n-gram: one match


def test_ngrams_follow_the_dedup_word_split() -> None:
    words, offsets = split_words(pa.array(["Well-known  WORDS, here!", "well known words here"], pa.large_string()),
                                 Normalisation())
    values, docs, _, sizes = ngram_values(words, offsets, 4)
    assert len(values) == 2 and values[0] == values[1] and list(docs) == [0, 1] and list(sizes) == [4, 4]


def test_readers_and_errors(tmp_path: Path, index: Path) -> None:
    pq.write_table(pa.table({"id": ["a"], "text": ["one two three four five six seven eight nine ten eleven"]}),
                   tmp_path / "set.parquet")
    (tmp_path / "list.json").write_text(json.dumps([{"text": "alpha beta gamma delta epsilon zeta eta theta"}]))
    items = list(read_eval_items([str(tmp_path)], ["text"], "id"))
    assert [(i.benchmark, i.item_id) for i in items] == [("list", "0"), ("set", "a")]
    (tmp_path / "bad.json").write_text(json.dumps(["not an object"]))
    with pytest.raises(ValueError, match="not a JSON object"):
        list(read_eval_items([str(tmp_path / "bad.json")], ["text"]))
    with pytest.raises(FileNotFoundError):
        list(read_eval_items([str(tmp_path / "missing.jsonl")], ["text"]))
    (tmp_path / "junk.idx").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a curate decontamination index"):
        NgramIndex(tmp_path / "junk.idx")
    with pytest.raises(ValidationError, match="index not found"):
        DecontaminateParams(index=str(tmp_path / "none.idx"))
    assert main(["decontam", "build", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "x.idx")]) == 2
    assert main(["decontam", "inspect", str(index)]) == 0
