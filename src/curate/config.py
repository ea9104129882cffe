"""Pipeline recipes and runtime profiles, validated before any work starts.

Errors name the file and the key path (``pipelines/x.yaml: stages[2].extract.timeout_s: ...``); the CLI
turns :class:`ConfigError` into exit code 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate.registry import UnknownStageError, get_stage
from curate.stage import DocumentStage, GlobalStage, Reader, StageParams


class ConfigError(ValueError):
    """A pipeline or profile that cannot run; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeProfile(_Strict):
    """``configs/*.yaml``: where and how to run, independent of what the pipeline does."""

    ray_address: str | None = Field(None, description="Ray cluster to join; None starts an embedded one")
    workers: int | None = Field(None, ge=1, description="parallel file workers; default: all CPUs")
    object_store_memory_mb: int | None = Field(None, ge=78, description="embedded Ray object store size")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for remote inputs/outputs (e.g. S3 endpoint)"
    )
    listing_base_url: str = Field("https://data.commoncrawl.org/", description="what the relative paths of an "
                                  "input listing (a Common Crawl warc.paths.gz) are resolved against; e.g. "
                                  "s3://commoncrawl/ to read the snapshot from S3")
    unit_attempts: int = Field(3, ge=1, description="tries per unit (an input file, a shuffle partition) when "
                               "its worker dies or it raises; then the input is left unfinished and listed")
    shuffle_partition_bytes: int = Field(128 << 20, ge=1, description="global stages: target uncompressed bytes "
                                         "of the columns they read per shuffle partition")
    shuffle_partitions: int | None = Field(None, ge=1, description="force this many shuffle partitions")
    executor: Literal["auto", "ray", "local"] = Field(
        "auto", description="ray: actor pools on the embedded or named Ray; local: one supervised worker "
        "subprocess, no Ray start-up; auto: local for one input or --workers 1 when no cluster is named")


class FailurePolicy(_Strict):
    """When failures are too many for a run to count as done (exit code 1 with the stage, count and example).

    Errors are documents a stage raised on (isolated row by row into ``errors/``). Unreadable records of
    damaged inputs are a property of the data, not a failure of the pipeline: they are counted and
    reported, and fail the run only past ``max_read_error_share`` when that is set.
    """

    max_error_share: float = Field(0.01, ge=0, le=1, description="stage errors / documents read, whole run; "
                                   "also each stage's limit (errors / its input) unless overridden")
    max_stage_error_share: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict,
                                                    description="per-stage overrides of max_error_share")
    max_read_error_share: float | None = Field(None, ge=0, le=1, description="unreadable records / documents read")

    def stage_limit(self, stage: str) -> float:
        return self.max_stage_error_share.get(stage, self.max_error_share)


@dataclass
class Pipeline:
    name: str
    source_path: str
    batch_size: int
    stages: list[Reader | DocumentStage | GlobalStage] = field(default_factory=list)
    failure: FailurePolicy = field(default_factory=lambda: FailurePolicy())

    def fingerprint(self) -> str:
        """Hash of the resolved config and the curate version: an output folder is only resumed by the same
        pipeline run by the same code (the failure policy decides no output, so it is left out)."""
        resolved = {
            "curate": _curate_version(),
            "batch_size": self.batch_size,
            "stages": [{s.name: s.params.model_dump(mode="json")} for s in self.stages],
        }
        return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]

    def resolved(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "batch_size": self.batch_size,
            "failure": self.failure.model_dump(mode="json"),
            "stages": [{s.name: s.params.model_dump(mode="json")} for s in self.stages],
        }


def _curate_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("curate")
    except metadata.PackageNotFoundError:
        return "unknown"


_TOP_LEVEL_KEYS = {"name", "description", "batch_size", "failure", "stages"}


def _read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc


def _format_validation(path: str, prefix: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}.{loc}" if loc else prefix
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{path}: {key}: {msg}")
    return "\n".join(problems)


