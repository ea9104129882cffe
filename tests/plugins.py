"""Plug-in stages used by the end-to-end tests (loaded as ``plugins:ClassName`` from pipeline YAML)."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.schema import set_column
from curate.stage import DocumentStage, StageParams


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
