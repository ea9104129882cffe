"""Whole-process start-up and throughput of ``curate run`` against datatrove, as subprocesses, in the same run.

The other benches time stages inside one warm process; a user waits for a whole ``curate run``: the
interpreter, imports, config, the executor (a worker subprocess, or Ray), model loads, the extraction
child, the documents, the ledger and the exit. Every figure here is a whole process started with
``subprocess`` and reaped with ``os.wait4``: wall time, CPU (user + system of the process and every
descendant it reaped) and peak RSS (of the largest single process in that tree). Tools alternate run by
run and the medians are reported, so on a noisy shared machine the ratios are still comparable.

1. **quickstart**: ``curate run pipelines/quickstart.yaml --input examples/quickstart/quickstart.warc.gz
   --output <fresh> --no-progress`` (5 documents): median wall against the 4 s target, and where it goes
   (``run.json``'s ``profile``, the stage seconds of ``stats/stats.json``, and import probes); then once
   with a runtime profile ``executor: ray`` to show what Ray's start-up costs.
2. **a real corpus**: ``--records`` responses (real pages of ``shared/data/html``, ``bench/corpus.py --plain``)
   in ONE WARC through ``curate run pipelines/quickstart.yaml --workers 1`` and through a datatrove 0.10.1
   process doing the equivalent (``WarcReader -> Trafilatura(favour_precision=True) ->
   LanguageFilter(["en"], 0.65) -> JsonlWriter``, ``LocalPipelineExecutor(tasks=1, workers=1)``, this file
   re-run as ``--datatrove-child``). Datatrove runs at ~20-30 docs/s, so it reads the first
   ``--datatrove-records`` responses and is scaled to the full corpus as its fixed cost plus its per-response
   run time; curate also runs on that subset, for a like-for-like whole-process ratio without scaling.
   Both are pinned to one core (``--no-pin`` to lift it), so the ratios are per core. Rates are response
   records per second, the same input for both tools (datatrove's reader drops some of them by libmagic).

The per-document ratio is what the tools do once running: curate's responses over its stage seconds
(``stats.json``) or over its step (``step0_s``), datatrove's over the sum of its steps' ``time_stats`` or
over ``executor.run()``. The fixed cost is the wall time minus that step time.

    python bench/whole_process.py            # quickstart x5 + Ray once; 2,000 responses x3 (datatrove on 300)
    python bench/whole_process.py --runs 5 --records 2000 --datatrove-records 400
    python bench/whole_process.py --smoke    # one run of each on a handful of documents, in a temp dir
"""

from __future__ import annotations

import time

T_MODULE = time.time()  # the datatrove child reports when its interpreter got here

import argparse  # noqa: E402 - after the clock, so the child's import time is its own
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from texts import curate_cmd, reap  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "_work" / "whole-process"
QUICKSTART_PIPELINE = "pipelines/quickstart.yaml"
QUICKSTART_INPUT = "examples/quickstart/quickstart.warc.gz"
TARGET_S = 4.0
#: Modules whose import costs a tenth of a second or more; the probe lists which a pipeline load pulls in.
HEAVY = ("pyarrow", "pandas", "pydantic", "fsspec", "ray", "fasttext", "resiliparse", "trafilatura", "numpy")


# ---- one whole process -----------------------------------------------------------------------------

