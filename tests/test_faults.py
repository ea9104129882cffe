"""Faults the runner's promise must survive that tests/test_runner.py and the dedup/tokenize e2e tests do not
reach (issue #13): the driver killed -9 in a MinHash reduce and while tokenize writes shards, a worker
SIGKILLed from outside in a global round's map, a full disk and a read-only output, a flaky S3 endpoint.

Every run is compared with one clean run of the same corpus (real news articles with edited copies, so
MinHash removes some): the corpus, the removals, the dedup report, every shard file byte for byte and the
ledger's totals. Killed and resumed runs are CLI subprocesses on the worker-subprocess executor (no Ray
start-up, one unit at a time, so the state at the kill is the same every time) unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from dedup.test_minhash_e2e import corpus
from fault_fs import ENV, PROTOCOL, SITECUSTOMIZE
from test_runner import INPUTS, cli_env, kill_9_at, kill_tree

from curate.cli import main

pytestmark = pytest.mark.e2e

PIPELINE = ("stages:\n  - jsonl_read: {columns: [language]}\n  - minhash_dedup: {}\n"
            "  - tokenize: {shard_tokens: 3000}\n")
#: Subprocess runs must end well within this (a hang is a failure, not a stuck suite).
TIMEOUT_S = 240


@dataclass(frozen=True)
class Corpus:
    folder: Path
    pipeline: Path
    ids: frozenset[str]
    clean: dict[str, Any]  # outcome() of an uninterrupted run

    def profile(self, executor: str) -> Path:
        """Three shuffle partitions, so a reduce is one of several and tokenize writes shards in each."""
        path = self.folder / f"{executor}.yaml"
        path.write_text(f"executor: {executor}\nshuffle_partitions: 3\n")
        return path

    def command(self, out: Path | str, executor: str = "local") -> list[str]:
        return [sys.executable, "-m", "curate.cli", "run", str(self.pipeline), "-i", str(self.folder / "in"),
                "-o", str(out), "--workers", "2", "--no-progress", "--config", str(self.profile(executor))]


def rows(path: Path, columns: list[str] | None = None) -> list[tuple]:
    table = pq.read_table(path, columns=columns)
    return sorted(tuple(r.values()) for r in table.to_pylist())


def outcome(out: Path) -> dict[str, Any]:
    """What a reader of the output gets, without timings."""
    return {
        "kept": rows(out / "kept", ["id", "text"]),
        "removed": rows(out / "removed" / "minhash_dedup", ["id", "reason", "duplicate_of", "similarity"]),
        "report": rows(out / "stats" / "minhash_dedup_report.parquet"),
        "shards": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").iterdir())},
        "totals": json.loads((out / "stats" / "stats.json").read_text())["totals"],
    }


def assert_only_whole_parts(out: Path) -> None:
    """Each part a manifest names is complete (readable, with the rows the ledger counts for it), and no other
    part or temporary file is left where a reader of the output would find it."""
    named = {part["path"]: part["rows"] for manifest in (out / "work" / "commits").glob("step*/*.json")
             for part in json.loads(manifest.read_text())["parts"]}
    for rel, count in named.items():
        assert pq.ParquetFile(out / rel).metadata.num_rows == count, rel
    folders = [out / "kept", out / "removed", out / "errors", *(out / "work" / "steps").glob("*/kept")]
    on_disk = {str(p.relative_to(out)) for folder in folders for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(named)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"


def assert_every_document_once(out: Path, ids: frozenset[str]) -> None:
    """Conservation by id: each input document is kept or removed, exactly once."""
    found = outcome(out)
    assert sorted([i for i, _ in found["kept"]] + [r[0] for r in found["removed"]]) == sorted(ids)


@pytest.fixture(scope="module")
def dedup_corpus(shared_data: Path, ray_session, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    folder = tmp_path_factory.mktemp("faults")
    docs = corpus(shared_data, folder / "raw", files=4, count=120)
    (folder / "in").mkdir()
    for raw in sorted((folder / "raw").glob("*.jsonl")):  # tokenize reads a language column
        lines = [json.loads(line) for line in raw.read_text().splitlines()]
        (folder / "in" / raw.name).write_text("".join(json.dumps({**r, "language": "en"}) + "\n" for r in lines))
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(PIPELINE)
    made = Corpus(folder, pipeline, frozenset(docs), {})
    clean = folder / "clean"
    assert main(["run", str(pipeline), "-i", str(folder / "in"), "-o", str(clean), "--no-progress", "--workers", "2",
                 "--config", str(made.profile("ray"))]) == 0  # in this process, on the session's Ray
    made = replace(made, clean=outcome(clean))
    assert made.clean["removed"] and len(made.clean["shards"]) > 6, "the corpus no longer exercises dedup and shards"
    return made


def cli(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def resume(cmd: list[str]) -> subprocess.CompletedProcess:
    done = cli(cmd, cli_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


# ---- 1. the driver killed -9 mid-dedup and mid-tokenize ------------------------------------------------

def test_kill_9_after_a_minhash_cluster_reduce_then_resume_equals_a_clean_run(dedup_corpus: Corpus,
                                                                               tmp_path: Path) -> None:
    """Killed once the first partition of the last MinHash round wrote its removals (the round not marked):
    the resumed run redoes that round's reduces over the committed maps and decides exactly as a clean run."""
    out, faults = tmp_path / "out", tmp_path / "faults"
    cmd = dedup_corpus.command(out)
    kill_9_at(cmd, f"reduced-clusters:1:pause:{faults}", faults)
    rounds = out / "work" / "steps" / "01" / "rounds"
    assert max(p.stem for p in rounds.glob("*.json")) == "06-members"
    assert list((rounds / "07-clusters" / "removals").rglob("*.parquet")), "the reduce had written nothing yet"
    assert not (out / "kept").exists() and not (out / "shards").exists()
    log = resume(cmd).stderr
    assert "round 06-members already done" in log
    assert re.search(r"resume: (\d+) of \1 units of minhash_dedup clusters already mapped", log), log[-3000:]
    assert outcome(out) == dedup_corpus.clean
    assert_only_whole_parts(out)


