"""Committed units: the one place that names output parts and records what a unit wrote.

A unit is an input file, or that file's documents in a later step. It writes Parquet parts under names
that carry its step and attempt (:func:`part_path`), then one manifest, atomically and last:
``work/commits/step<k>/<unit>.json`` with the parts, their row counts, the attempt and the unit's stats.
Everything that reads outputs (the ledger, the next step, global stages, the audit) reads manifests, never
globs of part files: parts of an attempt that died before its commit are invisible, and :func:`sweep`
deletes them.

A manifest also records the key of the input it consumed (:func:`expected_key`): the input URI in step 0,
the upstream commit's attempt in a per-unit step, and for a global step that attempt plus a digest of every
upstream commit (a corpus-wide decision depends on every document). A commit whose key no longer matches
its upstream is superseded: it is redone, and nothing reads it meanwhile (:func:`current_chain`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from curate.io.fs import write_text_atomic

COMMITS_DIR = "work/commits"
#: Folders that hold unit parts (globs); :func:`sweep` deletes every part in them no current commit names.
#: A global step's round files (``work/steps/<k>/rounds``) are not parts: their markers own them.
PART_DIRS = ("kept", "removed", "errors", "work/steps/*/kept")


@dataclass(frozen=True)
class Part:
    kind: str  # "kept" | "removed" | "errors"
    path: str  # relative to the output root
    rows: int
    stage: str | None = None  # for removed parts: the stage that removed them


@dataclass
class Commit:
    step: int
    unit: str  # the input file's id (stable across steps, so conservation is per input file)
    input: str  # the input URI
    attempt: str
    input_key: str
    parts: list[Part] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def rows(self, kind: str) -> int:
        return sum(p.rows for p in self.parts if p.kind == kind)

    def paths(self, kind: str) -> list[str]:
        return [p.path for p in self.parts if p.kind == kind]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Commit:
        data = json.loads(text)
        data["parts"] = [Part(**p) for p in data["parts"]]
        return cls(**data)


def new_attempt() -> str:
    return uuid.uuid4().hex[:10]


def kept_dest(step: int, last: bool) -> str:
    """Where a step's kept documents go: the corpus for the last step, else intermediate parts in work/."""
    return "kept" if last else f"work/steps/{step:02d}/kept"


def part_path(dest: str, unit: str, step: int, attempt: str) -> str:
    """The one naming convention of unit parts: ``<dest>/part-<unit>-s<step>-<attempt>.parquet``."""
    return f"{dest}/part-{unit}-s{step:02d}-{attempt}.parquet"


def shuffle_path(round_dir: str, partition: int, unit: str) -> str:
    """A map unit's rows for one shuffle partition (deterministic: a retried map overwrites its own)."""
    return f"{round_dir}/shuffle/{partition:05d}/map-{unit}.parquet"


def map_marker_path(round_dir: str, unit: str) -> str:
    """A map unit's commit in a round: its rows and shuffle files, written after them (resume skips it)."""
    return f"{round_dir}/maps/{unit}.json"


def round_output_path(round_dir: str, name: str, partition: int) -> str:
    return f"{round_dir}/out/{name}/part-{partition:05d}.parquet"


def round_output_glob(root: str, round_name: str, name: str) -> str:
    """Every partition of one named output of a round (any step, any round index) of the run at ``root``."""
    return f"{root}/work/steps/*/rounds/*-{round_name}/out/{name}/part-*.parquet"


def removals_path(round_dir: str, unit: str, partition: int) -> str:
    """Removals a reduce partition routed back to one unit."""
    return f"{round_dir}/removals/{unit}/part-{partition:05d}.parquet"


def commit_path(step: int, unit: str) -> str:
    return f"{COMMITS_DIR}/step{step:02d}/{unit}.json"


def write_commit(fs: fsspec.AbstractFileSystem, root: str, commit: Commit) -> None:
    write_text_atomic(fs, f"{root}/{commit_path(commit.step, commit.unit)}", commit.to_json())


def load_commits(fs: fsspec.AbstractFileSystem, root: str) -> dict[int, dict[str, Commit]]:
    """Every manifest on disk (current or superseded), by step and unit."""
    commits: dict[int, dict[str, Commit]] = {}
    paths = sorted(fs.glob(f"{root}/{COMMITS_DIR}/step*/*.json"))
    contents = fs.cat(paths) if paths else {}  # one concurrent fetch on object stores, not a GET at a time
    for path in paths:
        commit = Commit.from_json(contents[path].decode())
        commits.setdefault(commit.step, {})[commit.unit] = commit
    return commits


def step_digest(upstream: dict[str, Commit]) -> str:
    """Identity of a global step's input snapshot: every upstream unit and the attempt it committed."""
    text = "\n".join(f"{unit}:{c.attempt}" for unit, c in sorted(upstream.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expected_key(kind: str, uri: str, upstream: Commit | None, digest: str | None) -> str:
    """The input key a current commit of this unit must carry (see the module docstring)."""
    if upstream is None:
        return uri
    return f"{upstream.attempt}|{digest}" if kind == "global" else upstream.attempt


def current_chain(commits: dict[int, dict[str, Commit]], kinds: list[str], units: set[str]
                  ) -> list[dict[str, Commit]]:
    """Per step, the commits that are current: step 0's for the run's input ``units``, then each later
    step's commit of a unit whose key matches its current upstream commit."""
    chain: list[dict[str, Commit]] = []
    for step, kind in enumerate(kinds):
        found = commits.get(step, {})
        if step == 0:
            chain.append({u: c for u, c in found.items() if u in units})
            continue
        upstream = chain[-1]
        digest = step_digest(upstream) if kind == "global" else None
        chain.append({u: c for u, c in found.items()
                      if u in upstream and c.input_key == expected_key(kind, c.input, upstream[u], digest)})
    return chain


def sweep(fs: fsspec.AbstractFileSystem, root: str, chain: list[dict[str, Commit]]) -> int:
    """Delete parts and manifests no current commit names (dead or superseded attempts); returns how many.

    Only the driver calls this, while no unit is running, so a part being written is never taken.
    """
    keep = {f"{root}/{p.path}" for step in chain for c in step.values() for p in c.parts}
    manifests = {f"{root}/{commit_path(c.step, c.unit)}" for step in chain for c in step.values()}
    stale = []
    for pattern in PART_DIRS:
        for folder in fs.glob(f"{root}/{pattern}"):
            stale += [p for p in fs.find(folder) if ".parquet" in p and p not in keep]
    if fs.exists(f"{root}/{COMMITS_DIR}"):
        stale += [p for p in fs.find(f"{root}/{COMMITS_DIR}") if p not in manifests]
    for path in stale:
        fs.rm(path)
    return len(stale)
