"""minhash_dedup end to end: real crawls, the distributed path, kill -9 in connected components, earlier runs."""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasketch import LeanMinHash, MinHash
from dedup.test_exact import write_warc
from test_runner import cli_env, kill_9_at

from curate.cli import main
from curate.dedup.minhash import MinHashParams, reference_shingles

pytestmark = pytest.mark.e2e


@functools.lru_cache(maxsize=4096)
def shingles(text: str) -> frozenset:
    return frozenset(reference_shingles(text))


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def table(path: Path, columns: list[str] | None = None) -> list[dict]:
    return pq.read_table(path, columns=columns).to_pylist() if path.exists() else []


def edited(page: bytes, rng: random.Random, date: str) -> bytes:
    """The same article re-published: a date line added and a few words changed."""
    html = page.decode("utf-8", "replace")
    html = re.sub(r"(<body[^>]*>)", rf"\1<p>Updated {date}</p>", html, count=1)
    return re.sub(r" the ", lambda m: " a " if rng.random() < 0.05 else m.group(0), html).encode()


def test_near_duplicates_across_real_crawl_files_keep_the_earliest(shared_data: Path, ray_session,
                                                                  tmp_path: Path) -> None:
    """Real pages re-published with edits under other URLs and dates, beside real crawls with templated
    pages: near-copies across files go, the earliest copy stays, and every removal is a true J >= 0.8."""
    rng = random.Random(0)
    pages = [gzip.decompress(p.read_bytes())
             for p in sorted((shared_data / "html" / "scrapinghub-aeb" / "html").glob("*.html.gz"))[:10]]
    write_warc(tmp_path / "late.warc.gz", [(f"https://mirror.example/{i}", "2024-09-01T00:00:00Z",
                                            edited(page, rng, "1 September 2024")) for i, page in enumerate(pages[:6])])
    write_warc(tmp_path / "first.warc.gz", [(f"https://news.example/{i}", f"2024-01-0{i + 1}T00:00:00Z", page)
                                            for i, page in enumerate(pages)])
    write_warc(tmp_path / "later.warc.gz", [(f"https://syndicated.example/{i}", "2024-05-01T00:00:00Z",
                                             edited(page, rng, "5 May 2024")) for i, page in enumerate(pages[:3])])
    crawls = [shared_data / "warc" / n for n in ("IAH-20080430204825-00000-blackbook.part-A.warc.gz",
                                                  "dolma-wget-sample-0000.warc.gz", "dolma-wget-sample-0001.warc.gz")]
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - warc_read: {}\n  - extract: {}\n  - exact_dedup: {}\n"
                        "  - minhash_dedup: {keep: earliest}\n")
    out = tmp_path / "out"
    inputs = [tmp_path / "late.warc.gz", tmp_path / "first.warc.gz", tmp_path / "later.warc.gz", *crawls]
    assert main(["run", str(pipeline), "-i", *map(str, inputs), "-o", str(out), "--no-progress", "--workers", "2"]) == 0
    kept = {r["id"]: r for r in table(out / "kept", ["id", "url", "text", "fetch_time"])}
    removed = table(out / "removed" / "minhash_dedup")
    everything = {**kept, **{r["id"]: r for r in removed}, **{r["id"]: r for r in table(out / "removed" / "exact_dedup")}}
    by_url = {r["url"]: i for i, r in kept.items()}
    republished = {r["url"]: r for r in removed if ".example/" in r["url"]}
    assert sorted(republished) == sorted([f"https://mirror.example/{i}" for i in range(6)]
                                         + [f"https://syndicated.example/{i}" for i in range(3)])
    for url, r in republished.items():  # the earliest copy (first.warc.gz, January) is the one kept
        assert r["duplicate_of"] == by_url[re.sub(r"//\w+\.example", "//news.example", url)]
    for r in removed:  # every removal: a verified Jaccard >= 0.8 with a document that is kept
        assert r["verified"] and r["duplicate_of"] in kept
        assert r["similarity"] == pytest.approx(jaccard(r["text"], kept[r["duplicate_of"]]["text"]))
        assert r["similarity"] >= 0.8 and r["removed_by"] == "minhash_dedup" and r["reason"] == "near_duplicate"
    # the templated archive.org pages of the Heritrix crawl duplicate each other exactly once extracted
    # ("item not found" pages under many URLs): exact_dedup takes them, and MinHash alone finds them too
    templated = {r["id"] for r in table(out / "removed" / "exact_dedup") if "archive.org" in r["url"]}
    assert len(templated) >= 5
    alone = tmp_path / "alone"
    pipeline.write_text("stages:\n  - warc_read: {}\n  - extract: {}\n  - minhash_dedup: {keep: earliest}\n")
    assert main(["run", str(pipeline), "-i", *map(str, crawls), "-o", str(alone), "--no-progress", "--workers", "2"]) == 0
    found = {r["id"]: r for r in table(alone / "removed" / "minhash_dedup") if "archive.org" in r["url"]}
    assert set(found) >= templated and all(found[i]["similarity"] == 1.0 for i in templated)
    report = table(out / "stats" / "minhash_dedup_report.parquet")
    assert sum(r["removed"] for r in report) == len(removed)
    assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]
    # the signatures in work/ load into datasketch and equal its own MinHash of the kept text
    params = MinHashParams()
    signed = pq.read_table(next((out / "work").rglob("*-minhash_signatures/out/signatures/part-*.parquet")))
    row = signed.filter(signed["origin"].to_numpy() == 0).slice(0, 1).to_pylist()[0]
    lean = LeanMinHash(seed=params.seed, hashvalues=row["signature"], scheme="affine32")
    text = everything[row["id"]]["text"]
    reference = MinHash(num_perm=params.num_perm, seed=params.seed, scheme="affine32", hashfunc=int)
    reference.update_batch(list(reference_shingles(text, params)))
    assert lean.jaccard(reference) == 1.0


