"""Quality classifiers against human labels: the 387 DCLM-annotated Common Crawl documents (label 1 = high).

Three scores, each on the same documents (run with ``-s`` to print the figures classifiers/README.md quotes):

* a fastText model trained on the labels themselves: 5-fold stratified cross-validation;
* the "close to Wikipedia" recipe (classifiers/recipes/wikipedia_quality.py) trained once on its default data,
  which contains none of the 387, scored on all of them;
* the best single heuristic signal of curate's filters (Gopher quality and repetition, C4, FineWeb,
  repetition): the signal *and its direction* are chosen on the training folds and scored on the test fold,
  so the baseline gets no look at the documents it is scored on. Taking max(AUC, 1 − AUC) on all 387 would
  flatter it; the direction each filter's rule implies is also reported, as a second, selection-free view.

fastText settings are fixed, not tuned here: the fastText text-classification tutorial's
(https://fasttext.cc/docs/en/supervised-tutorial.html: ``-lr 1.0 -epoch 25 -wordNgrams 2``), with one thread
and a fixed seed so the folds' models are reproducible.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.classify.fasttext import FastTextClassifier, FastTextParams, FastTextTraining, fasttext_line, train_fasttext
from curate.classify.metrics import roc_auc
from curate.schema import conform
from curate.stages.heuristics import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from curate.stages.repetition import Repetition

REPO = Path(__file__).resolve().parents[2]
FOLDS = 5

# Floors, a few points under the figures measured on 2026-12-01 (printed by this file) so that a real
# regression fails and run-to-run noise does not (everything here is deterministic, so "noise" means a change
# of fastText build or of a filter's signal). Measured: fastText CV 0.835 (folds 0.79-0.87), recipe 0.62,
# best heuristic (CV-chosen) 0.74; with n = 387 one standard error of an AUC is about 0.025.
MIN_FASTTEXT_CV_AUC = 0.80
MIN_RECIPE_AUC = 0.57
MIN_HEURISTIC_CV_AUC = 0.68
# The labels carry information no single measurement does: fastText must beat the best signal clearly,
# by more than one standard error of the difference.
MIN_FASTTEXT_MARGIN = 0.05

#: Each signal's "higher is better" (+1) or "lower is better" (-1) as its filter's rule reads it (a min_ rule:
#: +1, a max_ rule: -1). Signals with no rule, or both a min and a max (mean word length), have none here.
RULE_DIRECTION = {
    "gopher_quality_word_count": +1, "gopher_quality_hash_ratio": -1, "gopher_quality_ellipsis_ratio": -1,
    "gopher_quality_bullet_lines_ratio": -1, "gopher_quality_ellipsis_lines_ratio": -1,
    "gopher_quality_alpha_words_ratio": +1, "gopher_quality_stop_words": +1,
    "c4_quality_sentences": +1, "c4_quality_too_long_word_lines": -1, "c4_quality_no_terminal_punct_lines": -1,
    "c4_quality_too_few_words_lines": -1, "c4_quality_javascript_lines": -1, "c4_quality_policy_lines": -1,
    "fineweb_quality_line_punct_ratio": +1, "fineweb_quality_short_line_ratio": -1,
    "fineweb_quality_char_dup_ratio": -1, "fineweb_quality_list_ratio": -1,
    "repetition_count": -1, "repetition_char_run": -1, "repetition_char_ngram_run": -1,
    "repetition_char_run_fraction": -1, "repetition_run_fraction": -1, "repetition_longest_run": -1,
    "repetition_compression_ratio": +1,
} | {  # every Gopher repetition fraction is a max_ rule
    f"gopher_repetition_{name}": -1
    for name in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")
} | {f"gopher_repetition_top_{k}_gram_char_frac": -1 for k in (2, 3, 4)} | {
    f"gopher_repetition_dup_{k}_gram_char_frac": -1 for k in range(5, 11)
}


def _recipe():
    path = REPO / "classifiers" / "recipes" / "wikipedia_quality.py"
    spec = importlib.util.spec_from_file_location("wikipedia_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wikipedia_quality = _recipe()

#: The fastText tutorial's settings (see the module docstring).
LABEL_TRAINING = FastTextTraining(epoch=25, lr=1.0, dim=100, wordNgrams=2, minCount=1, thread=1, seed=0,
                                  bucket=200_000)


# --- data --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled(shared_data: Path) -> dict:
    with open(shared_data / "text" / "dclm-human-quality-labels.shared.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 387 and sum(r["label"] == 1 for r in rows) == 217
    return {"texts": [r["text"] for r in rows], "y": np.array([r["label"] == 1 for r in rows]),
            "keys": [str(r["source_line"]) for r in rows]}


def stratified_folds(y: np.ndarray, keys: list[str], k: int = FOLDS) -> np.ndarray:
    """Fold of each document: within each class, ordered by SHA-1 of its key and dealt round-robin.

    Deterministic, independent of file order, and every fold gets the class ratio to within one document.
    """
    folds = np.empty(len(y), np.int64)
    for label in (True, False):
        members = sorted(np.flatnonzero(y == label), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
        folds[members] = np.arange(len(members)) % k
    return folds


@pytest.fixture(scope="module")
def folds(labelled) -> np.ndarray:
    return stratified_folds(labelled["y"], labelled["keys"])


# --- fastText on the labels ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fasttext_cv(labelled, folds, tmp_path_factory) -> dict:
    texts, y = labelled["texts"], labelled["y"]
    out = tmp_path_factory.mktemp("fasttext_cv")
    start = time.perf_counter()
    aucs = []
    for fold in range(FOLDS):
        train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        path = out / f"fold{fold}.bin"
        train_fasttext([("hq" if y[i] else "lq", texts[i]) for i in train], path, LABEL_TRAINING)
        classifier = FastTextClassifier(FastTextParams(model=str(path)))
        classifier.load()
        aucs.append(roc_auc(y[test], classifier.score([texts[i] for i in test])["hq"]))
    result = {"folds": aucs, "mean": float(np.mean(aucs)), "seconds": time.perf_counter() - start}
    print(f"\nfastText on the labels, {FOLDS}-fold CV ROC-AUC: " + " ".join(f"{a:.3f}" for a in aucs)
          + f"; mean {result['mean']:.3f} (sd {np.std(aucs):.3f}), {result['seconds']:.1f} s")
    return result


def test_folds_are_stratified_and_deterministic(labelled, folds):
    y = labelled["y"]
    assert sorted(np.bincount(folds).tolist()) == [77, 77, 77, 78, 78]
    for fold in range(FOLDS):
        assert abs(y[folds == fold].sum() - y.sum() / FOLDS) <= 1
    shuffled = np.random.default_rng(1).permutation(len(y))
    again = stratified_folds(y[shuffled], [labelled["keys"][i] for i in shuffled])
    assert (again == folds[shuffled]).all()  # the same document lands in the same fold whatever the order


def test_fasttext_on_labels(fasttext_cv):
    assert fasttext_cv["mean"] >= MIN_FASTTEXT_CV_AUC, fasttext_cv
    assert min(fasttext_cv["folds"]) >= MIN_FASTTEXT_CV_AUC - 0.08, fasttext_cv  # no fold near chance


# --- the Wikipedia recipe -----------------------------------------------------------------------------------


def _shingles(text: str, n: int = 13) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(max(len(words) - n + 1, 1))}


@pytest.fixture(scope="module")
def recipe(shared_data, labelled, tmp_path_factory) -> dict:
    start = time.perf_counter()
    pairs = wikipedia_quality.examples(shared_data)
    path = tmp_path_factory.mktemp("recipe") / "wiki_quality.bin"
    wikipedia_quality.train(path, pairs)
    trained = time.perf_counter() - start
    classifier = FastTextClassifier(FastTextParams(model=str(path)))
    classifier.load()
    scores = classifier.score(labelled["texts"])["hq"]
    auc = roc_auc(labelled["y"], scores)
    counts = {label: sum(1 for lab, _ in pairs if lab == label) for label in ("hq", "lq")}
    print(f"\nWikipedia recipe (default data {counts}, trained in {trained:.1f} s) on all 387: ROC-AUC {auc:.3f}")
    return {"pairs": pairs, "auc": auc, "scores": scores}


def test_recipe_data_excludes_the_labelled_documents(recipe, labelled):
    """No labelled document, nor any 13-word passage of one, is in the recipe's training data."""
    trained = set()
    for _, text in recipe["pairs"]:
        trained |= _shingles(text)
    lines = {fasttext_line(text) for _, text in recipe["pairs"]}
    shared = [i for i, text in enumerate(labelled["texts"])
              if fasttext_line(text) in lines or _shingles(text) & trained]
    assert not shared, f"labelled documents in the recipe's training data: {shared[:10]}"


