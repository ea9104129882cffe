"""The only module that knows Ray: plans steps, runs them on supervised actor pools, shuffles global stages.

A pipeline is cut into steps at global stages and wherever a stage's :class:`~curate.stage.Resources`
change (a GPU classifier gets a pool of its own, fed by CPU steps)::

    [reader + document stages] -> [document stages on GPUs] -> global stage -> [document stages] -> ...

Every step is units run on a :class:`Pool` of actors: per-document steps over input files (step 0) or the
kept parts each file committed in the step before; a global stage's :class:`~curate.stage.ShuffleRound`
s over units (map) and shuffle partitions (reduce), a marker per round, then an apply per unit. Each unit
that writes documents commits one manifest, last (:mod:`curate.commit`), so re-running the same command
resumes where a crash stopped it, and a unit redone after a failure leaves nothing of its earlier attempt.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from curate.audit.ledger import Conservation, Ledger, build_ledger, merge_stats, policy_violations
from curate.commit import Commit, current_chain, expected_key, kept_dest, load_commits, step_digest, sweep
from curate.config import ConfigError, Pipeline, RuntimeProfile
from curate.console import log, progress
from curate.execute import (ARTIFACTS, ApplyJob, ApplyUnit, DocumentJob, DocumentUnit, MapJob, MapUnit, ReduceJob,
                            ReduceUnit, data_bytes)
from curate.io.fs import InputError, Location, expand_inputs, file_id, remove_temporaries, select_inputs, \
    write_text_atomic
from curate.schema import TRANSIENT_COLUMNS
from curate.stage import DocumentStage, GlobalStage, Resources, RoundResult, ShuffleRound, next_round


@dataclass
class Step:
    index: int
    kind: str  # "documents" | "global"
    stages: list[Any] = field(default_factory=list)

    @property
    def resources(self) -> Resources:
        if self.kind == "global":
            return Resources()
        stages = [s for s in self.stages if isinstance(s, DocumentStage)]
        if not stages:
            return Resources()
        return Resources(cpus=max(s.resources.cpus for s in stages), gpus=max(s.resources.gpus for s in stages))

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "stages": [s.name for s in self.stages]}


@dataclass
class RunResult:
    conservation: Conservation
    stats: dict[str, Any]
    failed_inputs: list[str]
    problems: list[str] = field(default_factory=list)
    profile: dict[str, float] = field(default_factory=dict)  # seconds: start-up, each step, total

    @property
    def ok(self) -> bool:
        return (self.conservation.ok and not self.conservation.unfinished and not self.failed_inputs
                and not self.problems)


class GlobalStageError(RuntimeError):
    """A global stage's map or reduce kept failing: its decision cannot be made, the run stops."""


def plan_steps(pipeline: Pipeline) -> list[Step]:
    """Cut the pipeline at global stages and where document stages' resources change."""
    steps: list[Step] = [Step(0, "documents", [pipeline.stages[0]])]
    for stage in pipeline.stages[1:]:
        last = steps[-1]
        if isinstance(stage, GlobalStage):
            steps.append(Step(len(steps), "global", [stage]))
        elif last.kind == "global" or stage.resources != last.resources:  # a GPU stage never joins the reader
            steps.append(Step(len(steps), "documents", [stage]))
        else:
            last.stages.append(stage)
    return steps


def drop_plan(pipeline: Pipeline) -> dict[str, tuple[str, ...]]:
    """Per stage, the transient columns (``html``) that no later stage reads: dropped right after it."""
    stages = [s for s in pipeline.stages if isinstance(s, DocumentStage)]
    plan: dict[str, tuple[str, ...]] = {}
    for column in TRANSIENT_COLUMNS:
        if column == "error":
            continue
        readers = [i for i, s in enumerate(stages) if column in s.reads]
        if readers:
            plan.setdefault(stages[readers[-1]].name, ())
            plan[stages[readers[-1]].name] += (column,)
    return plan


