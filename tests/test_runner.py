"""The runner's promise under failure: dying workers, repeated attempts, killed drivers, grown inputs.

Each test goes through the CLI on an embedded Ray with 2 workers and at least 3 real input files. Runs that
need a fault injected into the worker processes (``CURATE_FAULT``, see :func:`curate.execute.fault_point`)
or a kill -9 of the driver run the CLI as a subprocess with its own embedded Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from curate.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "pipelines" / "quickstart.yaml"
pytestmark = pytest.mark.e2e
INPUTS = ("dolma-wget-sample-0000.warc.gz", "dolma-wget-sample-0001.warc.gz", "IAH-urls-wget.warc.gz",
          "CC-MAIN-20200808165417-20200808195417-00395.excerpt.warc.gz")


def warcs(shared_data: Path) -> list[Path]:
    return [shared_data / "warc" / name for name in INPUTS]


def kept(out: Path) -> list[tuple[str, str]]:
    """The corpus as its commits name it (what a reader of the output gets)."""
    paths = [p for p in (out / "kept").glob("*.parquet")]
    rows = [r for p in paths for r in pq.read_table(p, columns=["id", "text"]).to_pylist()]
    return sorted((r["id"], r["text"]) for r in rows)


def run_cli(*args: str) -> int:
    return main(["run", *map(str, args), "--no-progress", "--workers", "2"])


def cli_command(pipeline: Path, inputs: list[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "curate.cli", "run", str(pipeline), "-i", *map(str, inputs), "-o", str(out),
            "--workers", "2", "--no-progress", "--config", str(REPO / "configs" / "local.yaml")]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def kill_tree(proc: subprocess.Popen) -> None:
    """kill -9 the driver and every process it started (its embedded Ray and workers)."""
    tree = [proc.pid]
    with contextlib.suppress(psutil.NoSuchProcess):
        tree += [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    alive = []
    for pid in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.append(psutil.Process(pid))
    psutil.wait_procs(alive, timeout=10)


def kill_9_at(cmd: list[str], fault: str, faults: Path, timeout: float = 180) -> None:
    """Run the CLI until a unit pauses at the fault point, then kill -9 the whole run."""
    proc = subprocess.Popen(cmd, env=cli_env(CURATE_FAULT=fault), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if faults.exists() and list(faults.iterdir()):
            kill_tree(proc)
            return
        time.sleep(0.05)
    kill_tree(proc)
    raise AssertionError(f"the fault point was not reached (exit code {proc.poll()})")


#: Matches URLs of 2 of the 4 inputs (dolma-wget-sample-0001 and IAH-urls-wget).
DYING = r"creativecommons\.org|//archive\.org"


def dying_pipeline(tmp_path: Path, once: bool) -> Path:
    once_dir = f", once_dir: '{tmp_path / 'flags'}'" if once else ""
    pipeline = tmp_path / "die.yaml"
    # the quickstart with the plugin before its extract, so a clean quickstart run is the reference
    die = f"  - plugins:DieOn: {{url_matches: '{DYING}'{once_dir}}}\n"
    pipeline.write_text(QUICKSTART.read_text().replace("  - extract:", die + "  - extract:", 1))
    return pipeline


def executor_profile(tmp_path: Path, executor: str) -> Path:
    profile = tmp_path / f"{executor}.yaml"
    profile.write_text(f"executor: {executor}\n")
    return profile


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_dying_worker_is_replaced_and_its_unit_genuinely_retried(shared_data: Path, ray_session, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   executor: str) -> None:
    """A stage that kills its worker on 2 of 4 files the first time: fresh workers retry them, nothing is lost
    (Ray actors, or the worker subprocess of the local executor)."""
    inputs = warcs(shared_data)
    assert run_cli(dying_pipeline(tmp_path, once=True), "-i", *inputs, "-o", tmp_path / "out",
                   "--config", executor_profile(tmp_path, executor)) == 0
    assert len(list((tmp_path / "flags").iterdir())) == 2
    err = capsys.readouterr().err
    assert "worker died" in err and "retrying" in err
    assert run_cli(QUICKSTART, "-i", *inputs, "-o", tmp_path / "clean") == 0
    assert kept(tmp_path / "out") == kept(tmp_path / "clean")
    stats = json.loads((tmp_path / "out" / "stats" / "stats.json").read_text())
    assert stats["conservation_ok"] and stats["files"] == 4


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_unit_that_keeps_killing_workers_is_left_unfinished_and_listed(shared_data: Path, ray_session,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         executor: str) -> None:
    """Every attempt dies on 2 of 4 inputs: exit 1, both listed, the others complete, no traceback."""
    inputs = warcs(shared_data)
    out = tmp_path / "out"
    assert run_cli(dying_pipeline(tmp_path, once=False), "-i", *inputs, "-o", out,
                   "--config", executor_profile(tmp_path, executor)) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "conservation OK" in captured.out
    unfinished = [line for line in captured.out.splitlines() if "unfinished input" in line]
    run = json.loads((out / "run.json").read_text())
    assert run["finished"] and len(run["failed_inputs"]) == len(unfinished) == 2
    assert all("failed 3 times" in why and "worker died" in why for why in run["failed_inputs"].values())
    finished = [p for p in inputs if str(p) not in run["failed_inputs"]]
    assert finished and len(list((out / "work" / "commits" / "step00").glob("*.json"))) == len(finished)
    clean = tmp_path / "clean"
    assert run_cli(QUICKSTART, "-i", *finished, "-o", clean) == 0
    assert kept(out) == kept(clean)


def test_a_run_where_every_document_fails_exits_non_zero(shared_data: Path, ray_session, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "fail.yaml"
    pipeline.write_text(QUICKSTART.read_text() + "  - plugins:FailOn: {fail_on: ''}\n")
    out = tmp_path / "out"
    assert run_cli(pipeline, "-i", *warcs(shared_data)[:3], "-o", out) == 1
    printed = capsys.readouterr().out
    failing = json.loads((out / "stats" / "stats.json").read_text())["stages"]["fail_on"]
    assert failing["errors"] == failing["in"] > 0
    assert f"stage fail_on: {failing['in']} of {failing['in']} documents failed (100.0%)" in printed
    assert "cannot handle" in printed  # an example error
    permissive = tmp_path / "permissive.yaml"
    permissive.write_text(pipeline.read_text() + "failure: {max_error_share: 1.0}\n")
    assert run_cli(permissive, "-i", *warcs(shared_data)[:3], "-o", tmp_path / "p") == 0


def test_stale_parts_of_a_dead_attempt_are_never_counted(shared_data: Path, tmp_path: Path) -> None:
    """Attempt 1 writes error parts and dies before its commit; attempt 2 succeeds: no trace of attempt 1."""
    faults = tmp_path / "faults"
    pipeline = tmp_path / "flaky.yaml"
    pipeline.write_text(QUICKSTART.read_text() + f"  - plugins:FailsFirstAttempt: {{fault_dir: '{faults}'}}\n")
    inputs = warcs(shared_data)[:3]
    out = tmp_path / "out"
    run = subprocess.run(cli_command(pipeline, inputs, out), env=cli_env(CURATE_FAULT=f"before_commit:0:die:{faults}"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert len(list(faults.iterdir())) == 3  # every unit died once, after writing its error parts
    assert "conservation OK" in run.stdout
    assert not (out / "errors").exists() or not list((out / "errors").iterdir())
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["totals"]["errors"] == 0 and stats["stages"]["fails_first_attempt"]["errors"] == 0
    assert main(["run", str(QUICKSTART), "-i", *map(str, inputs), "-o", str(tmp_path / "clean"), "--no-progress"]) == 0
    assert kept(out) == kept(tmp_path / "clean")
    assert not list(out.rglob("*.tmp*"))


def test_kill_9_between_part_renames_and_commit_then_resume(shared_data: Path, tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    inputs = warcs(shared_data)
    out = tmp_path / "out"
    cmd = cli_command(QUICKSTART, inputs, out)
    kill_9_at(cmd, f"before_commit:0:pause:{faults}", faults)
    assert list((out / "kept").glob("*.parquet")) or list((out / "removed").rglob("*.parquet"))  # renamed, uncommitted
    resumed = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert main(["run", str(QUICKSTART), "-i", *map(str, inputs), "-o", str(tmp_path / "clean"), "--no-progress"]) == 0
    assert kept(out) == kept(tmp_path / "clean")
    commits = [json.loads(p.read_text()) for p in (out / "work" / "commits" / "step00").glob("*.json")]
    named = {part["path"] for c in commits for part in c["parts"]}
    on_disk = {str(p.relative_to(out)) for d in ("kept", "removed", "errors") if (out / d).exists()
               for p in (out / d).rglob("*.parquet")}
    assert on_disk == named, "parts of the killed attempt were left behind"


def quarantine_pipeline(tmp_path: Path) -> Path:
    pipeline = tmp_path / "q.yaml"
    pipeline.write_text("stages:\n  - warc_read: {}\n  - extract: {}\n  - repetition: {}\n"
                        "  - source_quarantine: {min_docs: 5, max_pathological_share: 0.5}\n"
                        "  - language: {keep: [en]}\n")
    return pipeline


def reddit(tmp_path: Path) -> Path:
    from fixtures.build_reddit_warc import build_reddit_warc

    warc = tmp_path / "reddit.warc.gz"
    build_reddit_warc(warc)
    return warc


def report(out: Path) -> list[tuple]:
    rows = pq.read_table(out / "stats" / "source_quarantine_report.parquet").to_pylist()
    return [(r["source"], r["docs"], r["pathological"], r["removed"]) for r in rows]


def test_a_global_stage_redone_after_more_inputs_equals_a_clean_run(shared_data: Path, ray_session,
                                                                    tmp_path: Path) -> None:
    """The map reads the step's input snapshot, not removed/*: microwavegang stays at 30 documents."""
    pipeline = quarantine_pipeline(tmp_path)
    first = [reddit(tmp_path), *warcs(shared_data)[:2]]
    out = tmp_path / "out"
    assert run_cli(pipeline, "-i", *first, "-o", out) == 0
    assert report(out) == [("reddit.com/r/microwavegang", 30, 29, 1)]
    everything = [*first, warcs(shared_data)[2]]
    assert run_cli(pipeline, "-i", *everything, "-o", out) == 0
    clean = tmp_path / "clean"
    assert run_cli(pipeline, "-i", *everything, "-o", clean) == 0
    assert report(out) == report(clean) == [("reddit.com/r/microwavegang", 30, 29, 1)]
    assert kept(out) == kept(clean)
    removed = {p.name for p in (out / "removed" / "source_quarantine").glob("*.parquet")}
    assert len(removed) == 1, "the earlier attempt's removals were left in place"
    assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]


