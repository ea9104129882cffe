"""Contamination stage: pasted assistant answers go, articles that quote a phrase stay."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.registry import get_stage
from curate.schema import conform
from curate.stages.contamination import DEFAULT_PHRASES, Contamination, ContaminationParams

# Pasted chatbot answers, written for this test in the style such pages have.
OPINION_PASTE = (
    "Best laptop for students 2023\n\n"
    "As an AI language model, I don't have personal opinions, but I can give you some general guidance. "
    "When choosing a laptop for school, consider battery life, weight and the software your courses need. "
    "As of my knowledge cutoff in September 2021, popular choices included the MacBook Air and the Dell "
    "XPS 13. Prices and models may have changed since then, so check current reviews before buying."
)
REFUSAL_PASTE = (
    "I’m sorry, but I can’t assist with that. As an AI developed by OpenAI, I must follow the content "
    "guidelines. If you have another question about gardening, I'd be happy to help!\n\nRegenerate response"
)
IDENTITY_PASTE = (
    "I am ChatGPT, a large language model trained by OpenAI. I don't have access to real-time information, "
    "so I cannot browse the internet for today's weather. I apologize for any confusion my previous answer "
    "caused."
)
NEWS_QUOTE = (
    "Students at the university were surprised last week when an essay submitted for a history seminar "
    "contained the sentence \"As an AI language model, I cannot\" in its second paragraph. The lecturer, who "
    "asked not to be named, said the department would review its policy on generative tools before the "
    "spring term. Several students told the campus newspaper that they had used chatbots to brainstorm, but "
    "not to write whole assignments, and that clearer rules would help everyone."
)


def documents(texts: list[str]) -> pa.Table:
    return conform(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}))


def run(stage: Contamination, texts: list[str]) -> list[dict]:
    return stage(documents(texts)).to_pylist()


@pytest.fixture(scope="module")
def stage() -> Contamination:
    stage = Contamination()
    stage.setup()
    return stage


def test_pasted_chatbot_answers_are_removed_with_their_phrases(stage: Contamination) -> None:
    opinion, refusal, identity = run(stage, [OPINION_PASTE, REFUSAL_PASTE, IDENTITY_PASTE])
    assert opinion["contamination_phrases"] == [
        "as an ai language model",
        "i don't have personal opinions",
        "as of my knowledge cutoff",
    ]
    # Matches never overlap: "I'm sorry, but I can't assist with that" is one match, of the phrase that starts first.
    assert refusal["contamination_phrases"] == [
        "i'm sorry, but i can't",
        "as an ai developed by openai",
        "regenerate response",
    ]
    assert identity["contamination_phrases"] == [
        "i am chatgpt",
        "a large language model trained by openai",
        "i don't have access to real-time",
        "i cannot browse the internet",
        "i apologize for any confusion",
    ]
    for row in (opinion, refusal, identity):
        assert (row["removed_by"], row["reason"], row["threshold"]) == ("contamination", "assistant_phrases", 5.0)
    assert opinion["contamination_matches"] == 3
    assert opinion["score"] == pytest.approx(1000 * 3 / len(OPINION_PASTE.split()))
    assert refusal["contamination_matches"] == 3 and identity["contamination_matches"] == 5


def test_news_paragraph_quoting_one_phrase_is_kept(stage: Contamination) -> None:
    (row,) = run(stage, [NEWS_QUOTE])
    assert row["contamination_phrases"] == ["as an ai language model"]
    assert row["contamination_matches"] == 1
    assert row["contamination_density"] == pytest.approx(1000 / len(NEWS_QUOTE.split()))
    assert row["reason"] is None


def test_long_article_quoting_two_phrases_is_kept_by_density(stage: Contamination, shared_data) -> None:
    with gzip.open(shared_data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        article = json.loads(f.readline())["text"]
    quote = ' Critics quoted "as an AI language model" and "I\'m sorry, but I cannot". '
    text = article[:4000] + quote + article[4000:8000]
    (row,) = run(stage, [text])
    assert row["contamination_matches"] == 2
    assert row["contamination_density"] < 5.0 and row["reason"] is None


def test_matching_normalises_case_apostrophes_spacing_and_commas(stage: Contamination) -> None:
    variants = [
        "AS AN AI LANGUAGE MODEL",
        "as an AI\n  language\xa0model",
        "I’m sorry but I cannot",
        "I`m Sorry,   but i CAN'T",
        "as of my Knowledge Cutoff",
    ]
    rows = run(stage, [f"{v}. {v}." for v in variants])
    assert [r["contamination_phrases"] for r in rows] == [
        ["as an ai language model"],
        ["as an ai language model"],
        ["i'm sorry, but i cannot"],
        ["i'm sorry, but i can't"],
        ["as of my knowledge cutoff"],
    ]
    assert all(r["contamination_matches"] == 2 and r["reason"] == "assistant_phrases" for r in rows)


def test_word_boundaries_and_longest_phrase(stage: Contamination) -> None:
    rows = run(
        stage,
        [
            "Gas an ai language modeller",  # not at word boundaries
            "as of my knowledge cutoff",  # the longer phrase wins over 'my knowledge cutoff'
            "my knowledge cutoff",
        ],
    )
    assert [r["contamination_phrases"] for r in rows] == [[], ["as of my knowledge cutoff"], ["my knowledge cutoff"]]
    assert [r["contamination_matches"] for r in rows] == [0, 1, 1]


def test_re2_prefilter_agrees_with_python(stage: Contamination) -> None:
    texts = [OPINION_PASTE, REFUSAL_PASTE, IDENTITY_PASTE, NEWS_QUOTE, "nothing here", ""]
    re2 = pc.count_substring_regex(pa.array(texts), stage._pattern, ignore_case=True).to_pylist()
    assert re2 == [len(stage.find(t)) for t in texts]


def test_no_matches_in_real_human_text(stage: Contamination, shared_data) -> None:
    text = shared_data / "text"
    with gzip.open(text / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        corpus = [json.loads(line)["text"] for line in f]
    with open(text / "dclm-human-quality-labels.shared.jsonl") as f:
        corpus += [json.loads(line)["text"] for line in f]
    corpus += (text / "gensim-lee_background.cor.txt").read_text(encoding="utf-8").splitlines()
    corpus += [p.read_bytes().decode("latin-1") for p in sorted((text / "nltk-state_union").glob("*.txt"))]
    rows = run(stage, corpus)
    assert sum(r["contamination_matches"] for r in rows) == 0
    assert all(r["reason"] is None for r in rows)


def test_configurable_phrases_and_thresholds() -> None:
    custom = Contamination(ContaminationParams(phrases=["Certainly! Here’s"], min_matches=1, max_density=1.0))
    (row,) = run(custom, ["Certainly! Here's a poem about spring."])
    assert row["contamination_phrases"] == ["Certainly! Here’s"] and row["reason"] == "assistant_phrases"
    off = Contamination(ContaminationParams(phrases=[]))
    (row,) = run(off, [OPINION_PASTE])
    assert row["contamination_matches"] == 0 and row["reason"] is None


def test_registered_and_params_validated() -> None:
    assert get_stage("contamination") is Contamination
    assert 20 <= len(DEFAULT_PHRASES) <= 40
    with pytest.raises(ValueError):
        ContaminationParams(phrases=["ok", " , "])
    with pytest.raises(ValueError):
        ContaminationParams(min_match=2)
