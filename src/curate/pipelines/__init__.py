"""The built-in recipes, shipped as package data: ``curate run fineweb ...`` runs ``fineweb.yaml`` from here
(in a checkout, ``pipelines/`` is this folder)."""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def names() -> list[str]:
    """The recipe names ``curate run NAME`` accepts."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def resolve(pipeline: str) -> Path:
    """A pipeline argument as a file: an existing path, else a built-in recipe's name (with or without .yaml)."""
    path = Path(pipeline)
    if path.exists() or path.parent != Path("."):
        return path
    builtin = FOLDER / (pipeline if pipeline.endswith(".yaml") else f"{pipeline}.yaml")
    return builtin if builtin.is_file() else path