def test_recipe_on_human_labels(recipe):
    assert recipe["auc"] >= MIN_RECIPE_AUC, recipe["auc"]


def test_recipe_chunks_end_at_paragraph_boundaries():
    paragraphs = [f"Paragraph {i} " + "word " * (20 + 37 * i % 300) for i in range(200)]
    out = wikipedia_quality.chunks(paragraphs, np.random.default_rng(0))
    pieces = [p for chunk in out for p in chunk.split("\n\n")]
    assert pieces == [p.strip() for p in paragraphs][: len(pieces)]  # whole paragraphs, in order, none cut
    sizes = np.array([len(c) for c in out])
    assert len(out) > 20 and 800 < np.median(sizes) < 3000  # document-sized, around CC's median
    assert out == wikipedia_quality.chunks(paragraphs, np.random.default_rng(0))


# --- heuristic signals --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signals(labelled) -> dict[str, np.ndarray]:
    """Every numeric signal column the heuristic stages add, each stage run on all 387 documents."""
    table = conform(pa.table({"id": labelled["keys"], "text": labelled["texts"]}))
    found: dict[str, np.ndarray] = {}
    for stage in (GopherQuality(), GopherRepetition(), C4Quality(), FineWebQuality(), Repetition()):
        out = stage(table)
        assert out.column("id").to_pylist() == labelled["keys"]  # stages keep every row, in order
        for name in out.column_names:
            column = out.column(name)
            if name.startswith(f"{stage.name}_") and (pa.types.is_integer(column.type)
                                                      or pa.types.is_floating(column.type)):
                values = column.to_numpy(zero_copy_only=False).astype(np.float64)
                # c4's lorem_ipsum_line / curly_bracket_line are line positions, null where absent (all
                # 387 here): not scores, and with nothing present they carry no information.
                if not np.isnan(values).any():
                    found[name] = values
    expected = {"gopher_quality_word_count", "fineweb_quality_line_punct_ratio", "repetition_compression_ratio"}
    assert expected <= set(found)
    return found