def test_kill_9_while_tokenize_writes_shards_then_resume_gives_the_same_shards(dedup_corpus: Corpus,
                                                                              tmp_path: Path) -> None:
    """Killed with one partition's shards written and the others' not, no manifest yet: the resumed run keeps
    the dedup decisions and writes every shard byte for byte as a clean run, token counts included, and
    leaves no temporary file of a shard whose write the kill cut short."""
    out, faults = tmp_path / "out", tmp_path / "faults"
    cmd = dedup_corpus.command(out)
    kill_9_at(cmd, f"reduced-tokens:2:pause:{faults}", faults)
    written = {p.name for p in (out / "shards").iterdir()}
    assert written and all(name.startswith("shard-00000-") for name in written)
    assert written < set(dedup_corpus.clean["shards"]) and "manifest.json" not in written
    # what a second worker's reduce, killed between a shard's write and its rename, leaves (atomic_path's name)
    (out / "shards" / "shard-00001-000.bin.tmp-0badf00d").write_bytes(b"half a shard")
    log = resume(cmd).stderr
    assert "minhash_dedup already applied to every input" in log
    assert "resume: 4 of 4 units of tokenize tokens already mapped" in log
    assert "tokenize tokens: removed 1 temporary files an interrupted attempt left in shards/" in log
    assert outcome(out) == dedup_corpus.clean
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest["totals"]["documents"] == len(dedup_corpus.clean["kept"]) and manifest["totals"]["tokens"] > 0
    assert_only_whole_parts(out)


# ---- 2. a worker SIGKILLed from outside in a global round's map ----------------------------------------

@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_worker_sigkilled_in_a_global_rounds_map_is_replaced_and_no_document_is_lost_or_doubled(
        dedup_corpus: Corpus, tmp_path: Path, executor: str) -> None:
    """test_runner's dying workers kill themselves in a per-document step; here each map unit of MinHash's
    first round pauses and its worker (a Ray actor, or the worker subprocess) is SIGKILLed by pid."""
    out, faults = tmp_path / "out", tmp_path / "faults"
    log = tmp_path / "log"
    with log.open("w") as sink:
        proc = subprocess.Popen(dedup_corpus.command(out, executor), stdout=sink, stderr=subprocess.STDOUT,
                                env=cli_env(CURATE_FAULT=f"map-minhash_signatures:1:pause:{faults}"),
                                start_new_session=True)
        killed: set[int] = set()
        deadline = time.time() + TIMEOUT_S
        while proc.poll() is None and time.time() < deadline:
            for flag in faults.iterdir() if faults.exists() else []:
                fields = flag.read_text().split()  # "pause <pid>", once written whole
                if len(fields) == 2 and int(fields[1]) not in killed:
                    killed.add(int(fields[1]))
                    os.kill(int(fields[1]), signal.SIGKILL)
            time.sleep(0.05)
        if proc.poll() is None:
            kill_tree(proc)
    printed = log.read_text()
    assert proc.returncode == 0, printed[-3000:]
    assert len(killed) == len(list(faults.iterdir())) == 4  # every map unit's worker, once
    assert printed.count("attempt 1 of 3 failed (worker died") == 4
    assert outcome(out) == dedup_corpus.clean
    assert_every_document_once(out, dedup_corpus.ids)
    assert_only_whole_parts(out)