@dataclass
class Proc:
    """A finished subprocess: wall, CPU of its reaped tree, peak RSS of its largest process."""

    wall: float
    cpu: float
    rss_mb: float
    rc: int
    log: Path
    spawned: float  # time.time() just before the spawn, for the child's own clock
    info: dict = field(default_factory=dict)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def spawn(cmd: list[str], log: Path, cpu: int | None = None, timeout_s: float = 600.0) -> Proc:
    """Run ``cmd`` from the repository root, stdout+stderr into ``log``; reaped by ``os.wait4``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    preexec = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        spawned = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=preexec)
        usage = reap(proc, timeout_s)
        wall = time.perf_counter() - t0
    return Proc(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, log, spawned)


def checked(proc: Proc, what: str) -> Proc:
    if proc.rc != 0:
        tail = "\n".join(proc.output().splitlines()[-25:])
        raise SystemExit(f"{what} exited with {proc.rc} after {proc.wall:.1f} s; log {proc.log}:\n{tail}")
    return proc


def run_curate(args: list[str], out: Path, log: Path, cpu: int | None = None) -> Proc:
    """One ``curate run`` into a fresh ``out``; ``info`` gets run.json's profile/executor and stats.json."""
    shutil.rmtree(out, ignore_errors=True)
    proc = checked(spawn([*curate_cmd(), "run", *args, "--output", str(out), "--no-progress"], log, cpu),
                   "curate run " + " ".join(args))
    run = json.loads((out / "run.json").read_text())
    stats = json.loads((out / "stats" / "stats.json").read_text())
    profile = run.get("profile", {})
    steps = sum(v for k, v in profile.items() if k.startswith("step"))
    proc.info = {
        "executor": run.get("executor", "?"), "profile": profile, "steps_s": steps,
        "stage_s": sum(s["seconds"] for s in stats["stages"].values()),
        "responses": stats["records"].get("response", 0), "documents": stats["documents"],
        "kept": stats["totals"].get("kept", 0),
        # inside total_s but in no step nor the ledger: the pools' close (worker, extraction child; ray.shutdown)
        "unattributed_s": profile.get("total_s", 0) - profile.get("start_s", 0) - steps - profile.get("ledger_s", 0),
        "outside_s": proc.wall - profile.get("total_s", 0),  # before Runner.run's clock starts, and the exit
    }
    shutil.rmtree(out, ignore_errors=True)
    return proc


def med(procs: list[Proc], key) -> float:
    return statistics.median(key(p) for p in procs)


# ---- the datatrove child ---------------------------------------------------------------------------

def datatrove_child(corpus: str, out: str, lid: str, timeout_s: float) -> int:
    """``python bench/whole_process.py --datatrove-child CORPUS OUT --lid PATH``: the equivalent pipeline.

    Writes ``OUT/report.json`` with its own clock (module top, imports done, pipeline built, run done) and
    datatrove's stats, so the parent can split the whole process into start-up, run and exit.
    """
    t_start = time.time()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    t_imported = time.time()
    language = LanguageFilter(languages=["en"], language_threshold=0.65)
    language.model.MODEL_URL = lid  # offline: curate's bundled lid.176.ftz instead of the download
    pipeline = [
        WarcReader(corpus, glob_pattern="*.warc.gz"),
        Trafilatura(favour_precision=True, timeout=timeout_s),
        language,
        JsonlWriter(os.path.join(out, "output"), output_filename="out.jsonl.gz"),
    ]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=os.path.join(out, "logs"),
                                     skip_completed=False)
    t_built = time.time()
    executor.run()
    t_done = time.time()
    steps = json.loads(Path(out, "logs", "stats.json").read_text())

    def total(value) -> float:
        return value.get("total", 0) if isinstance(value, dict) else value

    by_name = {s["name"]: s for s in steps}
    reader = next(s for n, s in by_name.items() if "Warc" in n)
    writer = next(s for n, s in by_name.items() if "Jsonl" in n)
    report = {
        "t_module": T_MODULE, "imports_s": t_imported - t_start, "build_s": t_built - t_imported,
        "run_s": t_done - t_built, "t_done": t_done, "step_s": sum(total(s.get("time_stats", 0)) for s in steps),
        "docs_in": int(total(reader["stats"].get("documents", 0))),
        "docs_out": int(total(writer["stats"].get("total", 0))),
    }
    Path(out, "report.json").write_text(json.dumps(report))
    return 0


def run_datatrove(corpus: Path, out: Path, log: Path, lid: str, cpu: int | None) -> Proc:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = checked(spawn([sys.executable, str(Path(__file__).resolve()), "--datatrove-child", str(corpus), str(out),
                          "--lid", lid], log, cpu), "the datatrove child")
    report = json.loads((out / "report.json").read_text())
    proc.info = report | {
        "interpreter_s": report["t_module"] - proc.spawned,  # interpreter start + this file's first lines
        "after_run_s": proc.wall - (report["t_done"] - proc.spawned),  # exit (Manager shutdown, interpreter)
    }
    shutil.rmtree(out, ignore_errors=True)
    return proc