def best_signal(signals: dict[str, np.ndarray], y: np.ndarray) -> tuple[str, int, float]:
    """(signal, direction, AUC) of the best signal in either direction on these documents (ties: by name)."""
    best = ("", 0, -1.0)
    for name in sorted(signals):
        auc = roc_auc(y, signals[name])
        for direction, value in ((+1, auc), (-1, 1.0 - auc)):
            if value > best[2]:
                best = (name, direction, value)
    return best


@pytest.fixture(scope="module")
def heuristic_cv(signals, labelled, folds) -> dict:
    y = labelled["y"]
    chosen, aucs = [], []
    for fold in range(FOLDS):
        train, test = folds != fold, folds == fold
        name, direction, train_auc = best_signal({n: v[train] for n, v in signals.items()}, y[train])
        chosen.append((name, direction, train_auc))
        aucs.append(roc_auc(y[test], direction * signals[name][test]))
    by_rule = {name: roc_auc(y, RULE_DIRECTION[name] * values)
               for name, values in signals.items() if name in RULE_DIRECTION}
    top_rule = sorted(by_rule.items(), key=lambda kv: -kv[1])[:5]
    print("\nbest single heuristic, signal and direction chosen on the training folds, test-fold ROC-AUC: "
          + " ".join(f"{a:.3f}" for a in aucs) + f"; mean {np.mean(aucs):.3f}")
    for fold, (name, direction, train_auc) in enumerate(chosen):
        print(f"  fold {fold}: {'+' if direction > 0 else '-'}{name} (training AUC {train_auc:.3f})")
    print(f"{len(signals)} numeric signals; {len(by_rule)} with a rule direction, in that direction on all 387 "
          "(no direction chosen from data, the best picked on all 387): "
          + ", ".join(f"{n} {a:.3f}" for n, a in top_rule))
    print(f"  repetition_compression_ratio in its rule's direction (higher = less repetitive = better): "
          f"{by_rule['repetition_compression_ratio']:.3f}; the folds choose it reversed, because zlib packs "
          "long documents tighter and the annotators preferred long ones (the length signal again)")
    return {"folds": aucs, "mean": float(np.mean(aucs)), "chosen": chosen, "by_rule": by_rule}


