"""Stage contracts. Stages are plain Python over pyarrow; only the runner knows about Ray.

* :class:`DocumentStage` maps a batch to the same rows plus columns. Rows already removed by an earlier
  stage are split off before :meth:`DocumentStage.process` and passed through untouched.
* :class:`GlobalStage` needs the whole corpus (source quarantine, dedup). It is written as a
  map/shuffle/reduce over small tables so the runner can execute it as a partitioned Ray shuffle with
  bounded memory, and a unit test can execute it as three plain function calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from curate.schema import active_mask, mark_failed, mark_removed


class StageParams(BaseModel):
    """Base for every stage's YAML parameters: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Resources:
    """What one worker of this stage needs; the runner maps it to Ray ``num_cpus``/``num_gpus``."""

    cpus: float = 1.0
    gpus: float = 0.0


class DocumentStage:
    """A per-document stage. Subclasses set ``name`` and ``Params`` and implement :meth:`process`.

    ``setup()`` runs once per worker (load a model, compile a regex) so construction stays cheap and
    picklable.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    resources: ClassVar[Resources] = Resources()

    def __init__(self, params: StageParams | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self._ready = False

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load heavy state once per worker."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`setup` acquired (subprocesses, GPU memory)."""

    def process(self, batch: pa.Table) -> pa.Table:
        """Return the same rows (all still active) with this stage's columns added or rows marked.

        Must accept an empty table and add typed columns even then.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Tear down if set up: a worker whose inputs held no document never ran :meth:`setup`."""
        if self._ready:
            self.teardown()
            self._ready = False

    def measures_removed_rows(self) -> bool:
        """True for a stage that also measures rows earlier stages removed (it never re-marks them)."""
        return False

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        if self.measures_removed_rows():
            return self.process(batch)  # mark_removed only ever marks rows that are still active
        active = active_mask(batch)
        n_active = pc.sum(active).as_py() or 0
        if n_active == batch.num_rows:
            return self.process(batch)
        # Even with no active row, process the empty table: every batch then has the same columns.
        done = batch.filter(pc.invert(active))
        processed = self.process(batch.filter(active))
        return pa.concat_tables([processed, done], promote_options="default")

    def remove(self, batch: pa.Table, mask, reasons, scores=None, thresholds=None) -> pa.Table:
        """Mark rows where ``mask`` holds as removed by this stage (see :func:`curate.schema.mark_removed`)."""
        return mark_removed(batch, mask, self.name, reasons, scores, thresholds)

    def fail(self, batch: pa.Table, mask, messages) -> pa.Table:
        """Send rows this stage could not process to ``errors/`` with ``messages``."""
        return mark_failed(batch, mask, self.name, messages)


class Reader:
    """The first stage of a pipeline: turns one input file into document batches.

    :meth:`read` yields ``pa.Table`` batches in the document schema; unreadable records are reported
    through ``on_error`` and counted, never dropped silently. Record counts by type accumulate in
    ``counts``.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams

    def __init__(self, params: StageParams | None = None) -> None:
        self.params = params if params is not None else self.Params()


class GlobalStage:
    """A corpus-wide stage, executed as map → shuffle by key → reduce → apply.

    1. :meth:`partial` maps every document partition (kept *and* removed by earlier stages, so a stage
       can count what was removed, e.g. pathological documents per source) to a small table that has a ``key`` column (and ``id``);
    2. the runner shuffles partial rows into partitions by hash of ``key`` so one key's rows meet;
    3. :meth:`decide` turns one shuffled partition into removals (``id``, ``reason``, ``score``,
       ``threshold``) and a report table for the audit;
    4. the runner applies removals to every kept partition (a join on ``id``), writing
       ``removed/<name>/`` and the next ``kept/``.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    #: Columns of the kept documents that :meth:`partial` reads (the runner reads only these).
    columns: ClassVar[tuple[str, ...]] = ("id",)

    def __init__(self, params: StageParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def partial(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def decide(self, group: pa.Table) -> tuple[pa.Table, pa.Table]:
        raise NotImplementedError


REMOVALS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("threshold", pa.float64()),
    ]
)