# ---- the corpus ------------------------------------------------------------------------------------

def corpus_files(folder: Path, records: int, pages: int | None, html: Path | None) -> Path:
    """``records`` responses in ONE WARC under ``folder``, built by corpus.py --plain unless already there."""
    import corpus

    manifest = folder / "manifest.json"
    if manifest.is_file():
        known = json.loads(manifest.read_text())
        if known.get("records") == records and len(known.get("files", [])) == 1 and known.get("pages") == (
                pages or known.get("pages")) and (folder / known["files"][0]["file"]).is_file():
            return folder / known["files"][0]["file"]
    argv = ["--records", str(records), "--files", "1", "--out", str(folder)]
    argv += ["--pages", str(pages)] if pages else []
    argv += ["--html", str(html)] if html else []
    corpus.main(["--plain", *argv])
    return folder / json.loads(manifest.read_text())["files"][0]["file"]


def first_responses(path: Path, n: int, folder: Path) -> Path:
    """A WARC holding the first ``n`` responses of ``path`` (cut at a record boundary), alone in ``folder``."""
    from extract import count_responses, subset

    shutil.rmtree(folder, ignore_errors=True)
    [part] = subset([path], n, folder)
    if part.parent != folder:  # fewer than n responses: the whole file
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())
        part = folder / path.name
    assert count_responses([part]) == min(n, count_responses([path])), part
    return part


# ---- reports ---------------------------------------------------------------------------------------

def probe(code: str, log: Path, runs: int) -> float:
    """Median wall of ``python -c code`` (an import probe: what a process pays before doing anything)."""
    return statistics.median(checked(spawn([sys.executable, "-c", code], log), f"python -c {code!r}").wall
                             for _ in range(min(runs, 3)))