def test_a_global_stage_killed_in_its_apply_round_resumes_without_redoing_its_shuffle(
        shared_data: Path, tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    pipeline = quarantine_pipeline(tmp_path)
    inputs = [reddit(tmp_path), *warcs(shared_data)[:2]]
    out = tmp_path / "out"
    cmd = cli_command(pipeline, inputs, out)
    kill_9_at(cmd, f"before_commit:1:pause:{faults}", faults)
    rounds = out / "work" / "steps" / "01" / "rounds"
    marker = rounds / "00-sources.json"
    assert marker.exists(), "the shuffle round had finished before the apply"
    before = {p: p.stat().st_mtime_ns for p in rounds.rglob("*") if p.is_file()}
    resumed = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "round 00-sources already done" in resumed.stderr
    assert "already finished step 0" in resumed.stderr
    assert before == {p: p.stat().st_mtime_ns for p in rounds.rglob("*") if p.is_file()}
    clean = tmp_path / "clean"
    assert main(["run", str(pipeline), "-i", *map(str, inputs), "-o", str(clean), "--no-progress"]) == 0
    assert kept(out) == kept(clean) and report(out) == report(clean)


def test_forcing_many_shuffle_partitions_gives_the_same_decisions(shared_data: Path, ray_session,
                                                                  tmp_path: Path) -> None:
    pipeline = quarantine_pipeline(tmp_path)
    inputs = [reddit(tmp_path), *warcs(shared_data)]
    profile = tmp_path / "many.yaml"
    profile.write_text("shuffle_partitions: 7\n")
    assert run_cli(pipeline, "-i", *inputs, "-o", tmp_path / "many", "--config", profile) == 0
    assert run_cli(pipeline, "-i", *inputs, "-o", tmp_path / "one") == 0
    marker = json.loads((tmp_path / "many" / "work" / "steps" / "01" / "rounds" / "00-sources.json").read_text())
    assert marker["partitions"] == 7
    assert kept(tmp_path / "many") == kept(tmp_path / "one")
    assert report(tmp_path / "many") == report(tmp_path / "one")


def test_a_gpu_stage_gets_a_step_of_its_own_and_runs_on_cpus_without_a_gpu(shared_data: Path, ray_session,
                                                                          tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "gpu.yaml"
    pipeline.write_text(QUICKSTART.read_text() + "  - plugins:GpuScorer: {}\n  - gopher_quality: {}\n")
    out = tmp_path / "out"
    assert run_cli(pipeline, "-i", *warcs(shared_data)[:3], "-o", out) == 0
    assert "no GPU in the Ray cluster" in capsys.readouterr().err
    steps = json.loads((out / "run.json").read_text())["steps"]
    assert [s["stages"] for s in steps] == [["warc_read", "extract", "language"], ["gpu_scorer"], ["gopher_quality"]]
    table = pq.read_table(out / "kept")
    assert table.num_rows and table["gpu_scorer_score"].null_count == 0 and "html" not in table.column_names
    assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]


def test_a_global_stage_that_keeps_failing_stops_the_run_with_its_name_and_an_example(
        shared_data: Path, ray_session, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "broken.yaml"
    pipeline.write_text(QUICKSTART.read_text() + "  - plugins:BrokenReduce: {}\n")
    out = tmp_path / "out"
    assert run_cli(pipeline, "-i", *warcs(shared_data)[:3], "-o", out) == 1
    printed = capsys.readouterr()
    assert "FAILED: broken_reduce: round hosts reduce failed for" in printed.out
    assert "ZeroDivisionError: the reduce cannot decide" in printed.out
    assert "Traceback" not in printed.out + printed.err
    assert json.loads((out / "run.json").read_text())["finished"]


def test_a_two_round_global_stage_killed_in_its_second_round_resumes_there(shared_data: Path, ray_session,
                                                                          tmp_path: Path) -> None:
    """Round 2 maps round 1's output; killed while mapping it, the resumed run reuses round 1 untouched."""
    faults = tmp_path / "faults"
    pipeline = tmp_path / "cap.yaml"
    pipeline.write_text(QUICKSTART.read_text() + "  - plugins:HostCap: {max_docs: 5}\n")
    inputs = warcs(shared_data)
    out = tmp_path / "out"
    cmd = cli_command(pipeline, inputs, out)
    profile = tmp_path / "p.yaml"
    profile.write_text("shuffle_partitions: 3\n")
    cmd += ["--config", str(profile)]
    kill_9_at(cmd, f"map-cap:1:pause:{faults}", faults)
    rounds = out / "work" / "steps" / "01" / "rounds"
    assert (rounds / "00-count.json").exists() and not (rounds / "01-cap.json").exists()
    first = {p: p.stat().st_mtime_ns for p in (rounds / "00-count").rglob("*")} | {
        rounds / "00-count.json": (rounds / "00-count.json").stat().st_mtime_ns}
    resumed = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "round 00-count already done" in resumed.stderr and (rounds / "01-cap.json").exists()
    assert first == {p: p.stat().st_mtime_ns for p in first}
    clean = tmp_path / "clean"
    assert main(["run", str(pipeline), "-i", *map(str, inputs), "-o", str(clean), "--no-progress"]) == 0
    assert kept(out) == kept(clean)
    removed = pq.read_table(out / "removed" / "host_cap")
    still_kept = pq.read_table(out / "work" / "steps" / "00" / "kept", columns=["host"])["host"].to_pylist()
    earlier = [pq.read_table(d, columns=["host"])["host"].to_pylist() for d in (out / "removed").iterdir()
               if d.name != "host_cap"]
    everything = still_kept + [h for hosts in earlier for h in hosts]  # it counts removed documents too
    big = {h for h in everything if everything.count(h) >= 5}
    assert big and set(removed["host"].to_pylist()) == big & set(still_kept)
    assert removed.num_rows == sum(h in big for h in still_kept)
    assert set(removed["host_cap_docs"].to_pylist()) == {everything.count(h) for h in big}


def gzip_members(data: bytes) -> list[bytes]:
    """The gzip members of a per-record-gzipped WARC, byte for byte."""
    import zlib

    members, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        members.append(data[pos:end])
        pos = end
    return members


def documents_by_record(data: bytes) -> list[bool]:
    """Per record (warcio, an independent reader): is it a document (HTTP-200 HTML response)?"""
    import io

    from warcio.archiveiterator import ArchiveIterator

    flags = []
    for rec in ArchiveIterator(io.BytesIO(data)):
        ok = rec.rec_type == "response" and rec.http_headers is not None
        ctype = (rec.http_headers.get_header("Content-Type") or "").split(";")[0].strip().lower() if ok else ""
        flags.append(ok and rec.http_headers.get_statuscode() == "200" and ctype in ("text/html",
                                                                                     "application/xhtml+xml"))
    return flags


@pytest.mark.parametrize("engine", ["fastwarc", "framer"])
def test_damaged_real_warcs_lose_only_their_damaged_records(shared_data: Path, ray_session, tmp_path: Path,
                                                            engine: str) -> None:
    """A corrupt gzip member mid-file, garbage spliced into an uncompressed file, a truncated tail: the healthy
    records after the damage are still read, the damage is one error row with a span, conservation holds."""
    damaged = tmp_path / "in"
    damaged.mkdir()
    original = (shared_data / "warc" / "dolma-wget-sample-0000.warc.gz").read_bytes()
    members = gzip_members(original)
    flags = documents_by_record(original)
    assert len(members) == len(flags)
    victim = next(i for i in range(len(flags) // 2, len(flags)) if flags[i])  # a document mid-file
    broken = bytearray(members[victim])
    broken[len(broken) // 2: len(broken) // 2 + 16] = b"\xff" * 16
    (damaged / "member.warc.gz").write_bytes(b"".join(members[:victim]) + bytes(broken) + b"".join(members[victim + 1:]))
    plain = (shared_data / "warc" / "aut-issue-493-webrecorder-2020.warc").read_bytes()
    cut = plain.index(b"WARC/1.0\r\n", len(plain) // 3)
    (damaged / "spliced.warc").write_bytes(plain[:cut] + b"\x00garbage\r\n" * 400 + plain[cut:])
    tail = (shared_data / "warc" / "dolma-wget-sample-0001.warc.gz").read_bytes()
    (damaged / "truncated.warc.gz").write_bytes(tail[: len(tail) - 5000])
    out = tmp_path / "out"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(QUICKSTART.read_text().replace("engine: fastwarc", f"engine: {engine}"))
    assert f"engine: {engine}" in pipeline.read_text()
    assert run_cli(pipeline, "-i", damaged, "-o", out) == 0
    stats = {Path(s["input"]).name: s for s in
             (json.loads(p.read_text()) for p in (out / "stats" / "files").glob("*.json"))}
    # The corrupted record is salvaged up to the damage and removed as `corrupt`; the bytes skipped until the
    # next member are one error row; every record after it is read.
    assert stats["member.warc.gz"]["documents"] == sum(flags)
    assert stats["spliced.warc"]["documents"] == sum(documents_by_record(plain))
    assert stats["truncated.warc.gz"]["documents"] >= sum(documents_by_record(tail[: len(tail) - 5000]))
    removed = pq.read_table(out / "removed" / "warc_read", columns=["warc_path", "reason"]).to_pylist()
    assert sorted((Path(r["warc_path"]).name, r["reason"]) for r in removed) == [
        ("member.warc.gz", "corrupt"), ("truncated.warc.gz", "truncated")]
    errors = {Path(e["input"]).name: e for e in pq.read_table(out / "errors").to_pylist()}
    assert set(errors) == {"member.warc.gz", "spliced.warc"}
    for error in errors.values():
        assert error["offset"] < error["end_offset"] and "resumed at the next record" in error["error"]
    assert errors["spliced.warc"]["end_offset"] - errors["spliced.warc"]["offset"] == len(b"\x00garbage\r\n" * 400)
    assert json.loads((out / "stats" / "stats.json").read_text())["conservation_ok"]


def test_a_plugin_found_only_through_the_drivers_sys_path_loads_in_the_embedded_rays_workers(
        shared_data: Path, tmp_path: Path) -> None:
    """A stage module the driver imports from a folder it put on sys.path itself (a notebook, a script next
    to its pipeline), not from PYTHONPATH: the embedded Ray's workers get that path too."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("stages:\n  - warc_read: {}\n  - extract: {}\n"
                        "  - plugins:FailOn: {fail_on: 'no document contains this'}\n")
    out = tmp_path / "out"
    args = ["run", str(pipeline), "-i", *map(str, warcs(shared_data)[:2]), "-o", str(out), "--workers", "2",
            "--no-progress", "--config", str(executor_profile(tmp_path, "ray"))]
    script = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); from curate.cli import main; "
              f"sys.exit(main({args!r}))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["executor"] == "ray"
    stats = json.loads((out / "stats" / "stats.json").read_text())
    assert stats["conservation_ok"] and stats["stages"]["fail_on"]["in"] > 0
