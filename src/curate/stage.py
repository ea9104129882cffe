"""Stage contracts. Stages are plain Python over pyarrow; only the runner knows about Ray.

* :class:`DocumentStage` maps a batch to the same rows plus columns. Rows already removed by an earlier
  stage are split off before :meth:`DocumentStage.process` and passed through untouched.
* :class:`GlobalStage` needs the whole corpus (source quarantine, dedup). It is written as a sequence of
  :class:`ShuffleRound` s (map over units → hash partition by key → reduce per partition) so the runner
  can execute it as partitioned Ray shuffles with bounded memory and a marker per round, and a unit test
  can execute it as plain function calls (:func:`curate.execute.run_rounds_locally`).

Every stage declares the columns it ``reads`` and ``adds``: the pipeline is checked when it is built,
the runner drops a transient column (``html``) once no later stage reads it, and a global stage reads
only its declared columns from disk.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from curate.schema import DOCUMENT_SCHEMA, active_mask, mark_failed, mark_removed


class StageParams(BaseModel):
    """Base for every stage's YAML parameters: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Resources:
    """What one worker of this stage needs; the runner maps it to Ray ``num_cpus``/``num_gpus``.

    Consecutive stages with equal resources share a pool of actors; where resources change the runner
    starts a new step with its own pool (a GPU classifier is fed by CPU steps instead of every file
    worker reserving a GPU). ``gpus`` may be a fraction (several actors share one device).
    """

    cpus: float = 1.0
    gpus: float = 0.0


class StageContractError(RuntimeError):
    """A stage broke its declared contract (added an undeclared column)."""


def matches_declared(column: str, patterns: Sequence[str]) -> bool:
    """``patterns`` are column names or ``prefix_*`` globs (a stage's signals are ``<stage>_<signal>``)."""
    return any(fnmatch.fnmatchcase(column, p) for p in patterns)


class DocumentStage:
    """A per-document stage. Subclasses set ``name`` and ``Params`` and implement :meth:`process`.

    ``setup()`` runs once per worker (load a model, compile a regex) so construction stays cheap and
    picklable.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    resources: ClassVar[Resources] = Resources()
    #: Columns :meth:`process` reads; each must be a document-schema column or added by an earlier stage.
    reads: ClassVar[tuple[str, ...]] = ("text",)
    #: Columns :meth:`process` may add (names or globs; ``{name}`` is this stage's name). Writing a
    #: document-schema column (``text``, the removal triple) is always allowed.
    adds: ClassVar[tuple[str, ...]] = ("{name}_*",)

    def __init__(self, params: StageParams | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self._ready = False

    def declared_adds(self) -> tuple[str, ...]:
        return tuple(p.format(name=self.name) for p in self.adds)

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
            return self._checked(batch, self.process(batch))  # mark_removed only marks rows still active
        active = active_mask(batch)
        n_active = pc.sum(active).as_py() or 0
        if n_active == batch.num_rows:
            return self._checked(batch, self.process(batch))
        # Even with no active row, process the empty table: every batch then has the same columns.
        done = batch.filter(pc.invert(active))
        processed = self._checked(batch, self.process(batch.filter(active)))
        return pa.concat_tables([processed, done], promote_options="default")

    def _checked(self, before: pa.Table, after: pa.Table) -> pa.Table:
        new = set(after.column_names) - set(before.column_names) - set(DOCUMENT_SCHEMA.names)
        undeclared = sorted(c for c in new if not matches_declared(c, self.declared_adds()))
        if undeclared:
            raise StageContractError(f"stage {self.name!r} added undeclared columns {undeclared} "
                                     f"(declared: {list(self.declared_adds())})")
        return after

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

    def carried_columns(self) -> tuple[str, ...]:
        """Columns beyond the document schema the reader fills (carried over from its input)."""
        return ()


class UnitData(Protocol):
    """What a :class:`ShuffleRound`'s map sees of one unit: lazy column reads, so a stage pays only for
    the columns it asks for (a unit of documents is its kept part plus the parts earlier stages removed)."""

    unit: str
    #: Which of the round's sources the unit comes from (``documents``, ``<round>/<output>`` or
    #: ``input:<name>``), for a round that maps several.
    source: str

    def read(self, columns: Sequence[str]) -> pa.Table:
        """These columns of every row of the unit (a column a part lacks comes back as nulls)."""
        ...

    def metadata(self) -> dict[bytes, bytes]:
        """Key-value metadata its files carry (e.g. the parameters an earlier run's signatures were made with)."""
        ...


@dataclass(frozen=True)
class ShuffleRound:
    """One round of a global stage: ``map`` over units → hash partition by ``key`` → ``reduce`` per partition.

    ``source`` names what the round maps, one name or several (a join: rows of every source that share a
    key meet in one reduce): ``"documents"`` (the snapshot of what the previous step committed, kept and
    removed), ``"<round>/<output>"`` (an output of an earlier round of the same stage), or
    ``"input:<name>"``, Parquet files outside this run listed in ``inputs[name]`` (URIs or globs, e.g. an
    earlier run's signatures; read with the run's storage options).

    A map may route its rows itself with an int ``_partition`` column (instead of the hash of ``key``), and
    ``beside`` names outputs of earlier rounds whose partition ``p`` the reduce of partition ``p`` reads as it
    is, beside the shuffled rows: a co-partitioned join that moves only the small side (component labels
    routed to the partitions that hold the signatures, not the signatures shuffled again). Such a round
    gives ``partitions`` equal to those outputs' rounds.

    ``reduce`` receives a partition's rows (with a ``_partition`` column holding its number) and returns
    named tables: ``removals`` (``id``, ``reason``, ``score``, ``threshold`` and optional extra columns that
    are joined onto the removed documents) are shuffled back to the units that hold those ids; ``report``
    rows are collected into ``stats/<stage>_report.parquet``; ``artifacts`` (``path``, ``data``: binary) are
    files of the stage's product written as they are under the run's ``<artifacts>/`` folder (token shards,
    a manifest); any other name is kept under ``work/`` as a source for later rounds. The runner writes a
    marker when a round is done, so a resumed run starts at the first unfinished round.
    """

    name: str
    map: Callable[[UnitData], pa.Table]
    reduce: Callable[[pa.Table], dict[str, pa.Table]]
    source: str | tuple[str, ...] = "documents"
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``"<round>/<output>"`` of earlier rounds read per partition, unshuffled (see above).
    beside: tuple[str, ...] = ()
    #: Outputs small enough to hand back whole to the stage's generator (``RoundResult.tables``), so a
    #: later round can depend on them (a histogram → a threshold); keep them to thousands of rows.
    collect: tuple[str, ...] = ()
    #: How many partitions the shuffle has; None sizes it from the bytes the round reads (the profile's
    #: ``shuffle_partition_bytes``). A round that must see everything at once (a manifest) says 1.
    partitions: int | None = None
    #: Target uncompressed bytes the round reads per partition, when ``partitions`` is None (default: the
    #: profile's ``shuffle_partition_bytes``), e.g. a token shard's worth of text.
    partition_bytes: int | None = None
    #: The folder under the run's output (e.g. ``shards``) that this round's ``artifacts`` are written to.
    artifacts: str | None = None
    #: A numeric column of the map output whose sum the progress bar counts (e.g. ``n_tokens``); default rows.
    progress: str | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)