def quickstart(work: Path, runs: int) -> dict:
    args = [QUICKSTART_PIPELINE, "--input", QUICKSTART_INPUT]
    print(f"== quickstart: curate run {' '.join(args)} --output <fresh dir> --no-progress   ({runs} run(s))",
          flush=True)
    local = [run_curate(args, work / "qs-out", work / "logs" / f"quickstart-{i}.log") for i in range(runs)]
    ray_config = work / "ray.yaml"
    ray_config.write_text("executor: ray\n")
    ray = run_curate([*args, "--config", str(ray_config)], work / "qs-ray-out", work / "logs" / "quickstart-ray.log")
    probes = {
        "interpreter": probe("pass", work / "logs" / "probe.log", runs),
        "imports": probe("import curate.cli, curate.runner", work / "logs" / "probe.log", runs),
        "pipeline": probe(f"import curate.cli, curate.runner; from curate.config import load_pipeline; "
                          f"load_pipeline({QUICKSTART_PIPELINE!r})", work / "logs" / "probe.log", runs),
    }
    heavy = checked(spawn([sys.executable, "-c", "import sys; from curate.config import load_pipeline; "
                           f"load_pipeline({QUICKSTART_PIPELINE!r}); "
                           "print('loaded:', *[m for m in HEAVY if m in sys.modules])".replace("HEAVY", repr(HEAVY))],
                          work / "logs" / "probe-heavy.log"), "the module probe").output()
    probes["heavy"] = heavy.split("loaded:", 1)[-1].split()
    wall = med(local, lambda p: p.wall)
    verdict = "yes" if wall < TARGET_S else "NO"
    print(f"  local executor ({local[0].info['executor']}): wall median {wall:.2f} s "
          f"(min {min(p.wall for p in local):.2f}, max {max(p.wall for p in local):.2f}) -> under {TARGET_S:.0f} s: "
          f"{verdict}; cpu {med(local, lambda p: p.cpu):.2f} s, "
          f"peak RSS {med(local, lambda p: p.rss_mb):.0f} MB; {local[0].info['documents']} documents, "
          f"{local[0].info['kept']} kept")
    print(f"  executor: ray (1 run, --config {ray_config.name} with 'executor: ray'): wall {ray.wall:.2f} s, "
          f"cpu {ray.cpu:.2f} s (Ray's daemons are only partly reaped), peak RSS {ray.rss_mb:.0f} MB; "
          f"run.json executor {ray.info['executor']!r}")
    local_start = med(local, lambda p: p.info["profile"].get("start_s", 0))
    print(f"  Ray's start-up costs {ray.wall - wall:+.2f} s of wall over the local executor "
          f"(start_s {ray.info['profile'].get('start_s', 0):.2f} vs {local_start:.2f})")
    print("  where the wall time goes (medians, s):")
    rows = []
    for label, procs in (("local", local), ("ray", [ray])):
        prof = lambda key, ps=procs: med(ps, lambda p: p.info["profile"].get(key, 0))  # noqa: E731
        steps, stages = med(procs, lambda p: p.info["steps_s"]), med(procs, lambda p: p.info["stage_s"])
        rows.append((label, med(procs, lambda p: p.wall), med(procs, lambda p: p.info["outside_s"]),
                     prof("start_s"), steps - stages, stages, med(procs, lambda p: p.info["unattributed_s"]),
                     prof("ledger_s")))
    print(f"    {'executor':<9} {'wall':>6} {'outside':>8} {'start':>6} {'steps-':>7} {'stages':>7} {'close':>6} "
          f"{'ledger':>7}")
    for row in rows:
        print(f"    {row[0]:<9} " + " ".join(f"{v:{w}.2f}" for v, w in zip(row[1:], (6, 8, 6, 7, 7, 6, 7))))
    print("    outside = wall - run.json total_s (interpreter, imports, config, Runner set-up, run.json, exit);\n"
          "    start = executor start (start_s); steps- = step time minus stage seconds (worker process, its imports,\n"
          "    stage set-up: model load, extraction child; Parquet writes, commits); stages = sum of stats.json stage\n"
          "    seconds; close = total_s - start - steps - ledger (pool close, ray.shutdown: in no profile field)")
    print(f"  import probes (median wall of a bare python -c): interpreter {probes['interpreter']:.2f} s, "
          f"'import curate.cli, curate.runner' {probes['imports']:.2f} s, + load_pipeline(quickstart) "
          f"{probes['pipeline']:.2f} s; so of 'outside' {rows[0][2]:.2f} s, imports + config take "
          f"~{probes['pipeline']:.2f} s")
    print(f"  heavy modules loaded by load_pipeline(quickstart) alone: {', '.join(probes['heavy']) or 'none'} "
          f"(of {', '.join(HEAVY)}; the worker subprocess imports the same stage modules again)", flush=True)
    return {"local": local, "ray": ray, "probes": probes}


