"""curate audit similar: the nearest documents by the run's MinHash signatures (the shared FineWeb + dedup run),
by a scan of the texts, and by the embeddings a classify stage kept (a small run over Reddit threads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.dedup.minhash import MinHashParams, reference_shingles

pytestmark = pytest.mark.e2e


def rows(out: Path, folder: str) -> list[dict]:
    return [r for f in sorted((out / folder).rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def ask(capsys, out: Path, text: str, *options: str, rc: int = 0) -> dict:
    assert main(["audit", "similar", str(out), text, "--json", *options]) == rc
    return json.loads(capsys.readouterr().out)


def jaccard(a: str, b: str) -> float:
    x, y = reference_shingles(a, MinHashParams()), reference_shingles(b, MinHashParams())
    return len(x & y) / len(x | y)


def test_a_kept_document_lightly_edited_is_found_first_by_its_minhash_signature(audited_run: Path, capsys) -> None:
    from datasketch import MinHash

    kept = sorted(rows(audited_run, "kept"), key=lambda r: (-len(r["text"].split()), r["id"]))
    doc = kept[3]
    words = doc["text"].split()
    assert len(words) > 300
    query = " ".join("zebra" if i % 60 == 30 else w for i, w in enumerate(words))  # one word in 60 changed
    found = ask(capsys, audited_run, query, "-k", "5")
    assert found["method"] == "minhash" and found["searched"] == len(kept)  # every kept document was signed
    first = found["results"][0]
    assert (first["id"], first["url"], first["where"]) == (doc["id"], doc["url"], "kept")
    # the exact Jaccard of the shingle sets, as the reference shingler gives it
    assert first["jaccard"] == first["similarity"] == pytest.approx(jaccard(query, doc["text"]), abs=1e-6)
    assert first["similarity"] > 0.7
    assert all(r["similarity"] < 0.5 for r in found["results"][1:])
    # the estimate is datasketch's for the same hash family (signature of the query against the stored one)
    family = {"num_perm": 120, "seed": 1, "scheme": "affine32", "hashfunc": int}
    mq, md = MinHash(**family), MinHash(**family)
    mq.update_batch(list(reference_shingles(query)))
    md.update_batch(list(reference_shingles(doc["text"])))
    assert first["estimate"] == pytest.approx(mq.jaccard(md), abs=1e-6)
    # the plain form names the document and where it is
    assert main(["audit", "similar", str(audited_run), query, "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert doc["id"] in text and "MinHash" in text and "exact" in text


def test_a_removed_duplicate_finds_its_kept_twin_and_the_scan_finds_the_removed_copies(audited_run: Path,
                                                                                     capsys) -> None:
    removed = rows(audited_run, "removed")
    [twin_id, *_] = sorted({r["duplicate_of"] for r in removed if r["removed_by"] == "exact_dedup"})
    copies = sorted(r["id"] for r in removed if r.get("duplicate_of") == twin_id)
    copy = next(r for r in removed if r["id"] == copies[0])
    twin = next(r for r in rows(audited_run, "kept") if r["id"] == twin_id)
    # the copy was removed before minhash_dedup signed anything: its kept twin is what the signatures find
    found = ask(capsys, audited_run, copy["text"], "-k", "3")
    assert found["method"] == "minhash"
    assert (found["results"][0]["id"], found["results"][0]["where"]) == (twin_id, "kept")
    assert found["results"][0]["similarity"] == jaccard(copy["text"], twin["text"]) == 1.0
    assert found["not_searched"] == len(removed) and "removed before minhash_dedup" in found["not_searched_why"]
    # among the removed documents no signed one is near it (the dedup removed nothing here): exit 1
    nothing = ask(capsys, audited_run, copy["text"], "--in", "removed", rc=1)
    assert nothing["results"] == [] and nothing["searched"] == 0
    # the slow path reads every removed text: the copies themselves, removed by exact_dedup with their twin
    scanned = ask(capsys, audited_run, copy["text"], "--in", "removed", "--method", "scan", "-k", "5")
    assert scanned["method"] == "scan" and scanned["searched"] == len(removed)
    best = [r for r in scanned["results"] if r["similarity"] == 1.0]
    assert sorted(r["id"] for r in best) == copies
    assert {(r["where"], r["reason"], r["duplicate_of"]) for r in best} == {
        ("removed by exact_dedup", "exact_duplicate", twin_id)}
    # the scan over the kept corpus ranks as the signatures do
    kept_scan = ask(capsys, audited_run, copy["text"], "--in", "kept", "--method", "scan", "-k", "3")
    assert kept_scan["results"][0]["id"] == twin_id


@pytest.fixture(scope="module")
def embedded_run(shared_data: Path, ray_session, tmp_path_factory) -> tuple[Path, list[dict]]:
    """20 Reddit threads through a zero-shot topic stage that keeps its embeddings and removes the threads
    near 'gaming'."""
    from classify.test_classify import reddit_documents

    tmp = tmp_path_factory.mktemp("embedded")
    docs = [{"id": f"{sub}-{i}", "url": f"https://www.reddit.com/r/{sub}/{i}", "text": text}
            for i, (sub, text) in enumerate(reddit_documents(shared_data, per_topic=5))]
    (tmp / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp / "p.yaml").write_text(
        "stages:\n  - jsonl_read: {}\n  - classify:\n      classifier: embedding_topics\n      name: topic\n"
        "      embeddings: true\n      keep: 'topic_gaming < 0.1'\n"
        "      options: {topics: {gaming: ['video games, consoles, Steam and multiplayer']}, device: cpu, "
        "max_length: 128}\n")
    out = tmp / "out"
    assert main(["run", str(tmp / "p.yaml"), "-i", str(tmp / "in.jsonl"), "-o", str(out), "--no-progress",
                 "--workers", "2"]) == 0
    return out, docs


def test_the_embedding_path_finds_the_document_an_excerpt_came_from(embedded_run, capsys) -> None:
    from curate.classify.transformer import Encoder, EncoderParams

    out, docs = embedded_run
    stored = {r["id"]: (r, np.asarray(r["topic_embedding"])) for r in rows(out, "kept") + rows(out, "removed")}
    removed = sorted(i for i, (r, _) in stored.items() if r["removed_by"] == "topic")
    kept = sorted(i for i, (r, _) in stored.items() if r["removed_by"] is None)
    assert removed and kept
    encoder = Encoder(EncoderParams(device="cpu", max_length=128))
    by_id = {d["id"]: d for d in docs}
    for id_ in (kept[-1], removed[0]):
        words = by_id[id_]["text"].split()[:40]
        excerpt = " ".join(w for i, w in enumerate(words) if i % 7 != 3)  # its opening, a word in 7 left out
        found = ask(capsys, out, excerpt, "-k", "3")
        assert found["method"] == "embedding" and found["searched"] == len(docs) and found["not_searched"] == 0
        first = found["results"][0]
        assert first["id"] == id_
        assert first["where"] == ("kept" if id_ in kept else "removed by topic")
        # cosine with the stored embedding, the query embedded by the same MiniLM
        cosine = float(encoder.encode([excerpt])[0] @ stored[id_][1])
        assert first["similarity"] == pytest.approx(cosine, abs=1e-4)
        assert first["similarity"] > found["results"][1]["similarity"]
    # the removed thread is not among the kept ones
    found = ask(capsys, out, " ".join(by_id[removed[0]]["text"].split()[:40]), "--in", "kept", "-k", "3")
    assert removed[0] not in [r["id"] for r in found["results"]] and found["searched"] == len(kept)
    # this run has no MinHash signatures: asking for them is an error, and the scan still works
    assert main(["audit", "similar", str(out), "some text", "--method", "minhash"]) == 2
    assert "no current minhash_dedup signatures" in capsys.readouterr().err
    scanned = ask(capsys, out, by_id[kept[0]]["text"], "--method", "scan", "-k", "1")
    assert scanned["results"][0]["id"] == kept[0] and scanned["results"][0]["similarity"] == 1.0
