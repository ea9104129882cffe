"""How the runner cuts a pipeline into steps, and the column contracts it checks, without Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from curate.config import ConfigError, load_pipeline
from curate.execute import run_rounds_locally
from curate.runner import drop_plan, plan_steps
from curate.stage import DocumentStage, Resources, StageContractError


class GpuScorer(DocumentStage):
    name = "gpu_scorer"
    resources = Resources(cpus=1.0, gpus=0.25)

    def process(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("gpu_scorer_score", pa.array([0.5] * batch.num_rows, pa.float64()))


class Sloppy(DocumentStage):
    name = "sloppy"

    def process(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("undeclared", pa.array([1] * batch.num_rows))


class ReadsMissing(DocumentStage):
    name = "reads_missing"
    reads = ("gpu_scorer_score",)

    def process(self, batch: pa.Table) -> pa.Table:
        return batch


def write(tmp_path: Path, stages: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n" + stages)
    return path


def test_steps_are_cut_at_global_stages_and_resource_changes(tmp_path: Path) -> None:
    pipeline = load_pipeline(write(tmp_path, "  - warc_read: {}\n  - extract: {}\n  - language: {}\n"
                                             "  - test_plan:GpuScorer: {}\n  - repetition: {}\n"
                                             "  - source_quarantine: {}\n  - gopher_quality: {}\n"))
    steps = plan_steps(pipeline)
    assert [(s.kind, [x.name for x in s.stages]) for s in steps] == [
        ("documents", ["warc_read", "extract", "language"]),
        ("documents", ["gpu_scorer"]),
        ("documents", ["repetition"]),
        ("global", ["source_quarantine"]),
        ("documents", ["gopher_quality"]),
    ]
    assert steps[1].resources == Resources(cpus=1.0, gpus=0.25) and steps[0].resources.gpus == 0
    assert drop_plan(pipeline) == {"extract": ("html",)}


def test_undeclared_columns_fail_the_stage_and_unknown_reads_fail_the_pipeline(tmp_path: Path) -> None:
    with pytest.raises(StageContractError, match="undeclared columns \\['undeclared'\\]"):
        Sloppy()(pa.table({"removed_by": pa.array([None], pa.string()), "text": ["x"]}))
    with pytest.raises(ConfigError, match="reads column 'gpu_scorer_score', which no earlier stage adds"):
        load_pipeline(write(tmp_path, "  - warc_read: {}\n  - test_plan:ReadsMissing: {}\n"))
    load_pipeline(write(tmp_path, "  - warc_read: {}\n  - test_plan:GpuScorer: {}\n  - test_plan:ReadsMissing: {}\n"))


def test_failure_policy_keys_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "  - warc_read: {}\n  - extract: {}\n")
    path.write_text(path.read_text() + "failure: {max_stage_error_share: {extrakt: 0.5}}\n")
    with pytest.raises(ConfigError, match="failure.max_stage_error_share.extrakt: not a stage"):
        load_pipeline(path)
    path.write_text(path.read_text().replace("{extrakt: 0.5}", "{extract: 2}"))
    with pytest.raises(ConfigError, match="failure"):
        load_pipeline(path)


def test_quarantine_rounds_run_locally_and_read_text_only_for_units_with_a_pathological_page() -> None:
    from curate.stages.quarantine import QuarantineParams, SourceQuarantine

    def unit(source: str, n: int, bad: int) -> pa.Table:
        return pa.table({"id": [f"{source}-{i}" for i in range(n)], "url": [f"https://{source}/{i}" for i in range(n)],
                         "source": [source] * n,
                         "removed_by": pa.array(["repetition" if i < bad else None for i in range(n)], pa.string()),
                         "reason": pa.array(["char_run" if i < bad else None for i in range(n)], pa.string()),
                         "text": ["m" * 300 if i < bad else "fine text" for i in range(n)],
                         "repetition_pathological": [i < bad for i in range(n)]})

    stage = SourceQuarantine(QuarantineParams(min_docs=5, max_pathological_share=0.5))
    removals, report = run_rounds_locally(stage, {"u1": unit("bad.example", 6, 5), "u2": unit("ok.example", 8, 1)})
    assert removals["id"].to_pylist() == ["bad.example-5"]
    assert report.to_pylist()[0]["source"] == "bad.example" and report.to_pylist()[0]["example"] == "m" * 200

    class Recording:
        def __init__(self, table: pa.Table) -> None:
            self.unit, self.table, self.asked = "u", table, []

        def read(self, columns):
            self.asked.append(tuple(columns))
            return self.table.select(list(columns))

    healthy, sick = Recording(unit("ok.example", 8, 0)), Recording(unit("bad.example", 6, 5))
    stage.map_unit(healthy), stage.map_unit(sick)
    assert all("text" not in columns for columns in healthy.asked)
    assert ("id", "text") in sick.asked