@dataclass
class RoundResult:
    """What a finished round reports back to its stage's :meth:`GlobalStage.rounds` generator."""

    partitions: int
    rows_in: int
    outputs: dict[str, int] = field(default_factory=dict)  # output name -> rows
    tables: dict[str, pa.Table] = field(default_factory=dict)  # the round's ``collect`` outputs, whole


def next_round(rounds: Generator[ShuffleRound, RoundResult, None], result: RoundResult) -> ShuffleRound | None:
    """Send a finished round's result to a stage's :meth:`GlobalStage.rounds`; None when it has no more."""
    try:
        return rounds.send(result)
    except StopIteration:
        return None


class GlobalStage:
    """A corpus-wide stage: a sequence of :class:`ShuffleRound` s, then removals applied per unit.

    :meth:`rounds` is a generator: it yields a round, receives that round's :class:`RoundResult`, and
    may yield more (a loop of rounds for connected components stops when a round changes nothing). The
    runner then joins every unit's removals onto its kept documents, writing ``removed/<name>/`` and the
    next kept parts.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    #: Document columns the rounds read (the runner checks them when the pipeline is built).
    reads: ClassVar[tuple[str, ...]] = ("id",)
    #: Whether the rounds see the rows earlier stages removed (``removed_by`` set), as source quarantine
    #: must to count a source's pathological pages; a stage over the kept corpus only (dedup, tokenize) says
    #: False, and the runner then never reads the removed parts (most of a crawl's rows and text).
    reads_removed: ClassVar[bool] = True
    #: How ``stats/<name>_report.parquet`` is sorted, so its first rows (which the run log shows) are the
    #: headline: (column, "ascending"|"descending") pairs; default the first column, ascending.
    report_order: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, params: StageParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def optional_reads(self) -> tuple[str, ...]:
        """Columns read when an earlier stage added them (read as nulls otherwise)."""
        return ()

    def rounds(self) -> Generator[ShuffleRound, RoundResult, None]:
        raise NotImplementedError


REMOVALS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("threshold", pa.float64()),
    ]
)
