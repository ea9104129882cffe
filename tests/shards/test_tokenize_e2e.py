"""``tokenize`` / ``curate shards`` end to end on real text: round trip, mixing, host cap, determinism, resume."""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_runner import kill_9_at

from curate.cli import main
from curate.shards.formats import open_shard, read_manifest
from curate.tokenizer import load_tokenizer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def corpus(shared_data: Path, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """Wikipedia paragraphs (one host, rated high) and real Common Crawl pages (many hosts, rated low)."""
    folder = tmp_path_factory.mktemp("corpus")
    docs: dict[str, dict] = {}
    with gzip.open(shared_data / "text" / "enwiki-shortened-plaintext.shared.jsonl.gz", "rt") as f:
        for line in f:
            article = json.loads(line)
            for k, para in enumerate(p for p in article["text"].split("\n\n") if len(p) > 200):
                id_ = f"wiki-{article['id']}-{k}"
                docs[id_] = {"id": id_, "text": para, "url": f"https://en.wikipedia.org/wiki/{article['id']}#{k}",
                             "language": "en", "quality_hq": 0.9}
    for name in ("dolma-ccnet-cc_en_head-0091.jsonl.gz", "dolma-ccnet-cc_en_head-0174.jsonl.gz"):
        with gzip.open(shared_data / "text" / name, "rt") as f:
            for line in f:
                page = json.loads(line)
                docs[page["id"]] = {"id": page["id"], "text": page["text"], "url": page["id"], "language": "en",
                                    "quality_hq": 0.2}
    rows = list(docs.values())
    rows.append({"id": "empty", "text": "", "url": "https://empty.example/", "language": "en", "quality_hq": 0.5})
    docs["empty"] = rows[-1]
    for i in range(3):  # three files, so two workers share the tokenizing
        with (folder / f"part-{i}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows[i::3])
    return folder, docs


def build(corpus_dir: Path, out: Path, *extra: str) -> None:
    args = ["shards", "build", str(corpus_dir), "--output", str(out), "--columns", "quality_hq", "--no-progress",
            "--workers", "2", "--shard-tokens", "40000", *extra]
    assert main(args) == 0


def documents(directory: Path) -> list[tuple[str, np.ndarray]]:
    """(id, tokens) of every document of the shards, in their order."""
    manifest = read_manifest(directory)
    out = []
    for shard in manifest["shards"]:
        reader = open_shard(str(Path(manifest["_dir"]) / shard["name"]), manifest["format"], manifest["dtype"])
        ids = pq.read_table(Path(manifest["_dir"]) / f"{shard['name']}.docs.parquet")["id"].to_pylist()
        assert reader.num_documents == len(ids) == shard["documents"] and reader.num_tokens == shard["tokens"]
        out += [(id_, np.asarray(reader.document(i))) for i, id_ in enumerate(ids)]
    return out


@pytest.mark.parametrize("fmt", ["megatron", "npy"])
def test_round_trip_mixing_and_manifest(corpus, ray_session, tmp_path: Path, fmt: str, capsys) -> None:
    folder, docs = corpus
    out = tmp_path / "out"
    build(folder, out, "--format", fmt, "--mix", "quality_hq >= 0.8=2")
    manifest = read_manifest(out)
    tokenizer = load_tokenizer("cl100k_base")
    assert manifest["tokenizer"]["sha256"] == tokenizer.sha256 and manifest["tokenizer"]["eos_id"] == 100257
    assert manifest["dtype"] == ("int32" if fmt == "megatron" else "uint32")  # cl100k does not fit uint16
    got = documents(out)
    # every document back as its text, with EOS; weight 2 → exactly two copies, the rest one, empty none
    counts = Counter(id_ for id_, _ in got)
    for id_, doc in docs.items():
        assert counts[id_] == (0 if not doc["text"] else 2 if doc["quality_hq"] >= 0.8 else 1), id_
    for id_, tokens in got:
        assert tokens[-1] == 100257 and tokenizer.decode(tokens[:-1].tolist()) == docs[id_]["text"]
    if fmt == "megatron":  # Megatron's own reader, on every shard
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        position = 0
        for shard in manifest["shards"]:
            indexed = IndexedDataset(str(Path(manifest["_dir"]) / shard["name"]), mmap=True)
            assert len(indexed) == shard["documents"] and int(indexed.sequence_lengths.sum()) == shard["tokens"]
            for i in range(len(indexed)):
                assert np.array_equal(indexed[i], got[position + i][1])
            position += len(indexed)
    # the manifest's totals are the shards'
    totals = manifest["totals"]
    assert totals["documents"] == len(got) == sum(s["documents"] for s in manifest["shards"])
    assert totals["tokens"] == sum(len(t) for _, t in got) == sum(s["tokens"] for s in manifest["shards"])
    assert totals["documents_in"] == len(docs)
    assert sum(v["tokens"] for v in totals["by_bucket"].values()) == totals["tokens"]
    realised = {r["bucket"]: r for r in manifest["mix"]["realised"]}
    assert realised["quality_hq >= 0.8"]["realised_weight"] == 2.0
    assert totals["by_source"]["en.wikipedia.org"]["tokens"] == sum(len(t) for i, t in got if i.startswith("wiki"))
    assert len(manifest["shards"]) > 3
    for shard in manifest["shards"]:  # never over the target unless one document is
        assert shard["tokens"] <= 40000 or shard["documents"] == 1
    # inspect verifies every hash; a flipped byte fails it
    assert main(["shards", "inspect", str(out)]) == 0
    assert "verified" in capsys.readouterr().out
    victim = Path(manifest["_dir"]) / f"{manifest['shards'][0]['name']}.{'bin' if fmt == 'megatron' else 'npy'}"
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:])
    assert main(["shards", "inspect", str(out)]) == 1
    assert f"FAILED: {victim.name}: sha256 differs" in capsys.readouterr().out
    victim.write_bytes(data)
    # decode by position and by id
    assert main(["shards", "decode", str(out / "shards"), "--id", "wiki-12-0"]) == 0
    assert docs["wiki-12-0"]["text"] in capsys.readouterr().out
    # the run's own ledger: nothing removed, every document kept
    run = json.loads((out / "run.json").read_text())
    assert run["conservation"]["ok"]


