"""One registry of stages under unique snake_case names (also the ``removed/`` folder and stat prefix).

Built-in stages register on import of :mod:`curate.stages`; plug-ins are found by name through the
``curate.stages`` entry-point group of installed packages, or named in YAML as ``module.path:ClassName``.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata

from curate.stage import DocumentStage, GlobalStage, Reader

StageClass = type[DocumentStage] | type[GlobalStage] | type[Reader]
ENTRY_POINT_GROUP = "curate.stages"
_STAGES: dict[str, StageClass] = {}


class UnknownStageError(KeyError):
    pass


def register(cls: StageClass) -> StageClass:
    """Class decorator. Duplicate names raise: a silent replacement would change a pipeline's meaning."""
    name = cls.name
    if name in _STAGES and _STAGES[name] is not cls:
        raise ValueError(f"stage name {name!r} already registered by {_STAGES[name].__qualname__}")
    _STAGES[name] = cls
    return cls


def get_stage(name: str) -> StageClass:
    _load_builtins()
    if ":" in name:
        module, _, attr = name.partition(":")
        return _checked(name, lambda: getattr(importlib.import_module(module), attr))
    if name not in _STAGES:
        points = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        if name in points:
            return _checked(name, points[name].load)
        close = difflib.get_close_matches(name, [*_STAGES, *points], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownStageError(f"unknown stage {name!r}{hint}; known stages: {', '.join(sorted(_STAGES))}")
    return _STAGES[name]


def _checked(name: str, load) -> StageClass:
    try:
        cls = load()
    except (ImportError, AttributeError) as exc:
        raise UnknownStageError(f"cannot load plug-in stage {name!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, (DocumentStage, GlobalStage, Reader))):
        raise UnknownStageError(f"{name!r} is not a Reader, DocumentStage or GlobalStage subclass")
    return cls


def known_stages() -> list[str]:
    _load_builtins()
    return sorted(_STAGES)


def _load_builtins() -> None:
    importlib.import_module("curate.stages")
