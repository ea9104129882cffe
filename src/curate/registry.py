"""One registry of stages under unique snake_case names (also the ``removed/`` folder and stat prefix).

Built-in stages register on import of :mod:`curate.stages`; plug-ins are named in YAML as
``module.path:ClassName``.
"""

from __future__ import annotations

import difflib
import importlib

from curate.stage import DocumentStage, GlobalStage, Reader

StageClass = type[DocumentStage] | type[GlobalStage] | type[Reader]
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
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownStageError(f"cannot load plug-in stage {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, (DocumentStage, GlobalStage, Reader))):
            raise UnknownStageError(f"{name!r} is not a Reader, DocumentStage or GlobalStage subclass")
        return cls
    if name not in _STAGES:
        close = difflib.get_close_matches(name, _STAGES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownStageError(f"unknown stage {name!r}{hint}; known stages: {', '.join(sorted(_STAGES))}")
    return _STAGES[name]


def known_stages() -> list[str]:
    _load_builtins()
    return sorted(_STAGES)


def _load_builtins() -> None:
    importlib.import_module("curate.stages")
