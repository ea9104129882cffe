"""Document classifiers: small models that score text (quality, topic), plugged in by name.

A :class:`~curate.classify.base.Classifier` turns texts into one score per label; the ``classify`` stage
runs one inside a pipeline, writes ``<name>_<label>`` columns and, with a ``keep`` rule, removes the rest
with the rule as the reason. Built-in classifiers register on import; third-party packages expose theirs
through the ``curate.classifiers`` entry-point group, or YAML names them as ``module:Class``.
"""

from curate.classify.base import Classifier, ClassifierParams, get_classifier, list_classifiers, register_classifier

__all__ = ["Classifier", "ClassifierParams", "get_classifier", "list_classifiers", "register_classifier"]