# ---- 3. a full disk and a read-only output -------------------------------------------------------------

def fault_disk_env(tmp_path: Path, mode: str) -> dict[str, str]:
    """The environment of a run whose every process sees ``faultdisk://`` (see tests/fault_fs.py)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = cli_env(**{ENV: mode})
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    return env


def test_a_full_disk_names_the_path_commits_only_whole_parts_and_a_rerun_resumes(dedup_corpus: Corpus,
                                                                                 tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    # room for one input's parts and the run's own files: the second input's part fills the disk
    env = fault_disk_env(tmp_path, f"full:64000:{disk}")
    run = cli(dedup_corpus.command(f"{PROTOCOL}://{out}"), env)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]
    failed = json.loads((out / "run.json").read_text())["failed_inputs"]
    assert len(failed) == 3 and all(f"No space left on device: '{out}/work/steps/00/kept/part-" in why
                                    for why in failed.values())
    assert run.stdout.count("unfinished input (re-run to retry)") == 4  # and the one committed waits at dedup
    assert "minhash_dedup (and every step after it) did not run" in run.stdout
    assert len(list((out / "work" / "commits" / "step00").glob("*.json"))) == 1
    assert_only_whole_parts(out)
    # a disk full before the run could write run.json: the driver's own write fails, in one line
    tiny = disk / "tiny"
    run = cli(dedup_corpus.command(f"{PROTOCOL}://{tiny}"), fault_disk_env(tmp_path, f"full:1000:{disk}"))
    assert run.returncode == 1 and not run.stdout
    assert re.fullmatch(rf"curate: error: No space left on device: {tiny}/run\.json\.tmp-\w+ \(the run stopped; "
                        r"what it committed is kept, a re-run resumes there\)", run.stderr.strip()), run.stderr
    # space freed: the same output resumes to the clean result
    resume(dedup_corpus.command(out))
    assert outcome(out) == dedup_corpus.clean
    assert_only_whole_parts(out)


def test_a_read_only_output_stops_at_once_with_the_path_named(dedup_corpus: Corpus, tmp_path: Path) -> None:
    """chmod 0o555 where that stops writes; as root (CI) it does not, so the read-only disk is emulated."""
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        probe = out / "probe"
        try:
            probe.write_text("")
        except PermissionError:
            url, env, refusal = str(out), cli_env(), "Permission denied"
        else:
            probe.unlink()
            url, env, refusal = f"{PROTOCOL}://{out}", fault_disk_env(tmp_path, "readonly"), "Read-only file system"
        run = cli(dedup_corpus.command(url), env)
    finally:
        out.chmod(0o755)
    assert run.returncode == 1 and not run.stdout
    assert re.fullmatch(rf"curate: error: {refusal}: {out}/run\.json\.tmp-\w+ \(the run stopped; what it committed "
                        r"is kept, a re-run resumes there\)", run.stderr.strip()), run.stderr
    assert not list(out.iterdir())


# ---- 4. a flaky S3 endpoint ----------------------------------------------------------------------------

class FlakyProxy:
    """HTTP in front of a moto S3 server failing a seeded share of requests as S3 and networks do: 500 and 503
    answers, a connection dropped before the answer, a body cut short (the kinds in turn per method, a GET's
    first fault a cut, so a few faults meet them all). Which requests fail is drawn in request order from
    ``seed``. Ranged reads of an ``outage`` key past its first bytes always fail (503), as a lasting outage
    would."""

    GET_KINDS = ("cut", "500", "503", "drop")
    OTHER_KINDS = ("500", "503", "drop")  # only a GET answer has a body to cut

    def __init__(self, upstream: int, seed: int, share: float, outage: str | None = None) -> None:
        self.upstream, self.share, self.outage = upstream, share, outage
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.injected: Counter = Counter()
        self.by_method: Counter = Counter()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy.fault(self.command, self.path, self.headers.get("Range"))
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault in ("500", "503"):
                    code = {"500": "InternalError", "503": "ServiceUnavailable"}[fault]
                    error = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=30)
                upstream.request(self.command, self.path, body, dict(self.headers.items()))
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fault(self, method: str, path: str, byte_range: str | None) -> str | None:
        with self.lock:
            if self.outage and self.outage in path and byte_range and not byte_range.startswith("bytes=0-"):
                kind = "503"
            elif self.rng.random() < self.share:
                kinds = self.GET_KINDS if method == "GET" else self.OTHER_KINDS
                kind = kinds[self.by_method[method] % len(kinds)]
                self.by_method[method] += 1
            else:
                return None
            self.injected[kind] += 1
            return kind

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3(shared_data: Path):
    """A moto S3 server on loopback holding the S3 inputs under s3://crawl/in/; yields its port."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        port = server._server.server_port
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
        client.create_bucket(Bucket="crawl")
        for name in S3_INPUTS:
            client.upload_file(str(shared_data / "warc" / name), "crawl", f"in/{name}")
        yield port
    finally:
        server.stop()