def test_split_documents_gives_exact_shards_whose_parts_reassemble(corpus, ray_session, tmp_path: Path) -> None:
    folder, docs = corpus
    out = tmp_path / "out"
    build(folder, out, "--split-documents", "--shard-tokens", "30000")
    manifest = read_manifest(out)
    by_partition: dict[str, list[int]] = {}
    for shard in manifest["shards"]:  # shard-<partition>-<piece>: exact sizes within a partition's stream
        by_partition.setdefault(shard["name"].rsplit("-", 1)[0], []).append(shard["tokens"])
    for sizes in by_partition.values():
        assert sizes[:-1] == [30000] * (len(sizes) - 1) and 0 < sizes[-1] <= 30000
    assert any(len(sizes) > 1 for sizes in by_partition.values())
    parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    for shard in manifest["shards"]:
        sidecar = pq.read_table(Path(manifest["_dir"]) / f"{shard['name']}.docs.parquet").to_pylist()
        reader = open_shard(str(Path(manifest["_dir"]) / shard["name"]), manifest["format"], manifest["dtype"])
        for i, row in enumerate(sidecar):
            assert len(reader.document(i)) == row["n_tokens"]
            parts.setdefault(row["id"], []).append((row["offset"], np.asarray(reader.document(i))))
    tokenizer = load_tokenizer("cl100k_base")
    assert any(len(p) > 1 for p in parts.values())  # some documents straddle a cut
    for id_, pieces in parts.items():
        offsets = [o for o, _ in pieces]
        assert offsets[0] == 0 and all(o == p + len(t) for o, (p, t) in zip(offsets[1:], pieces, strict=False))
        tokens = np.concatenate([t for _, t in pieces])
        assert tokens[-1] == 100257 and tokenizer.decode(tokens[:-1].tolist()) == docs[id_]["text"]
    assert manifest["totals"]["documents"] == len(parts) == sum(1 for d in docs.values() if d["text"])


def test_same_seed_same_bytes_other_seed_other_order(corpus, ray_session, tmp_path: Path) -> None:
    folder, _ = corpus
    build(folder, tmp_path / "a")
    build(folder, tmp_path / "b")
    build(folder, tmp_path / "c", "--seed", "1")
    digests = [{k: v for s in read_manifest(tmp_path / d)["shards"] for k, v in s["sha256"].items()} for d in "abc"]
    assert digests[0] == digests[1]
    a, c = documents(tmp_path / "a"), documents(tmp_path / "c")
    assert [i for i, _ in a] != [i for i, _ in c]
    assert sorted((i, t.tobytes()) for i, t in a) == sorted((i, t.tobytes()) for i, t in c)


def test_fractional_weights_within_binomial_tolerance(corpus, ray_session, tmp_path: Path) -> None:
    folder, _ = corpus
    build(folder, tmp_path / "out", "--mix", "quality_hq >= 0.8=0.5")
    realised = {r["bucket"]: r for r in read_manifest(tmp_path / "out")["mix"]["realised"]}["quality_hq >= 0.8"]
    n = realised["documents_in"]
    assert n > 2000 and abs(realised["documents"] - n / 2) <= 3 * (n / 4) ** 0.5  # binomial(n, 1/2), 3 sigma


