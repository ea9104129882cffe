"""The classifier contract and its registry (built-ins, entry points, ``module:Class``)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import ClassVar

import numpy as np

from curate.stage import Resources, StageParams

ENTRY_POINT_GROUP = "curate.classifiers"


class ClassifierParams(StageParams):
    """Base of a classifier's YAML options (``classify: {classifier: x, options: {...}}``)."""


class Classifier:
    """Scores documents: ``score(texts)`` → one array of scores in [0, 1] per label, aligned with ``texts``.

    ``load()`` runs once per worker (read the model file, move it to the device) and must be cheap to skip
    on construction, so a classifier is picklable before it is loaded. ``resources`` is what one worker
    needs (a GPU classifier gets a step and an actor pool of its own); ``batch_size`` is how many documents
    ``score`` receives at a time.
    """

    name: ClassVar[str]
    Params: ClassVar[type[ClassifierParams]] = ClassifierParams
    resources: ClassVar[Resources] = Resources()
    batch_size: ClassVar[int] = 512

    def __init__(self, params: ClassifierParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def load(self) -> None:
        """Load the model (once per worker)."""

    def close(self) -> None:
        """Release what :meth:`load` acquired."""

    def labels(self) -> list[str]:
        """The labels :meth:`score` returns (known after :meth:`load`; the score columns' suffixes)."""
        raise NotImplementedError

    @classmethod
    def declared_labels(cls, params: ClassifierParams) -> list[str] | None:
        """The labels, when the options alone say them (topics named in YAML): a ``keep`` rule naming another
        is then a configuration error, not a failed run. None: known only once the model is loaded."""
        return None

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError


_BUILTIN: dict[str, type[Classifier]] = {}
_BUILTIN_MODULES = ("curate.classify.fasttext", "curate.classify.transformer")


def register_classifier(cls: type[Classifier]) -> type[Classifier]:
    """Class decorator for built-in classifiers."""
    if cls.name in _BUILTIN and _BUILTIN[cls.name] is not cls:
        raise ValueError(f"classifier name {cls.name!r} already registered by {_BUILTIN[cls.name].__qualname__}")
    _BUILTIN[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Installed:
    name: str
    origin: str  # "built-in", "entry point <name> of <distribution> <version>"
    target: str  # module:Class


class UnknownClassifierError(ValueError):
    pass


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def get_classifier(name: str) -> type[Classifier]:
    """A classifier class by built-in name, entry-point name, or ``module:Class``."""
    _load_builtins()
    if name in _BUILTIN:
        return _BUILTIN[name]
    points = _entry_points()
    if name in points:
        try:
            cls = points[name].load()
        except Exception as exc:  # a broken plug-in is reported by name, not as a traceback
            raise UnknownClassifierError(f"classifier {name!r} (entry point {points[name].value}) fails to load: "
                                         f"{type(exc).__name__}: {exc}") from exc
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownClassifierError(f"cannot load classifier {name!r}: {exc}") from exc
    else:
        known = sorted({*_BUILTIN, *points})
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownClassifierError(f"unknown classifier {name!r}{hint}; installed: {', '.join(known)}")
    if not (isinstance(cls, type) and issubclass(cls, Classifier)):
        raise UnknownClassifierError(f"{name!r} is not a curate.classify.Classifier subclass")
    return cls


def list_classifiers() -> list[Installed]:
    """Every classifier this environment can run, and where it comes from."""
    _load_builtins()
    found = [Installed(name, "built-in", f"{cls.__module__}:{cls.__qualname__}") for name, cls in _BUILTIN.items()]
    for name, ep in sorted(_entry_points().items()):
        dist = ep.dist
        origin = f"entry point of {dist.name} {dist.version}" if dist is not None else "entry point"
        found.append(Installed(name, origin, ep.value))
    return sorted(found, key=lambda c: c.name)