def build_stage(name: str, params: Any, where: str, key: str) -> Reader | DocumentStage | GlobalStage:
    try:
        cls = get_stage(name)
    except UnknownStageError as exc:
        raise ConfigError(f"{where}: {key}: {exc.args[0]}") from exc
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: {key}.{name}: expected a mapping of parameters, got {params!r}")
    try:
        parsed: StageParams = cls.Params(**params)
    except ValidationError as exc:
        raise ConfigError(_format_validation(where, f"{key}.{name}", exc)) from exc
    return cls(parsed)


def load_pipeline(path: str | Path) -> Pipeline:
    """A pipeline YAML file, or a built-in recipe by name (``fineweb``, ``quickstart``: package data)."""
    from curate import pipelines

    resolved = pipelines.resolve(str(path))
    if not resolved.is_file():
        raise ConfigError(f"{path}: file not found (built-in recipes: {', '.join(pipelines.names())})")
    return pipeline_from_dict(_read_yaml(resolved), str(resolved), resolved.stem)


def pipeline_from_dict(data: Any, where: str, default_name: str) -> Pipeline:
    """A pipeline from its YAML mapping (also how ``curate dedup`` builds its own), fully validated."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'stages' list")
    unknown = set(data) - _TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: {sorted(unknown)[0]}: unknown key (allowed: {', '.join(sorted(_TOP_LEVEL_KEYS))})")
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{where}: stages: expected a non-empty list")
    batch_size = data.get("batch_size", 512)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"{where}: batch_size: expected a positive integer, got {batch_size!r}")
    stages: list[Reader | DocumentStage | GlobalStage] = []
    for i, item in enumerate(stages_raw):
        key = f"stages[{i}]"
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}: {key}: expected one '<stage>: {{params}}' mapping, got {item!r}")
        (name, params), = item.items()
        stages.append(build_stage(str(name), params, where, key))
    if not isinstance(stages[0], Reader):
        raise ConfigError(f"{where}: stages[0]: the first stage must be a reader (e.g. 'warc_read'), got {stages[0].name!r}")
    for i, stage in enumerate(stages[1:], start=1):
        if isinstance(stage, Reader):
            raise ConfigError(f"{where}: stages[{i}]: a reader may only be the first stage")
    names = [s.name for s in stages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{where}: stages: stage {sorted(dupes)[0]!r} appears twice (names key removed/ folders)")
    _check_columns(where, stages)
    try:
        failure = FailurePolicy(**(data.get("failure") or {}))
    except (ValidationError, TypeError) as exc:
        if isinstance(exc, ValidationError):
            raise ConfigError(_format_validation(where, "failure", exc)) from exc
        raise ConfigError(f"{where}: failure: expected a mapping") from exc
    unknown = sorted(set(failure.max_stage_error_share) - set(names))
    if unknown:
        raise ConfigError(f"{where}: failure.max_stage_error_share.{unknown[0]}: not a stage of this pipeline")
    return Pipeline(name=str(data.get("name", default_name)), source_path=where, batch_size=batch_size,
                    stages=stages, failure=failure)


def _check_columns(where: str, stages: list[Reader | DocumentStage | GlobalStage]) -> None:
    """Every column a stage reads is a document column or added by an earlier stage."""
    from curate.schema import DOCUMENT_SCHEMA
    from curate.stage import matches_declared

    added: list[str] = []
    for i, stage in enumerate(stages):
        reads = getattr(stage, "reads", ())
        for column in reads:
            if column not in DOCUMENT_SCHEMA.names and not matches_declared(column, added):
                raise ConfigError(f"{where}: stages[{i}].{stage.name}: reads column {column!r}, which no earlier "
                                  "stage adds")
        if isinstance(stage, DocumentStage):
            added += stage.declared_adds()
        elif isinstance(stage, Reader):
            added += stage.carried_columns()


def load_profile(path: str | Path | None) -> RuntimeProfile:
    if path is None:
        return RuntimeProfile()
    data = _read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    try:
        return RuntimeProfile(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(str(path), "profile", exc)) from exc