def _versions() -> dict[str, str]:
    names = ["curate", "ray", "pyarrow", "fastwarc", "resiliparse", "trafilatura", "fasttext-numpy2-wheel",
             "warcio"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


class _Actor:
    """A pool member: holds one job (set-up stages stay loaded across units) and runs units of it.

    Units name the job they belong to (``token``): a job that failed to load here (a plug-in module this
    worker cannot import) fails its units instead of running them on the previous job.
    """

    def __init__(self) -> None:
        self.job: Any = None
        self.token: int | None = None

    def load(self, job: Any, token: int) -> None:
        previous, self.job, self.token = self.job, job, token
        if previous is not None:
            previous.close()

    def run(self, unit: Any, token: int) -> Any:
        if token != self.token:
            raise RuntimeError("this worker could not load the step's job (a module it cannot import?)")
        return self.job.run(unit)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None


class Pool:
    """Supervised actors of one resource shape.

    A dead actor (OOM kill, a segfault in a C extension, ``os._exit``) is replaced by a fresh one and its
    unit is retried there, up to ``attempts`` tries in all; so is a unit whose call raised. A unit that
    keeps failing is reported back, never raised: the caller decides what it means (an unfinished input,
    or a global stage that cannot decide).
    """

    def __init__(self, ray, resources: Resources, size: int, attempts: int, progress: bool) -> None:
        self.ray, self.size, self.attempts, self.progress = ray, size, attempts, progress
        self.remote = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_restarts=0,
                                 max_task_retries=0)(_Actor)
        self.actors: list[Any] = []
        self.job: Any = None
        self.token = 0

    def _spawn(self) -> Any:
        actor = self.remote.remote()
        actor.load.remote(self.job, self.token)  # queued ahead of its first unit
        return actor

    def run(self, job: Any, units: list[Any], label: str, docs_of=None, what: str = "docs"
            ) -> tuple[dict[str, Any], dict[str, str]]:
        """Run every unit; returns (results by unit id, failure message by unit id). ``docs_of(result)``
        counts what a unit did (``what``: docs, tokens) for the progress bar's rate."""
        ray = self.ray
        self.job, self.token = job, self.token + 1
        wanted = min(self.size, len(units))
        loads = [actor.load.remote(job, self.token) for actor in self.actors]
        while len(self.actors) < wanted:
            self.actors.append(self._spawn())
        try:
            ray.get(loads)
        except ray.exceptions.RayTaskError as exc:  # the job cannot be unpickled there: every unit would fail
            return {}, {unit.unit: f"the job could not be loaded in a worker: {_first_line(exc)}" for unit in units}
        results: dict[str, Any] = {}
        failed: dict[str, str] = {}
        queue = [(u, 1) for u in reversed(units)]
        idle = list(self.actors[:wanted])
        pending: dict[Any, tuple[Any, Any, int]] = {}
        bar = progress(len(units), label, self.progress)
        docs, t0 = 0, time.time()
        try:
            while queue or pending:
                while queue and idle:
                    (unit, attempt), actor = queue.pop(), idle.pop()
                    pending[actor.run.remote(unit, self.token)] = (unit, actor, attempt)
                [ref], _ = ray.wait(list(pending), num_returns=1)
                unit, actor, attempt = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the unit raised; the actor is fine
                    idle.append(actor)
                    self._retry_or_fail(unit, attempt, _first_line(exc), queue, failed)
                    continue
                except ray.exceptions.RayError as exc:  # the actor died: replace it, retry on the new one
                    replacement = self._replace(actor)
                    idle.append(replacement)
                    self._retry_or_fail(unit, attempt, f"worker died: {_first_line(exc)}", queue, failed)
                    continue
                idle.append(actor)
                results[unit.unit] = result
                docs += docs_of(result) if docs_of else 0
                bar.update(1)
                if docs_of:
                    bar.set_postfix_str(f"{docs} {what}, {docs / max(time.time() - t0, 1e-9):.0f} {what}/s")
        finally:
            bar.close()
        return results, failed

    def _retry_or_fail(self, unit: Any, attempt: int, why: str, queue: list, failed: dict[str, str]) -> None:
        if attempt < self.attempts:
            log(f"{unit.unit}: attempt {attempt} of {self.attempts} failed ({why}); retrying")
            queue.append((unit, attempt + 1))
        else:
            failed[unit.unit] = f"failed {attempt} times; last: {why}"

    def _replace(self, dead: Any) -> Any:
        self._kill(dead)
        fresh = self._spawn()
        self.actors[self.actors.index(dead)] = fresh
        return fresh

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(actor, no_restart=True)

    def close(self) -> None:
        """Tear down every actor's job (an extraction child, a model), then kill the actors; never raises."""
        ray = self.ray
        refs = [actor.close.remote() for actor in self.actors]
        with contextlib.suppress(Exception):  # a dead actor has nothing left to close
            ray.wait(refs, num_returns=len(refs), timeout=30)
        for actor in self.actors:
            self._kill(actor)
        self.actors = []