def corpus(shared_data: Path, folder: Path, files: int = 4, start: int = 0, count: int = 240, seed: int = 0,
           prefix: str = "") -> dict[str, str]:
    """Real news articles as JSONL files, with edited copies (a few words changed, a date added) of a third
    of them spread over other files; returns id -> text."""
    rng = random.Random(seed)
    news = (shared_data / "text" / "gensim-lee_background.cor.txt").read_text().splitlines()[start:start + count]
    docs: list[tuple[str, str]] = []
    for i, text in enumerate(news, start=start):
        docs.append((f"{prefix}n{i}", text))
        for v in range(rng.choice([0, 0, 1, 2])):
            words = [w if rng.random() > 0.015 else "changed" for w in text.split()]
            docs.append((f"{prefix}n{i}v{v}", f"Posted on {v + 3} May 2019. " + " ".join(words)))
    rng.shuffle(docs)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        with open(folder / f"part-{k}.jsonl", "w") as f:
            f.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs[k::files])
    return dict(docs)


def removals(out: Path) -> list[tuple[str, str]]:
    return sorted((r["id"], r["duplicate_of"]) for r in table(out / "removed" / "minhash_dedup", ["id", "duplicate_of"]))


def dedup_command(inputs: list[Path], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "curate.cli", "dedup", *map(str, inputs), "-o", str(out), "--no-progress",
            "--workers", "2", *extra]


def test_many_partitions_two_workers_and_a_kill_9_in_connected_components(shared_data: Path, ray_session,
                                                                          tmp_path: Path) -> None:
    docs = corpus(shared_data, tmp_path / "in")
    inputs = sorted((tmp_path / "in").glob("*.jsonl"))
    one = tmp_path / "one.yaml"
    one.write_text("shuffle_partitions: 1\n")
    many = tmp_path / "many.yaml"
    many.write_text("shuffle_partitions: 7\n")
    assert main(["dedup", *map(str, inputs), "-o", str(tmp_path / "p1"), "--no-progress", "--workers", "1",
                 "--config", str(one)]) == 0
    assert main(["dedup", *map(str, inputs), "-o", str(tmp_path / "p7"), "--no-progress", "--workers", "2",
                 "--config", str(many)]) == 0
    baseline = removals(tmp_path / "p1")
    assert baseline == removals(tmp_path / "p7")
    variants = {i for i in docs if "v" in i}
    assert {i for i, _ in baseline} >= {v for v in variants if jaccard(docs[v], docs[v.split("v")[0]]) >= 0.85}
    # killed while mapping the first small-star round of step 2 (minhash_dedup), then resumed
    out, faults = tmp_path / "killed", tmp_path / "faults"
    cmd = dedup_command(inputs, out, "--config", str(many))
    kill_9_at(cmd, f"map-small_star_00:2:pause:{faults}", faults)
    rounds = out / "work" / "steps" / "02" / "rounds"
    done = sorted(p.name for p in rounds.glob("*.json"))
    assert done == ["00-minhash_signatures.json", "01-buckets.json", "02-large_star_00.json"]
    before = {p: p.stat().st_mtime_ns for name in done for p in [rounds / name, *(rounds / name[:-5]).rglob("*")]}
    resumed = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in done:
        assert f"round {name[:-5]} already done" in resumed.stderr
    assert before == {p: p.stat().st_mtime_ns for p in before}  # finished rounds were not recomputed
    assert removals(out) == baseline