def corpus_ab(args, work: Path, cpu: int | None) -> None:
    from curate.stages.language import lid176_path

    lid = lid176_path()
    if args.smoke:
        from texts import SHARED_DATA

        folder = work / "smoke-corpus"
        path = corpus_files(folder, args.records, 12, SHARED_DATA / "html" / "scrapinghub-aeb")
    else:
        folder = WORK / f"corpus-{args.records}x1"
        path = corpus_files(folder, args.records, None, None)
    full_n = sum(1 for _ in _responses(path))
    sub = first_responses(path, args.datatrove_records, work / "subset")
    sub_n = min(args.datatrove_records, full_n)
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    print(f"\n== corpus: {full_n} responses in one WARC ({shown}, "
          f"{path.stat().st_size / 1e6:.0f} MB); datatrove and a second curate run on the first {sub_n}; "
          f"{args.runs} run(s) alternating; {'pinned to CPU ' + str(cpu) if cpu is not None else 'not pinned'}")
    print(f"  curate:    curate run {QUICKSTART_PIPELINE} --input CORPUS --workers 1 --output <fresh> --no-progress")
    print(f"  datatrove: {Path(sys.executable).name} bench/whole_process.py --datatrove-child SUBSET_DIR OUT --lid "
          f"lid.176.ftz (WarcReader -> Trafilatura(favour_precision=True, timeout=2) -> LanguageFilter(['en'], 0.65) "
          f"-> JsonlWriter; LocalPipelineExecutor tasks=1 workers=1)", flush=True)
    cur_full, cur_sub, dtv = [], [], []
    for i in range(args.runs):
        def a() -> None:
            cur_full.append(run_curate([QUICKSTART_PIPELINE, "--input", str(path), "--workers", "1"], work / "c-out",
                                       work / "logs" / f"curate-full-{i}.log", cpu))
            cur_sub.append(run_curate([QUICKSTART_PIPELINE, "--input", str(sub), "--workers", "1"], work / "c-out",
                                      work / "logs" / f"curate-subset-{i}.log", cpu))

        def b() -> None:
            dtv.append(run_datatrove(sub.parent, work / "dt-out", work / "logs" / f"datatrove-{i}.log", lid, cpu))

        for step in ((a, b) if i % 2 == 0 else (b, a)):  # A/B, then B/A: drift hits both alike
            step()
        print(f"  run {i + 1}: curate {full_n}: {cur_full[-1].wall:.2f} s | curate {sub_n}: {cur_sub[-1].wall:.2f} s | "
              f"datatrove {sub_n}: {dtv[-1].wall:.2f} s", flush=True)
    for procs, n in ((cur_full, full_n), (cur_sub, sub_n)):
        got = procs[0].info["responses"]
        assert got == n, f"curate read {got} responses, expected {n}"
        assert procs[0].info["executor"] == "local", procs[0].info["executor"]

    # datatrove on the full corpus, estimated: its fixed cost + its per-response run time x full_n
    dt_fixed = med(dtv, lambda p: p.wall - p.info["run_s"])
    dt_per = med(dtv, lambda p: p.info["run_s"]) / sub_n
    dt_scaled_wall = dt_fixed + dt_per * full_n

    def rate(n: int, s: float) -> float:
        return n / s if s else float("nan")

    print(f"\n  whole process, medians      {'responses':>9} {'wall s':>7} {'cpu s':>7} {'RSS MB':>7} {'docs/s':>8} "
          f"{'step s':>7} {'stages s':>8} {'fixed s':>8}")
    table = []
    for label, procs, n in (("curate --workers 1", cur_full, full_n), ("curate --workers 1, subset", cur_sub, sub_n)):
        wall, step, stages = med(procs, lambda p: p.wall), med(procs, lambda p: p.info["steps_s"]), \
            med(procs, lambda p: p.info["stage_s"])
        table.append((label, n, wall, med(procs, lambda p: p.cpu), med(procs, lambda p: p.rss_mb), rate(n, wall),
                      step, stages, wall - step))
    dt_wall, dt_run, dt_steps = med(dtv, lambda p: p.wall), med(dtv, lambda p: p.info["run_s"]), \
        med(dtv, lambda p: p.info["step_s"])
    dt_cpu = med(dtv, lambda p: p.cpu)
    table.append(("datatrove, subset", sub_n, dt_wall, dt_cpu, med(dtv, lambda p: p.rss_mb), rate(sub_n, dt_wall),
                  dt_run, dt_steps, dt_wall - dt_run))
    table.append((f"datatrove, scaled to {full_n}", full_n, dt_scaled_wall, dt_cpu * full_n / sub_n,
                  float("nan"), rate(full_n, dt_scaled_wall), dt_per * full_n, dt_steps / sub_n * full_n, dt_fixed))
    for row in table:
        print(f"  {row[0]:<28} {row[1]:>9} {row[2]:7.2f} {row[3]:7.2f} {row[4]:7.0f} {row[5]:8.1f} {row[6]:7.2f} "
              f"{row[7]:8.2f} {row[8]:8.2f}")
    print("  step s: curate's run.json step0_s, datatrove's executor.run(); stages s: curate's stats.json stage\n"
          "  seconds, datatrove's summed time_stats; fixed s = wall - step s. Scaled: fixed + (run per response) x\n"
          "  responses;"
          f" its cpu is the subset's x {full_n}/{sub_n} (an upper bound: the fixed part is scaled too).")

    cf, cs = table[0], table[1]
    whole_full = cf[5] / table[3][5]
    whole_sub = cs[5] / table[2][5]
    per_step = rate(full_n, cf[6]) / rate(sub_n, dt_run)
    per_stage = rate(full_n, cf[7]) / rate(sub_n, dt_steps)
    cpu_ratio = (table[3][3] / full_n) / (cf[3] / full_n)
    print("\n  ratios curate / datatrove (responses per second, per core):")
    print(f"    whole process, {full_n} responses (datatrove scaled): {whole_full:6.1f}x")
    print(f"    whole process, the same {sub_n} responses (both measured): {whole_sub:6.1f}x")
    print(f"    per document, step time (step0_s vs executor.run):  {per_step:6.1f}x")
    print(f"    per document, stage time (stage seconds vs time_stats): {per_stage:6.1f}x")
    print(f"    cpu seconds per response (datatrove's / curate's, {full_n}): {cpu_ratio:6.1f}x")
    print(f"    the whole-process ratio reaches {whole_full / per_stage:.0%} of the per-document (stage) one at "
          f"{full_n} responses, {whole_sub / per_stage:.0%} at {sub_n}")
    c_prof = lambda key: med(cur_full, lambda p: p.info["profile"].get(key, 0))  # noqa: E731
    print(f"  fixed cost, curate ({full_n}): wall - step0_s = {cf[8]:.2f} s (outside the profile "
          f"{med(cur_full, lambda p: p.info['outside_s']):.2f}, executor start {c_prof('start_s'):.2f}, close "
          f"{med(cur_full, lambda p: p.info['unattributed_s']):.2f}, ledger {c_prof('ledger_s'):.2f}); "
          f"wall - stage seconds = {cf[2] - cf[7]:.2f} s")
    d_info = lambda key: med(dtv, lambda p: p.info[key])  # noqa: E731
    print(f"  fixed cost, datatrove ({sub_n}): wall - executor.run = {dt_fixed:.2f} s (interpreter "
          f"{d_info('interpreter_s'):.2f}, datatrove imports {d_info('imports_s'):.2f}, pipeline built "
          f"{d_info('build_s'):.2f}, exit {d_info('after_run_s'):.2f}); wall - time_stats = {dt_wall - dt_steps:.2f} s "
          "(also its lazy lid.176 load, its extractor sandbox start and JsonlWriter's close)")
    print(f"  datatrove's reader accepted {dtv[0].info['docs_in']} of {sub_n} responses, "
          f"wrote {dtv[0].info['docs_out']}; "
          f"curate read {cur_sub[0].info['documents']} documents of them, kept {cur_sub[0].info['kept']}", flush=True)


