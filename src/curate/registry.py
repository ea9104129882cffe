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
        points = _entry_points()
        if name in points:
            cls = _checked(name, points[name].load)
            if cls.name != name:
                raise UnknownStageError(f"entry point {name!r} names {points[name].value}, whose stage name is "
                                        f"{cls.name!r}: the two must agree (it names columns and removed/)")
            return cls
        close = difflib.get_close_matches(name, [*_STAGES, *points], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownStageError(f"unknown stage {name!r}{hint}; known stages: {', '.join(sorted(_STAGES))}")
    return _STAGES[name]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _checked(name: str, load) -> StageClass:
    try:
        cls = load()
    except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported by name, not as a traceback
        raise UnknownStageError(f"cannot load plug-in stage {name!r}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, (DocumentStage, GlobalStage, Reader))):
        raise UnknownStageError(f"{name!r} is not a Reader, DocumentStage or GlobalStage subclass")
    return cls


def known_stages() -> list[str]:
    """Built-in stage names and those of installed plug-ins (``curate.stages`` entry points)."""
    _load_builtins()
    return sorted({*_STAGES, *_entry_points()})


def _load_builtins() -> None:
    importlib.import_module("curate.stages")
