"""Plug-in stages used by the end-to-end tests (loaded as ``plugins:ClassName`` from pipeline YAML)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.classify import Classifier, ClassifierParams
from curate.io.fs import file_id
from curate.schema import set_column
from curate.stage import DocumentStage, GlobalStage, Resources, ShuffleRound, StageParams


class SlowParams(StageParams):
    seconds_per_batch: float = Field(0.5, ge=0)


class Slow(DocumentStage):
    """Makes a run last long enough to be killed mid-way."""

    name = "slow"
    Params = SlowParams

    def process(self, batch: pa.Table) -> pa.Table:
        time.sleep(self.params.seconds_per_batch)
        return batch


class FailParams(StageParams):
    fail_on: str = "Escopete"


class FailOn(DocumentStage):
    """Raises on documents containing ``fail_on``: the runner must isolate them into errors/."""

    name = "fail_on"
    Params = FailParams

    def process(self, batch: pa.Table) -> pa.Table:
        hits = pc.fill_null(pc.match_substring(batch["text"], self.params.fail_on), False)
        if pc.any(hits).as_py():
            raise ValueError(f"cannot handle {self.params.fail_on!r}")
        return set_column(batch, "fail_on_checked", pa.array([True] * batch.num_rows, pa.bool_()))


class DieParams(StageParams):
    url_matches: str = Field(..., description="kill the worker process on a batch with a URL matching this regex")
    once_dir: str | None = Field(None, description="die only the first time per input (flags kept here)")


class DieOn(DocumentStage):
    """Kills its worker process (``os._exit``, as an OOM kill or a segfault would) on some inputs."""

    name = "die_on"
    Params = DieParams
    reads = ("url", "warc_path")

    def process(self, batch: pa.Table) -> pa.Table:
        hits = pc.fill_null(pc.match_substring_regex(batch["url"], self.params.url_matches), False)
        if pc.any(hits).as_py():
            if self.params.once_dir is None:
                os._exit(9)
            flag = Path(self.params.once_dir) / file_id(batch["warc_path"][0].as_py())
            if not flag.exists():
                flag.parent.mkdir(parents=True, exist_ok=True)
                flag.write_text("died")
                os._exit(9)
        return batch


class FlakyParams(StageParams):
    fault_dir: str = Field(..., description="the CURATE_FAULT folder: a unit's first attempt has no flag there")


class FailsFirstAttempt(DocumentStage):
    """Raises on every document of a unit's first attempt (which the fault hook then kills before its commit);
    the retry succeeds. Attempt 1 leaves error parts behind that must never be counted."""

    name = "fails_first_attempt"
    Params = FlakyParams
    reads = ("warc_path",)

    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows:
            unit = file_id(batch["warc_path"][0].as_py())
            if not (Path(self.params.fault_dir) / f"before_commit-0-{unit}").exists():
                raise RuntimeError("transient failure on the first attempt")
        return batch


class GpuScorer(DocumentStage):
    """Asks for a quarter of a GPU: the runner gives it a step (and a pool) of its own, on CPUs if none."""

    name = "gpu_scorer"
    resources = Resources(cpus=1.0, gpus=0.25)

    def process(self, batch: pa.Table) -> pa.Table:
        return set_column(batch, "gpu_scorer_score", pc.cast(pc.utf8_length(batch["text"]), pa.float64()))


class BrokenReduce(GlobalStage):
    """A global stage whose reduce always raises: the run must stop with the stage and an example."""

    name = "broken_reduce"
    reads = ("id", "host")

    def rounds(self):
        yield ShuffleRound("hosts", map=self.map_unit, reduce=self.reduce_partition)

    def map_unit(self, unit) -> pa.Table:
        rows = unit.read(("id", "host"))
        return pa.table({"key": rows["host"], "id": rows["id"]})

    def reduce_partition(self, group: pa.Table) -> dict[str, pa.Table]:
        raise ZeroDivisionError("the reduce cannot decide")


class HostCapParams(StageParams):
    max_docs: int = Field(10, ge=1)


class HostCap(GlobalStage):
    """Removes every document of hosts with ``max_docs`` or more, in two rounds: the second reads the first's
    output (not the documents) and names the units of its removals itself."""

    name = "host_cap"
    Params = HostCapParams
    reads = ("id", "host")

    def rounds(self):
        counted = yield ShuffleRound("count", map=self.map_documents, reduce=self.count_hosts)
        assert counted.outputs["members"] > 0
        yield ShuffleRound("cap", map=self.map_members, reduce=self.cap_hosts, source="count/members")

    def map_documents(self, unit) -> pa.Table:
        rows = unit.read(("id", "host"))
        return pa.table({"key": pc.fill_null(rows["host"], ""), "id": rows["id"]})

    def count_hosts(self, group: pa.Table) -> dict[str, pa.Table]:
        counts = group.group_by("key").aggregate([("id", "count")])
        docs = pc.take(counts["id_count"], pc.index_in(group["key"], counts["key"]))
        return {"members": group.append_column("docs", docs)}

    def map_members(self, unit) -> pa.Table:
        rows = unit.read(("key", "id", "_unit", "docs"))
        return rows.set_column(0, "key", rows["id"])  # any key: the decision is per row now

    def cap_hosts(self, group: pa.Table) -> dict[str, pa.Table]:
        hit = group.filter(pc.greater_equal(group["docs"], self.params.max_docs))
        return {"removals": pa.table({"id": hit["id"], "reason": pa.repeat("host_cap", hit.num_rows),
                                      "score": pc.cast(hit["docs"], pa.float64()),
                                      "threshold": pa.repeat(float(self.params.max_docs), hit.num_rows),
                                      "_unit": hit["_unit"], "host_cap_docs": hit["docs"]})}


class CountingParams(ClassifierParams):
    count_dir: str = Field(..., description="each load() writes a file named after its process here")
    gpus: float = 0.5


class CountingClassifier(Classifier):
    """Scores text length and records every load(): a model must load once per actor, not per unit."""

    name = "counting"
    Params = CountingParams

    @property
    def resources(self) -> Resources:  # type: ignore[override]
        return Resources(cpus=1.0, gpus=self.params.gpus)

    def load(self) -> None:
        folder = Path(self.params.count_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"load-{os.getpid()}", "a") as f:
            f.write("loaded\n")

    def labels(self) -> list[str]:
        return ["long"]

    def score(self, texts) -> dict:
        import numpy as np

        return {"long": np.array([min(len(t or "") / 10_000, 1.0) for t in texts])}