def s3_profile(tmp_path: Path, endpoint: str, attempts: int | None = None, **extra: Any) -> Path:
    """Blocks smaller than the reader's reads (s3fs's default, 50 MiB, would fetch each test file whole), so a
    WARC past 1 MiB takes two requests; s3fs's and botocore's retry settings left as curate leaves them unless
    ``attempts`` bounds botocore's tries per request."""
    profile = tmp_path / "s3.yaml"
    options = {"key": "testing", "secret": "testing", "default_block_size": 32768,
               "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    if attempts is not None:
        options["config_kwargs"] = {"retries": {"max_attempts": attempts}}
    profile.write_text(json.dumps({"storage_options": options, **extra}))
    return profile


def read_counts(out: Path) -> dict[str, dict[str, Any]]:
    """Per input file name: what the reader counted, and the ids it kept."""
    stats = [json.loads(p.read_text()) for p in (out / "stats" / "files").glob("*.json")]
    return {s["input"].rsplit("/", 1)[-1]: {k: s[k] for k in ("records", "documents", "read_errors", "bytes")}
            for s in stats}


READ_ONLY = "stages:\n  - warc_read: {}\n"
#: test_runner's inputs and one WARC larger than the reader's 1 MiB reads, so it is read in two requests.
OUTAGE = "IAH-20080430204825-00000-blackbook.part-A.warc.gz"
S3_INPUTS = (*INPUTS, OUTAGE)


def test_a_flaky_s3_loses_no_record_and_a_lasting_outage_leaves_its_input_unfinished(
        shared_data: Path, ray_session, s3: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "read.yaml"
    pipeline.write_text(READ_ONLY)
    local = tmp_path / "local"
    assert main(["run", str(pipeline), "-i", *[str(shared_data / "warc" / n) for n in S3_INPUTS], "-o", str(local),
                 "--no-progress", "--workers", "2"]) == 0
    proxy = FlakyProxy(s3, seed=13, share=0.3)
    try:
        flaky = tmp_path / "flaky"
        assert main(["run", str(pipeline), "-i", "s3://crawl/in/*.warc.gz", "-o", str(flaky), "--no-progress",
                     "--workers", "2", "--config", str(s3_profile(tmp_path, proxy.endpoint))]) == 0
    finally:
        proxy.close()
    assert set(proxy.injected) == {"500", "503", "drop", "cut"}, proxy.injected  # every kind of fault was met
    assert read_counts(flaky) == read_counts(local)
    assert rows(flaky / "kept", ["id", "warc_offset"]) == rows(local / "kept", ["id", "warc_offset"])
    # a lasting outage of one object mid-stream: a clear failure and the input listed, never a short file (fewer
    # tries than botocore's default 5 with exponential backoff, which only take longer to give up)
    proxy = FlakyProxy(s3, seed=13, share=0.0, outage=OUTAGE)
    try:
        broken = tmp_path / "broken"
        profile = s3_profile(tmp_path, proxy.endpoint, attempts=2, unit_attempts=2)
        capsys.readouterr()
        assert main(["run", str(pipeline), "-i", "s3://crawl/in/*.warc.gz", "-o", str(broken), "--no-progress",
                     "--workers", "2", "--config", str(profile)]) == 1
    finally:
        proxy.close()
    printed = capsys.readouterr()
    assert proxy.injected["503"] > 0 and "Traceback" not in printed.out + printed.err
    failed = json.loads((broken / "run.json").read_text())["failed_inputs"]
    victim = f"s3://crawl/in/{OUTAGE}"
    assert list(failed) == [victim] and "failed 2 times; last: OSError" in failed[victim], failed
    assert f"unfinished input (re-run to retry): {victim}" in printed.out
    counts = read_counts(broken)  # the other inputs whole, nothing of the victim (not a file cut short)
    assert OUTAGE not in counts and counts == {k: v for k, v in read_counts(local).items() if k != OUTAGE}
    assert_only_whole_parts(broken)
