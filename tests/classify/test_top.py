"""keep_top: the corpus-wide share by a score, exactly, from histograms of bounded size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from classify.test_classify import wiki_and_forum

from curate.classify.top import KeepTop, KeepTopParams, key_value, order_keys
from curate.cli import main
from curate.execute import run_rounds_locally


def test_order_keys_sort_as_the_floats_do() -> None:
    values = np.array([-np.inf, -2.5, -1e-300, -0.0, 0.0, 1e-300, 0.3, 0.7, 1.0, 5.0, np.inf])
    keys = order_keys(values)
    assert all(int(a) <= int(b) for a, b in zip(keys, keys[1:], strict=False))
    assert [key_value(int(k)) for k in keys] == values.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_the_share_kept_is_exact_up_to_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    scores = rng.random(n) if seed % 2 else np.round(rng.random(n), 2)  # even seeds: many ties
    nulls = rng.random(n) < 0.05
    share = float(rng.choice([0.1, 0.3, 0.5, 0.99]))
    units = {f"u{u}": pa.table({
        "id": [f"d{i}" for i in range(u, n, 3)], "removed_by": pa.nulls(len(range(u, n, 3)), pa.string()),
        "q": pa.array(scores[u::3], pa.float64(), mask=nulls[u::3])}) for u in range(3)}
    removals, _ = run_rounds_locally(KeepTop(KeepTopParams(column="q", share=share)), units, partitions=4)
    kept = set(f"d{i}" for i in range(n)) - set(removals["id"].to_pylist())
    ranked = np.sort(scores[~nulls])[::-1]
    want = round(share * n)
    cut = ranked[want - 1] if 0 < want <= len(ranked) else -np.inf
    assert kept == {f"d{i}" for i in range(n) if not nulls[i] and scores[i] >= cut}
    reasons = dict(zip(removals["id"].to_pylist(), removals["reason"].to_pylist(), strict=True))
    assert all(reasons[f"d{i}"] == "unscored" for i in np.flatnonzero(nulls))


@pytest.mark.e2e
def test_a_classifier_then_keep_top_of_the_corpus(shared_data: Path, ray_session, tmp_path: Path) -> None:
    from curate.classify.fasttext import FastTextTraining, train_fasttext

    wiki, forum = wiki_and_forum(shared_data)
    model = tmp_path / "q.bin"
    # one epoch: scores that do not saturate at 1.0, so the cut falls between distinct values
    train_fasttext([("hq", t) for t in wiki[::2]] + [("lq", t) for t in forum[::2]], model, FastTextTraining(epoch=1))
    docs = wiki[1:120:2] + forum[1:120:2]
    for k in range(3):
        (tmp_path / f"in{k}.jsonl").write_text("".join(json.dumps({"id": f"{k}-{i}", "text": t}) + "\n"
                                                       for i, t in enumerate(docs[k::3])))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - jsonl_read: {}\n"
                        f"  - classify: {{classifier: fasttext, name: quality, options: {{model: '{model}'}}}}\n"
                        "  - keep_top: {column: quality_hq, share: 0.25}\n")
    out = tmp_path / "out"
    assert main(["run", str(pipeline), "-i", *map(str, sorted(tmp_path.glob("in*.jsonl"))), "-o", str(out),
                 "--no-progress", "--workers", "2"]) == 0
    kept = pq.read_table(out / "kept", columns=["quality_hq"])["quality_hq"].to_numpy()
    removed = pq.read_table(out / "removed" / "keep_top").to_pylist()
    scores = np.sort(np.concatenate([kept, [r["quality_hq"] for r in removed]]))[::-1]
    cut = scores[round(0.25 * len(docs)) - 1]  # the 30th best; documents tied with it are all kept
    assert len(kept) == int((scores >= cut).sum()) and min(kept) >= cut > max(r["quality_hq"] for r in removed)
    assert len(kept) >= round(0.25 * len(docs)) and len(removed) > 0
    assert {r["reason"] for r in removed} == {"below_top_0.25"}
    assert all(r["score"] == r["quality_hq"] and r["score"] < r["threshold"] <= min(kept) for r in removed)
    assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]