def _responses(path: Path):
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with open(path, "rb") as fh:
        yield from ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs of each measurement (default 5 quickstart, 3 corpus)")
    ap.add_argument("--records", type=int, default=2000, help="responses in the corpus WARC")
    ap.add_argument("--datatrove-records", type=int, default=300, help="first responses datatrove (and curate) read")
    ap.add_argument("--cpu", type=int, default=None, help="core for the corpus runs (default: the last allowed one)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the corpus runs to one core")
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--skip-corpus", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help="16 responses (datatrove on 8), one run of each, in a temp dir")
    ap.add_argument("--datatrove-child", nargs=2, metavar=("CORPUS_DIR", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--lid", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.datatrove_child:
        return datatrove_child(*args.datatrove_child, lid=args.lid, timeout_s=2.0)

    from texts import shared_data

    shared_data()  # no shared data, no measurement: fail loudly
    if args.smoke:
        args.records, args.datatrove_records = 16, 8
    qs_runs = args.runs or (1 if args.smoke else 5)
    args.runs = args.runs or (1 if args.smoke else 3)
    cpu = None
    if not args.no_pin and hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        cpu = allowed[-1] if args.cpu is None else args.cpu
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    t0 = time.perf_counter()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; scratch {work.relative_to(REPO)}",
          flush=True)
    try:
        if not args.skip_quickstart:
            quickstart(work, qs_runs)
        if not args.skip_corpus:
            corpus_ab(args, work, cpu)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average {os.getloadavg()[0]:.2f}; bench took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