def test_a_new_crawl_deduplicated_against_an_earlier_run(shared_data: Path, ray_session, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Only the new run's documents that duplicate the earlier corpus's kept documents (or each other) go;
    the earlier run is not rewritten."""
    corpus(shared_data, tmp_path / "a", files=2, start=0, count=120, seed=1, prefix="a")
    new = corpus(shared_data, tmp_path / "b", files=2, start=60, count=120, seed=2, prefix="b")  # overlaps articles 60..119
    first = tmp_path / "first"
    assert main(["dedup", str(tmp_path / "a"), "-o", str(first), "--no-progress", "--workers", "2"]) == 0
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    earlier_kept = {r["id"]: r["text"] for r in table(first / "kept", ["id", "text"])}
    second = tmp_path / "second"
    assert main(["dedup", str(tmp_path / "b"), "-o", str(second), "--no-progress", "--workers", "2",
                 "--against", str(first)]) == 0
    assert stamp == {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    gone = {r["id"]: r for r in table(second / "removed" / "minhash_dedup")}
    gone_exact = {r["id"]: r for r in table(second / "removed" / "exact_dedup")}
    cross = {i for i, r in gone.items() if r["duplicate_of"] in earlier_kept}
    kept_new = {r["id"]: r["text"] for r in table(second / "kept", ["id", "text"])}
    # truth: every new document still kept has no partner >= 0.8 among the earlier kept documents ...
    for i, text in kept_new.items():
        assert all(jaccard(text, t) < 0.8 for t in earlier_kept.values()), i
    # ... and every cross-run removal names a kept earlier document at a verified J >= 0.8
    for i in cross:
        assert gone[i]["similarity"] >= 0.8 and jaccard(new[i], earlier_kept[gone[i]["duplicate_of"]]) >= 0.8
    assert len(cross) >= 40
    assert not set(gone) & set(earlier_kept) and not set(gone_exact) & set(earlier_kept)
    # different shingles cannot be compared with the earlier signatures: a clear failure, not a wrong answer
    capsys.readouterr()
    assert main(["dedup", str(tmp_path / "b"), "-o", str(tmp_path / "bad"), "--no-progress", "--workers", "2",
                 "--ngram", "4", "--against", str(first)]) == 1
    printed = capsys.readouterr()
    assert "were made with" in printed.out and "Traceback" not in printed.out + printed.err


def test_dedup_reads_and_writes_s3_and_dedups_against_an_s3_run(shared_data: Path, ray_session, tmp_path: Path) -> None:
    """`curate dedup` over JSONL on S3 (a moto server on loopback), then a second crawl against that run."""
    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint,
                                                                           "region_name": "us-east-1"}}
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="corpus")
        s3 = fsspec.filesystem("s3", **options)
        corpus(shared_data, tmp_path / "a", files=2, start=0, count=60, seed=1, prefix="a")
        corpus(shared_data, tmp_path / "b", files=2, start=30, count=60, seed=2, prefix="b")
        s3.put(str(tmp_path / "a") + "/", "corpus/a/", recursive=True)
        s3.put(str(tmp_path / "b") + "/", "corpus/b/", recursive=True)
        profile = tmp_path / "s3.yaml"
        profile.write_text(json.dumps({"storage_options": options}))
        common = ["--no-progress", "--workers", "2", "--config", str(profile)]
        assert main(["dedup", "s3://corpus/a/*.jsonl", "-o", "s3://corpus/first", *common]) == 0
        assert main(["dedup", "s3://corpus/b/*.jsonl", "-o", "s3://corpus/second", "--against", "s3://corpus/first",
                     *common]) == 0
        assert main(["dedup", str(tmp_path / "a"), "-o", str(tmp_path / "first"), "--no-progress", "--workers", "2"]) == 0
        assert main(["dedup", str(tmp_path / "b"), "-o", str(tmp_path / "second"), "--no-progress", "--workers", "2",
                     "--against", str(tmp_path / "first")]) == 0
        remote = sorted((r["id"], r["duplicate_of"]) for r in pq.read_table(
            "corpus/second/removed/minhash_dedup", filesystem=s3, columns=["id", "duplicate_of"]).to_pylist())
        assert remote == removals(tmp_path / "second") and any(d.startswith("an") for _, d in remote)
        with s3.open("corpus/second/stats/stats.json") as f:
            assert json.load(f)["conservation_ok"]
    finally:
        server.stop()
