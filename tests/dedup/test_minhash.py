"""minhash_dedup: shingles, datasketch as the reference, band buckets, connected components, representatives."""

from __future__ import annotations

import gzip
import json
import random
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from curate.dedup.minhash import (
    MinHashDedup,
    MinHashParams,
    band_keys,
    explain,
    reference_shingles,
    shingle_hashes,
    signatures,
)
from curate.execute import PARTITION_COLUMN, run_rounds_locally
from curate.stage import ShuffleRound


def real_texts(shared_data: Path) -> list[str]:
    """News articles and Wikipedia sections: real prose of many lengths."""
    news = (shared_data / "text" / "gensim-lee_background.cor.txt").read_text().splitlines()
    with gzip.open(shared_data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        wiki = [json.loads(line)["text"] for line in f]
    return news[:150] + [w[i:i + 2500] for w in wiki[:20] for i in range(0, len(w), 2500)]


def units_of(texts: dict[str, str], n_units: int = 3, **columns: list) -> dict[str, pa.Table]:
    ids = sorted(texts)
    units = {}
    for k in range(n_units):
        mine = ids[k::n_units]
        table = {"id": mine, "text": [texts[i] for i in mine], "fetch_time": [f"2024-01-{1 + hash(i) % 9:02d}" for i in mine],
                 "removed_by": pa.nulls(len(mine), pa.string())}
        for name, values in columns.items():
            table[name] = [values[ids.index(i)] for i in mine]
        units[f"u{k}"] = pa.table(table)
    return units


def test_vectorised_shingles_equal_the_reference_on_real_and_edge_case_texts(shared_data: Path) -> None:
    texts = real_texts(shared_data) + [
        "", "one", "two words", "  leading and trailing  ", "well-known — dashes… and “quotes”!",
        "日本語の文章にはスペースがありません。中文也没有空格", "ＦＵＬＬ　ＷＩＤＴＨ text ½ ligature ﬁ", "Price 1999 $ 20,00",
        "tab\tseparated\nnew line\r\nwindows"]
    for params in (MinHashParams(), MinHashParams(ngram=3, digits=True), MinHashParams(punctuation=False, lowercase=False)):
        values, offsets = shingle_hashes(pa.array(texts), params)
        for i, text in enumerate(texts):
            assert set(values[offsets[i]:offsets[i + 1]].tolist()) == reference_shingles(text, params), (params, text)


def test_scripts_without_spaces_get_character_ngrams() -> None:
    a = "日本語の文章にはスペースがありません"
    assert len(reference_shingles(a)) == len(a) - 4  # every character is a word: 5-grams of characters
    b = a[:-1] + "ん。追加"
    ja = len(reference_shingles(a) & reference_shingles(b)) / len(reference_shingles(a) | reference_shingles(b))
    assert 0.5 < ja < 1


def test_signatures_are_datasketch_affine32_values_and_estimates_agree(shared_data: Path) -> None:
    texts = real_texts(shared_data)[:60]
    params = MinHashParams()
    values, offsets = shingle_hashes(pa.array(texts), params)
    ours = signatures(values, offsets, params)
    reference = []
    for text, row in zip(texts, ours, strict=True):
        m = MinHash(num_perm=params.num_perm, seed=params.seed, scheme="affine32", hashfunc=int)
        m.update_batch(list(reference_shingles(text, params)))
        assert np.array_equal(m.hashvalues, row)
        reference.append(m)
        lean = LeanMinHash(seed=params.seed, hashvalues=row, scheme="affine32")  # what a user loads from work/
        assert lean.jaccard(m) == 1.0
    # the estimate is within statistical tolerance of the exact Jaccard (4 sigma), on edited real pairs
    rng = random.Random(1)
    for text in texts[:30]:
        words = text.split()
        edited = " ".join(w if rng.random() > 0.03 else "edited" for w in words[: int(len(words) * 0.9)])
        a, b = reference_shingles(text), reference_shingles(edited)
        exact = len(a & b) / len(a | b)
        pair = signatures(*shingle_hashes(pa.array([text, edited]), params), params)
        est = float((pair[0] == pair[1]).mean())
        assert abs(est - exact) <= 4 * np.sqrt(exact * (1 - exact) / params.num_perm) + 0.02, (exact, est)


def test_candidate_pairs_are_datasketch_lsh_candidates_for_the_same_band_layout(shared_data: Path) -> None:
    base = real_texts(shared_data)[:80]
    rng = random.Random(2)
    texts = base + [" ".join(w if rng.random() > 0.03 else "x" for w in t.split()) for t in base[:40]]
    params = MinHashParams(bands=20, rows=6)
    sigs = signatures(*shingle_hashes(pa.array(texts), params), params)
    keys = band_keys(sigs, params)
    ours = {(i, j) for i, j in combinations(range(len(texts)), 2) if np.any(keys[i] == keys[j])}
    lsh = MinHashLSH(num_perm=params.num_perm, params=(params.bands, params.rows))
    minhashes = []
    for i, row in enumerate(sigs):
        m = LeanMinHash(seed=params.seed, hashvalues=row, scheme="affine32")
        lsh.insert(i, m)
        minhashes.append(m)
    theirs = {tuple(sorted((i, j))) for i, m in enumerate(minhashes) for j in lsh.query(m) if i != j}
    assert ours == theirs and len(ours) >= 30


def test_a_huge_bucket_costs_one_edge_per_member() -> None:
    stage = MinHashDedup()
    n = 20_000  # one templated page crawled 20k times: every band equal
    group = pa.table({"key": pa.array(np.full(n, 7, np.int64)), "node": pa.array(np.arange(n, dtype=np.int64)[::-1]),
                      PARTITION_COLUMN: pa.array(np.zeros(n, np.int32))})
    edges = stage.reduce_buckets(group)["edges"]
    assert edges.num_rows == n - 1 and set(edges["u"].to_pylist()) == {0}


class _Components(MinHashDedup):
    """The stage's component rounds over given edges; the labels come back as the report."""

    name = "components_probe"

    def rounds(self):
        yield ShuffleRound("load", map=lambda unit: unit.read(["key", "u", "v"]),
                           reduce=lambda group: {"edges": group.select(["u", "v"])})
        edges = yield from self.components("load/edges")
        yield ShuffleRound("labels", map=self.map_members_probe, reduce=lambda group: {"report": group.select(
            ["key", "label"]).group_by("key", use_threads=False).aggregate([("label", "min")])}, source=edges)

    def map_members_probe(self, unit):
        e = unit.read(["u", "v"])
        return pa.table({"key": pa.concat_arrays([e["u"].combine_chunks(), e["v"].combine_chunks()]),
                         "label": pa.concat_arrays([e["u"].combine_chunks(), e["u"].combine_chunks()])})


def union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        a, b = find(u), find(v)
        parent[max(a, b)] = min(a, b)
    return {x: find(x) for x in parent}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_connected_components_equal_union_find_on_any_partitioning(seed: int) -> None:
    rng = random.Random(seed)
    nodes = rng.sample(range(1 << 40), 600)
    edges = [(rng.choice(nodes), rng.choice(nodes)) for _ in range(500)]
    chain = sorted(rng.sample(nodes, 60), reverse=True)  # a long path, largest to smallest: the slow case
    edges += list(zip(chain, chain[1:], strict=False))
    edges = [(min(u, v), max(u, v)) for u, v in edges if u != v]
    truth = union_find(edges)
    unit = pa.table({"key": pa.array([u for u, _ in edges], pa.int64()), "u": pa.array([u for u, _ in edges], pa.int64()),
                     "v": pa.array([v for _, v in edges], pa.int64())})
    for partitions in (1, 7):
        _, report = run_rounds_locally(_Components(), {"a": unit.slice(0, 250), "b": unit.slice(250)}, partitions)
        got = dict(zip(report["key"].to_pylist(), report["label_min"].to_pylist(), strict=True))
        assert got == truth


def test_representative_by_keep_and_removed_rows_are_not_considered(shared_data: Path) -> None:
    base = real_texts(shared_data)[5]
    texts = {"a": base, "b": base + " Posted on 12 March 2019.", "c": base[: int(len(base) * 0.93)], "d": "unrelated " * 30}
    scores = {"a": 0.2, "b": 0.9, "c": 0.5, "d": 0.1}
    cases = {"earliest": None, "longest": "b", "min_id": "a", "highest_score": "b"}
    for keep, expected in cases.items():
        params = MinHashParams(keep=keep, score_column="quality" if keep == "highest_score" else None)
        units = units_of(texts, quality=[scores[i] for i in sorted(texts)])
        if keep == "earliest":
            units = {u: t.set_column(2, "fetch_time", pa.array(["2024-05-01"] * t.num_rows)) for u, t in units.items()}
            units["u2"] = units["u2"].set_column(2, "fetch_time", pa.array(["2023-01-01"] * units["u2"].num_rows))
            expected = units["u2"]["id"][0].as_py()
        removals, report = run_rounds_locally(MinHashDedup(params), units, partitions=2)
        assert sorted(removals["id"].to_pylist()) == sorted(set("abc") - {expected}), keep
        assert set(removals["duplicate_of"].to_pylist()) == {expected}
        assert set(removals["cluster_size"].to_pylist()) == {3} and all(removals["verified"].to_pylist())
        assert report.to_pylist()[0]["representative"] == expected
    units = units_of(texts)
    units = {u: t.set_column(3, "removed_by", pa.array(["language" if i == "a" else None for i in t["id"].to_pylist()]))
             for u, t in units.items()}
    removals, _ = run_rounds_locally(MinHashDedup(MinHashParams(keep="min_id")), units)
    assert sorted(removals["id"].to_pylist()) == ["c"]  # a was already removed: b represents, c goes


def test_verification_keeps_a_chain_end_that_is_not_similar_to_what_is_kept(shared_data: Path) -> None:
    words = real_texts(shared_data)[0].split()
    n = len(words)
    a = " ".join(words)
    b = " ".join(words[: int(n * 0.9)])  # J(a, b) ~ 0.9
    c = " ".join(words[int(n * 0.12): int(n * 0.9)])  # J(b, c) ~ 0.86, J(a, c) ~ 0.77
    sets = {k: reference_shingles(t) for k, t in {"a": a, "b": b, "c": c}.items()}
    j = {k: len(sets[k[0]] & sets[k[1]]) / len(sets[k[0]] | sets[k[1]]) for k in ("ab", "bc", "ac")}
    assert j["ab"] >= 0.8 and j["bc"] >= 0.8 and j["ac"] < 0.8, j
    removals, _ = run_rounds_locally(MinHashDedup(MinHashParams(keep="longest")), units_of({"a": a, "b": b, "c": c}))
    assert removals["id"].to_pylist() == ["b"] and removals["similarity"][0].as_py() == pytest.approx(j["ab"])
    unverified, _ = run_rounds_locally(MinHashDedup(MinHashParams(keep="longest", verify=False, threshold=0.7)),
                                       units_of({"a": a, "b": b, "c": c}))
    assert sorted(unverified["id"].to_pylist()) == ["b", "c"] and not any(unverified["verified"].to_pylist())


def test_explain_prints_the_s_curve() -> None:
    text = explain(MinHashParams(bands=14, rows=8, threshold=0.8))
    assert "14 bands x 8 rows = 112 permutations" in text
    assert "0.80        0.9235" in text and "<- threshold" in text


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="score_column"):
        MinHashParams(keep="highest_score")
    with pytest.raises(ValueError, match="at most 1024"):
        MinHashParams(bands=100, rows=20)


def test_a_corpus_with_nothing_to_sign_removes_nothing() -> None:
    removed = pa.table({"id": ["a", "b"], "text": ["same words here", "same words here"], "fetch_time": ["1", "2"],
                        "removed_by": ["language", "language"]})
    empty = pa.table({"id": ["c", "d"], "text": ["", None], "fetch_time": ["1", "2"],
                      "removed_by": pa.nulls(2, pa.string())})
    removals, report = run_rounds_locally(MinHashDedup(), {"u": removed, "v": empty})
    assert removals.num_rows == 0 and report.num_rows == 0