def _first_line(exc: BaseException) -> str:
    """A Ray error's cause in one line (Ray prefixes several lines of its own)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not hasattr(cause, "cause"):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:500]


class Runner:
    def __init__(self, pipeline: Pipeline, inputs: list[str], output: str, profile: RuntimeProfile,
                 progress: bool = True, shard: tuple[int, int] | None = None, limit: int | None = None) -> None:
        self.pipeline = pipeline
        self.output = output.rstrip("/")
        self.profile = profile
        self.progress = progress
        expanded = expand_inputs(inputs, profile.storage_options, profile.listing_base_url)  # fails before Ray
        self.inputs = select_inputs(expanded, shard, limit) if shard or limit else expanded
        self.units = {file_id(uri): uri for uri in self.inputs}
        self.steps = plan_steps(pipeline)
        self.kinds = [s.kind for s in self.steps]
        self.out = Location(self.output, dict(profile.storage_options))
        self.fs, self.root = self.out.resolve()
        self.commits: dict[int, dict[str, Commit]] = {}
        self.chain: list[dict[str, Commit]] = []
        self.unfinished: dict[str, str] = {}  # input URI -> why
        self._pools: dict[Resources, Pool] = {}
        self._local_pool: Any = None

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _check_output(self) -> dict[str, Any]:
        """Refuse to resume an output folder written by a different pipeline or curate version."""
        path = f"{self.root}/run.json"
        if self.fs.exists(path):
            with self.fs.open(path, "r") as f:
                previous = json.load(f)
            if previous.get("fingerprint") != self.pipeline.fingerprint():
                raise ConfigError(f"{self.output} holds a run of a different pipeline configuration or curate "
                                  f"version ({previous.get('pipeline', {}).get('name')}, curate "
                                  f"{previous.get('versions', {}).get('curate')}); use a new --output")
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
            "steps": [s.describe() for s in self.steps],
            "versions": _versions(),
            "python": sys.version.split()[0],
            "host": platform.node(),
            "started": previous.get("started", datetime.now(timezone.utc).isoformat()),
            "attempts": previous.get("attempts", 0) + 1,
        }
        self._write_run_json(info)
        t0 = time.time()
        self.commits = load_commits(self.fs, self.root)
        self._refresh()
        dropped = sorted({c.input for c in self.commits.get(0, {}).values()} - set(self.inputs))
        if dropped:
            log(f"{len(dropped)} inputs of an earlier attempt are not inputs of this run; their outputs leave the "
                f"corpus (e.g. {dropped[0]})")
        swept = sweep(self.fs, self.root, self.chain)
        if swept:
            log(f"removed {swept} parts and manifests of interrupted or superseded attempts")
        problems: list[str] = []
        local = self._use_local()
        info["executor"] = "local" if local else "ray"
        if local:
            from curate.worker import ProcessPool

            ray, started_here = None, False
            self._local_pool = ProcessPool(self.profile.unit_attempts, self.progress)
        else:
            import ray

            started_here = not ray.is_initialized()
            if started_here:
                _init_ray(self.profile)
        profile = {"start_s": round(time.time() - t0, 3)}
        try:
            for step in self.steps:
                s0 = time.time()
                if step.kind == "documents":
                    self._run_documents(ray, step)
                elif self._blocked(step):
                    problems.append(f"{step.stages[0].name} (and every step after it) did not run: it needs "
                                    f"every input, and {len(self.unfinished)} are unfinished")
                    break
                else:
                    self._run_global(ray, step)
                profile[f"step{step.index}_s"] = round(time.time() - s0, 3)
                violations = policy_violations(merge_stats(self.chain, self._order()), self.pipeline.failure, self.steps[: step.index + 1])
                if violations:
                    problems += violations
                    if step.index < len(self.steps) - 1:
                        problems.append(f"stopped after step {step.index}: the failure policy was exceeded")
                    break
        except GlobalStageError as exc:
            problems.append(str(exc))
        finally:
            t_close = time.time()
            for pool in [*self._pools.values(), *([self._local_pool] if self._local_pool else [])]:
                pool.close()
            if started_here:
                ray.shutdown()
            profile["close_s"] = round(time.time() - t_close, 3)
        t_ledger = time.time()
        sweep(self.fs, self.root, self.chain)
        ledger: Ledger = build_ledger(self.out, self.chain, self.units, self._order())
        info.update({"finished": datetime.now(timezone.utc).isoformat(),
                     "failed_inputs": dict(sorted(self.unfinished.items())), "problems": problems,
                     "profile": {**profile, "ledger_s": round(time.time() - t_ledger, 3),
                                 "total_s": round(time.time() - t0, 3)},
                     "conservation": {"ok": ledger.conservation.ok, **ledger.conservation.totals}})
        self._write_run_json(info)
        return RunResult(conservation=ledger.conservation, stats=ledger.stats, failed_inputs=sorted(self.unfinished),
                         problems=problems, profile=info["profile"])

    def _order(self) -> list[str]:
        return [s.name for s in self.pipeline.stages]

    def _refresh(self) -> None:
        """Recompute which commits are current: a redone step supersedes the later steps' commits."""
        self.chain = current_chain(self.commits, self.kinds, set(self.units))

    def _committed(self, step: int, results: dict[str, Commit]) -> None:
        self.commits.setdefault(step, {}).update(results)
        self._refresh()

    def _use_local(self) -> bool:
        """The worker-subprocess executor (:mod:`curate.worker`) when Ray would only add its start-up cost:
        no cluster named or already joined in this process, and one input or one worker."""
        if self.profile.executor != "auto":
            return self.profile.executor == "local"
        ray = sys.modules.get("ray")
        if self.profile.ray_address or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
            return False
        return self.profile.workers == 1 or len(self.inputs) == 1

    def _pool(self, ray, resources: Resources) -> Pool:
        if self._local_pool is not None:
            return self._local_pool
        if resources.gpus and not ray.cluster_resources().get("GPU"):
            log(f"no GPU in the Ray cluster: stages asking for {resources.gpus} GPU run on CPUs")
            resources = Resources(cpus=resources.cpus, gpus=0.0)
        if resources not in self._pools:
            cluster = ray.cluster_resources()
            fits = int(cluster.get("CPU", 1) // max(resources.cpus, 1e-9))
            if resources.gpus:
                fits = min(fits, int(cluster.get("GPU", 0) // resources.gpus))
            size = max(1, min(fits, self.profile.workers or fits))
            self._pools[resources] = Pool(ray, resources, size, self.profile.unit_attempts, self.progress)
        return self._pools[resources]

    def _kept_dest(self, step: Step) -> str:
        return kept_dest(step.index, step.index == len(self.steps) - 1)

    def _run_documents(self, ray, step: Step) -> None:
        first = step.index == 0
        reader = step.stages[0] if first else None
        stages: list[DocumentStage] = step.stages[1:] if first else step.stages
        if first:
            todo = [DocumentUnit(0, u, uri, uri) for u, uri in self.units.items() if u not in self.chain[0]]
            done = len(self.units) - len(todo)
        else:
            upstream, mine = self.chain[step.index - 1], self.chain[step.index]
            todo = [DocumentUnit(step.index, u, c.input, expected_key("documents", c.input, c, None),
                                 tuple(c.paths("kept"))) for u, c in sorted(upstream.items()) if u not in mine]
            done = len(upstream) - len(todo)
        if done:
            log(f"resume: {done} of {done + len(todo)} inputs already finished step {step.index}, skipping them")
        if not todo:
            return
        job = DocumentJob(reader, stages, batch_size=self.pipeline.batch_size, out=self.out,
                          kept_dest=self._kept_dest(step), storage_options=self.profile.storage_options,
                          drop_after=drop_plan(self.pipeline))
        names = ", ".join(s.name for s in step.stages)
        results, failed = self._pool(ray, step.resources).run(
            job, todo, f"step {step.index} ({names})", docs_of=lambda c: c.stats.get("in", 0))
        self._committed(step.index, results)
        for unit, why in failed.items():
            uri = self.units[unit]
            self.unfinished[uri] = f"step {step.index}: {why}"
            log(f"input left unfinished (re-run to retry): {uri}: {why}")

    def _blocked(self, step: Step) -> bool:
        return len(self.chain[step.index - 1]) < len(self.units)

    def _run_global(self, ray, step: Step) -> None:
        stage: GlobalStage = step.stages[0]
        k = step.index
        upstream, mine = self.chain[k - 1], self.chain[k]
        digest = step_digest(upstream)
        todo = [u for u in sorted(upstream) if u not in mine]
        if not todo:
            log(f"resume: {stage.name} already applied to every input")
            return
        rounds_dir = f"work/steps/{k:02d}/rounds"
        markers = self._round_markers(rounds_dir, digest)
        pool = self._pool(ray, Resources())
        sources: dict[str, list[MapUnit]] = {"documents": [self._snapshot(u, k, stage.reads_removed)
                                                           for u in sorted(upstream)]}
        removals: dict[str, list[str]] = defaultdict(list)
        reports: list[str] = []
        finished: dict[str, dict[str, Any]] = {}  # markers of the rounds run so far, by round name
        rounds = stage.rounds()
        round_, index = next(rounds, None), 0
        while round_ is not None:
            name = f"{index:02d}-{round_.name}"
            marker = markers.get(name)
            if marker is None:
                marker = self._run_round(pool, step, round_, f"{rounds_dir}/{name}", sources, finished, digest)
                write_text_atomic(self.fs, f"{self.root}/{rounds_dir}/{name}.json", json.dumps(marker))
            else:
                log(f"resume: {stage.name} round {name} already done, reusing it")
            for owner, paths in marker["removals"].items():
                removals[owner] += paths
            reports += marker["files"].get("report", [])
            finished[round_.name] = marker  # the round ran: an output of it that wrote nothing is empty, not unknown
            for output, paths in marker["files"].items():
                if output == ARTIFACTS:
                    continue  # the stage's product (token shards), not Parquet for later rounds
                key = f"{round_.name}/{output}"
                sources[key] = [MapUnit(f"{round_.name}.{output}.p{i:05d}", (p,), key) for i, p in enumerate(paths)]
            result = RoundResult(partitions=marker["partitions"], rows_in=marker["rows_in"], outputs=marker["outputs"],
                                 tables={name: self._read_tables(marker["files"][name]) for name in round_.collect
                                         if name in marker["files"]})
            round_, index = next_round(rounds, result), index + 1
        self._write_report(stage, reports)
        units = [ApplyUnit(k, u, upstream[u].input, expected_key("global", upstream[u].input, upstream[u], digest),
                           tuple(upstream[u].paths("kept")), tuple(removals.get(u, ()))) for u in todo]
        job = ApplyJob(stage.name, self.out, self._kept_dest(step))
        results, failed = pool.run(job, units, f"step {k} ({stage.name}: apply)",
                                   docs_of=lambda c: c.stats.get("in", 0))
        self._committed(k, results)
        if failed:
            raise GlobalStageError(_stage_failure(stage.name, "apply", failed))
        removed = sum(c.stats["stages"][stage.name]["removed"] for c in self.chain[k].values())
        log(f"{stage.name}: removed {removed} of {sum(c.stats['in'] for c in self.chain[k].values())} documents")

    def _snapshot(self, unit: str, k: int, removed: bool) -> MapUnit:
        """What step ``k - 1`` committed for a unit: its kept part and (``removed``) every part removed up to
        there."""
        paths = list(self.chain[k - 1][unit].paths("kept"))
        for j in range(k if removed else 0):
            paths += self.chain[j][unit].paths("removed")
        return MapUnit(unit, tuple(paths))

    def _round_markers(self, rounds_dir: str, digest: str) -> dict[str, dict[str, Any]]:
        """Finished rounds of this step over the same input snapshot; anything else is redone from scratch."""
        path = f"{self.root}/{rounds_dir}"
        if not self.fs.exists(path):
            return {}
        markers = {}
        for marker in self.fs.glob(f"{path}/*.json"):
            with self.fs.open(marker, "r") as f:
                markers[marker.rsplit("/", 1)[-1].removesuffix(".json")] = json.load(f)
        stale = [m for m in markers.values() if m.get("digest") != digest or "partition_files" not in m]
        if stale:
            why = ("the step's input changed since it ran" if any(m.get("digest") != digest for m in stale)
                   else "its round markers predate the per-partition file lists")
            log(f"{rounds_dir}: {why}; redoing it")
            self.fs.rm(path, recursive=True)
            return {}
        return markers

    def _run_round(self, pool: Pool, step: Step, round_: ShuffleRound, round_dir: str,
                   sources: dict[str, list[MapUnit]], finished: dict[str, dict[str, Any]], digest: str
                   ) -> dict[str, Any]:
        stage: GlobalStage = step.stages[0]
        for name, patterns in round_.inputs.items():
            try:
                uris = expand_inputs(list(patterns), self.profile.storage_options)
            except InputError as exc:
                raise GlobalStageError(f"{stage.name}: round {round_.name!r}: {exc}") from exc
            key = f"input:{name}"
            sources[key] = [MapUnit(f"{name}.in{i:05d}", (uri,), key, external=True) for i, uri in enumerate(uris)]
        missing = [s for s in (*round_.sources, *round_.beside) if s not in sources and s.split("/")[0] not in finished]
        if missing:
            raise GlobalStageError(f"{stage.name}: round {round_.name!r} reads {missing[0]!r}, which no earlier "
                                   f"round produced (known: {', '.join(sorted(sources))})")
        units = [u for source in round_.sources for u in sources.get(source, [])]
        columns = stage.reads + stage.optional_reads() if round_.sources == ("documents",) else None
        size = 0
        if round_.partitions:
            partitions = round_.partitions
        elif self.profile.shuffle_partitions:
            partitions = self.profile.shuffle_partitions
        else:
            internal = [p for u in units if not u.external for p in u.paths]
            external = [p for u in units if u.external for p in u.paths]
            size = data_bytes(self.fs, self.root, internal, columns) + \
                data_bytes(None, None, external, columns, self.profile.storage_options)
            partitions = max(1, math.ceil(size / (round_.partition_bytes or self.profile.shuffle_partition_bytes)))
        beside = self._beside(round_, partitions, finished, stage.name)
        t0 = time.time()
        label = f"{stage.name} {round_.name}"
        done_maps = self._committed_maps(round_dir, {"digest": digest, "partitions": partitions,
                                                     "units": sorted(u.unit for u in units)})
        if done_maps:
            log(f"resume: {len(done_maps)} of {len(units)} units of {label} already mapped, skipping them")
        todo = [u for u in units if u.unit not in done_maps]
        mapped, failed = pool.run(MapJob(round_, self.out, round_dir, partitions, step.index), todo, f"{label}: map",
                                  docs_of=lambda m: m["progress"], what=round_.progress or "rows")
        mapped.update(done_maps)
        if failed:
            raise GlobalStageError(_stage_failure(stage.name, f"round {round_.name} map", failed))
        files: dict[int, list[str]] = defaultdict(list)
        for unit in sorted(mapped):
            for p, rel in mapped[unit]["files"].items():
                files[int(p)].append(rel)
        # a partition no map wrote to has no reduce, whatever lies beside it
        reduce_units = [ReduceUnit(f"p{p:05d}", p, (*paths, *beside.get(p, ()))) for p, paths in sorted(files.items())]
        if round_.artifacts:  # the stage's product (token shards): nothing half-written may stay beside it
            swept = remove_temporaries(self.fs, f"{self.root}/{round_.artifacts}")
            if swept:
                log(f"{label}: removed {swept} temporary files an interrupted attempt left in {round_.artifacts}/")
        reduced, failed = pool.run(ReduceJob(round_, self.out, round_dir, step.index), reduce_units, f"{label}: reduce")
        if failed:
            raise GlobalStageError(_stage_failure(stage.name, f"round {round_.name} reduce", failed))
        outputs: dict[str, int] = defaultdict(int)
        out_files: dict[str, list[str]] = defaultdict(list)
        partition_files: dict[str, dict[str, list[str]]] = defaultdict(dict)
        removals: dict[str, list[str]] = defaultdict(list)
        partition_of = {u.unit: u.partition for u in reduce_units}
        for unit in sorted(reduced):
            r = reduced[unit]
            for name, rows in r["outputs"].items():
                outputs[name] += rows
            for name, paths in r["files"].items():
                out_files[name] += paths
                partition_files[name][str(partition_of[unit])] = paths
            for owner, rel in r["removals"].items():
                removals[owner].append(rel)
        rows_in = sum(m["rows"] for m in mapped.values())
        log(f"{label}: {len(units)} units -> {rows_in} rows in {partitions} partitions "
             f"({size / 1e6:.1f} MB read) -> {dict(outputs)} in {time.time() - t0:.1f}s")
        return {"digest": digest, "partitions": partitions, "rows_in": rows_in, "outputs": dict(outputs),
                "files": dict(out_files), "partition_files": dict(partition_files), "removals": dict(removals)}

    @staticmethod
    def _beside(round_: ShuffleRound, partitions: int, finished: dict[str, dict[str, Any]], stage: str
                ) -> dict[int, list[str]]:
        """The files of ``round_.beside`` by partition; their rounds must have had ``partitions`` too."""
        beside: dict[int, list[str]] = defaultdict(list)
        for key in round_.beside:
            earlier, output = key.split("/", 1)
            marker = finished[earlier]
            if marker["partitions"] != partitions:
                raise GlobalStageError(f"{stage}: round {round_.name!r} reads {key!r} beside its shuffle, but "
                                       f"{earlier!r} had {marker['partitions']} partitions, not {partitions}")
            for p, paths in marker["partition_files"].get(output, {}).items():
                beside[int(p)] += paths
        return beside

    def _committed_maps(self, round_dir: str, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Map units an interrupted attempt of this round committed, if it planned the same shuffle (same input
        snapshot, partitions and units); otherwise its leftovers are deleted and the plan written anew."""
        path = f"{self.root}/{round_dir}"
        done: dict[str, dict[str, Any]] = {}
        if self.fs.exists(f"{path}/plan.json"):
            with self.fs.open(f"{path}/plan.json", "r") as f:
                if json.load(f) == plan:
                    for marker in self.fs.glob(f"{path}/maps/*.json"):
                        with self.fs.open(marker, "r") as f:
                            done[marker.rsplit("/", 1)[-1].removesuffix(".json")] = json.load(f)
                    return done
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        write_text_atomic(self.fs, f"{path}/plan.json", json.dumps(plan))
        return done

    def _read_tables(self, paths: list[str]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(f"{self.root}/{p}", filesystem=self.fs) for p in paths],
                                promote_options="permissive")

    def _write_report(self, stage: GlobalStage, paths: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(f"{self.root}/{p}", filesystem=self.fs) for p in paths]
        if not tables:
            return
        report = pa.concat_tables(tables, promote_options="permissive")
        if report.num_rows and report.column_names:
            report = report.sort_by(list(stage.report_order) or [(report.column_names[0], "ascending")])
        self.fs.makedirs(f"{self.root}/stats", exist_ok=True)
        pq.write_table(report, f"{self.root}/stats/{stage.name}_report.parquet", filesystem=self.fs)
        shown = 10
        for row in report.slice(0, shown).to_pylist():  # the audit's headline: what was removed whole, and why
            fields = ", ".join(f"{k}={v}" for k, v in row.items() if k != "example")
            log(f"{stage.name}: {fields}")
        if report.num_rows > shown:
            log(f"{stage.name}: … {report.num_rows - shown} more in stats/{stage.name}_report.parquet")


def _stage_failure(stage: str, what: str, failed: dict[str, str]) -> str:
    example = next(iter(sorted(failed.items())))
    return f"{stage}: {what} failed for {len(failed)} units after retries; e.g. {example[0]}: {example[1]}"



def _init_ray(profile: RuntimeProfile) -> None:
    import ray

    address = profile.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
        return
    # address="local" always starts a fresh embedded Ray: a bare ray.init() would silently join any local
    # cluster that happens to be running (and a crash of this driver would then not stop its workers).
    # Workers import what this process can, as the local executor's child does: a plug-in stage found through
    # sys.path (a module next to the pipeline, a notebook's folder) must unpickle in the workers too. The path
    # goes in the environment the daemons inherit, not in a runtime_env: a job runtime_env makes every worker
    # Ray prestarts at init unusable for the job (a new one per actor, ~3 s more here on 2 cores).
    kwargs: dict[str, Any] = {"address": "local", "num_cpus": profile.workers or os.cpu_count(),
                              "include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    if profile.object_store_memory_mb:
        kwargs["object_store_memory"] = profile.object_store_memory_mb << 20
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        ray.init(**kwargs)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