def test_host_cap_within_the_tolerance_of_whole_document_draws(corpus, ray_session, tmp_path: Path) -> None:
    """A host with 60 % of the text capped at 30 %, beside four mirrors (10 % each) and the CC pages."""
    _, docs = corpus
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = []
    for i, doc in enumerate(d for d in docs.values() if d["id"].startswith("wiki")):
        # sentences, in runs of at least 150 characters: many small documents, so the draw is tight
        chunks, current = [], ""
        for sentence in doc["text"].split(". "):
            current = f"{current}. {sentence}" if current else sentence
            if len(current) >= 150:
                chunks.append(current)
                current = ""
        for k, chunk in enumerate(chunks + ([current] if current else [])):
            host = "en.wikipedia.org" if i % 10 < 6 else f"mirror{i % 10}.example"
            rows.append({**doc, "id": f"{doc['id']}.{k}", "text": chunk, "url": f"https://{host}/{doc['id']}.{k}"})
    rows += [d for d in docs.values() if not d["id"].startswith("wiki")]
    for k in range(2):
        (folder / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[k::2]))
    out = tmp_path / "out"
    build(folder, out, "--max-host-share", "0.3")
    manifest = read_manifest(out)
    [(host, keep)] = manifest["mix"]["capped_hosts"].items()
    assert host == "en.wikipedia.org"
    # the tolerance of the draw: each of the host's documents is kept with probability `keep`
    big = np.array([len(r["text"].encode()) for r in rows if "//en.wikipedia.org/" in r["url"]], np.float64)
    others = sum(len(r["text"].encode()) for r in rows if "//en.wikipedia.org/" not in r["url"])
    kept = keep * big.sum()
    assert kept / (kept + others) == pytest.approx(0.3)  # the cap itself is exact in expectation
    sd = (keep * (1 - keep) * (big ** 2).sum()) ** 0.5 * others / (kept + others) ** 2
    share = manifest["totals"]["by_source"]["en.wikipedia.org"]["tokens"] / manifest["totals"]["tokens"]
    assert abs(share - 0.3) < 4 * sd + 0.005, (share, sd)  # + tokens per byte differing between documents
    assert sd < 0.01
    mirrors = [v["tokens"] / manifest["totals"]["tokens"] for k, v in manifest["totals"]["by_source"].items()
               if k.startswith("mirror")]
    assert len(mirrors) == 4 and all(0.12 < m < 0.22 for m in mirrors), mirrors


def test_kill_9_while_tokenizing_then_resume_gives_the_same_shards(corpus, tmp_path: Path, capsys) -> None:
    folder, _ = corpus
    cmd = [sys.executable, "-m", "curate.cli", "shards", "build", str(folder), "--output", str(tmp_path / "out"),
           "--columns", "quality_hq", "--no-progress", "--workers", "2", "--shard-tokens", "40000",
           "--max-host-share", "0.5"]  # so a plan round runs (and is finished) before the tokens round
    faults = tmp_path / "faults"
    kill_9_at(cmd, f"mapped-tokens:1:pause:{faults}", faults)  # killed once a unit's map is committed
    assert main(cmd[3:]) == 0
    log = capsys.readouterr().err
    assert "tokenize round 00-plan already done" in log  # the finished round is not redone
    reused = re.search(r"resume: (\d) of 3 units of tokenize tokens already mapped", log)  # nor a committed map
    assert reused and int(reused.group(1)) >= 1, log
    build(folder, tmp_path / "fresh", "--max-host-share", "0.5")
    resumed, fresh = read_manifest(tmp_path / "out"), read_manifest(tmp_path / "fresh")
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in fresh["shards"]]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["conservation"]["ok"]


def test_train_smoke_on_built_shards(corpus, ray_session, tmp_path: Path, capsys) -> None:
    folder, _ = corpus
    out = tmp_path / "out"
    build(folder, out)
    assert main(["shards", "train-smoke", str(out), "--steps", "40", "--seq-len", "32", "--batch-size", "4"]) == 0
    text = capsys.readouterr().out
    assert "loss" in text
    from curate.shards import TokenDataset  # the package's loader, over what the stage wrote

    dataset = TokenDataset(out, seq_len=128, seed=0)
    window = dataset[0]
    assert window.shape == (129,) and len(dataset) == (read_manifest(out)["totals"]["tokens"] - 1) // 128
    assert {d["id"] for d in dataset.documents_at(0)} <= {i for i, _ in documents(out)}