def test_best_heuristic(heuristic_cv):
    assert heuristic_cv["mean"] >= MIN_HEURISTIC_CV_AUC, heuristic_cv["mean"]


def test_label_trained_fasttext_beats_the_best_heuristic(fasttext_cv, heuristic_cv, recipe):
    assert fasttext_cv["mean"] >= heuristic_cv["mean"] + MIN_FASTTEXT_MARGIN, (fasttext_cv, heuristic_cv["mean"])
    # the same folds, so compare them pairwise too: labels win on most folds, not only on average
    wins = sum(f > h for f, h in zip(fasttext_cv["folds"], heuristic_cv["folds"], strict=True))
    assert wins >= FOLDS - 1, (fasttext_cv["folds"], heuristic_cv["folds"])
    # closeness to Wikipedia is a weaker proxy for what annotators call quality than the labels
    assert fasttext_cv["mean"] > recipe["auc"] + MIN_FASTTEXT_MARGIN


# --- the MiniLM head on the labels ------------------------------------------------------------------------

#: Measured 0.757 (folds 0.72-0.81) with the defaults (256 tokens, l2 1e-3), nothing tuned on these documents;
#: a log-length feature beside the embedding reached 0.80 and 512 tokens 0.78 in exploration, still short of
#: the 0.85 aim: the embedding is length-normalised, and length is the annotators' strongest cue here.
MIN_MINILM_CV_AUC = 0.72


@pytest.fixture(scope="module")
def minilm_cv(labelled, folds) -> dict:
    from curate.classify.transformer import Encoder, EncoderParams, fit_head

    start = time.perf_counter()
    embeddings = Encoder(EncoderParams(device="auto")).encode(labelled["texts"])
    aucs = []
    for fold in range(FOLDS):
        train, test = folds != fold, folds == fold
        head = fit_head(embeddings[train], ["hq" if v else "lq" for v in labelled["y"][train]])
        aucs.append(roc_auc(labelled["y"][test], head.predict(embeddings[test])[:, head.labels.index("hq")]))
    print(f"\nMiniLM head on the labels, {FOLDS}-fold CV ROC-AUC: " + " ".join(f"{a:.3f}" for a in aucs)
          + f", mean {np.mean(aucs):.3f} ({time.perf_counter() - start:.1f} s)")
    return {"folds": aucs, "mean": float(np.mean(aucs))}


def test_label_trained_minilm_head_beats_the_best_heuristic(minilm_cv, heuristic_cv):
    assert minilm_cv["mean"] >= MIN_MINILM_CV_AUC, minilm_cv
    assert minilm_cv["mean"] > heuristic_cv["mean"], (minilm_cv, heuristic_cv["mean"])
    wins = sum(m > h for m, h in zip(minilm_cv["folds"], heuristic_cv["folds"], strict=True))
    assert wins >= FOLDS - 1, (minilm_cv["folds"], heuristic_cv["folds"])


@pytest.mark.slow  # ~17 min on 2 cores: five fine-tunings of MiniLM on CPU (`pytest -m slow`)
def test_fine_tuned_minilm_on_the_labels(labelled, folds, heuristic_cv):
    """Measured 0.834 (folds 0.854 0.793 0.847 0.867 0.808), 3 epochs at 256 tokens, lr 2e-5: the encoder
    fine-tuned with the head closes most of the gap to fastText (0.835) that the frozen head (0.757) leaves."""
    from curate.classify.transformer import Encoder, EncoderParams, FineTuning, fine_tune

    texts, y = labelled["texts"], labelled["y"]
    aucs = []
    for fold in range(FOLDS):
        train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        encoder = Encoder(EncoderParams(device="auto", max_length=256))
        labels = ["hq" if y[i] else "lq" for i in train]
        head = fine_tune(encoder, [texts[i] for i in train], labels, FineTuning(epochs=3))
        scores = head.predict(encoder.encode([texts[i] for i in test]))[:, head.labels.index("hq")]
        aucs.append(roc_auc(y[test], scores))
    print(f"\nfine-tuned MiniLM on the labels, {FOLDS}-fold CV ROC-AUC: " + " ".join(f"{a:.3f}" for a in aucs))
    assert np.mean(aucs) >= 0.80 and np.mean(aucs) > heuristic_cv["mean"]
