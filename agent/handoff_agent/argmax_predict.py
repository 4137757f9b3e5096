"""Where a scikit-learn model's ``predict`` is the class of its highest ``predict_proba``.

Serving and the performance check both ask a classifier for its probabilities; for these
models they take its predictions from them instead of calling ``predict`` again (a 200-tree
forest on 5,000 rows: 80 ms).
"""

from __future__ import annotations

import sys

# Read in scikit-learn's source (1.3 to 1.9), by module. Forests: ``predict`` is
# ``classes_.take(argmax(predict_proba))`` itself, ties included.
ARGMAX = {"sklearn.ensemble": ("RandomForestClassifier", "ExtraTreesClassifier")}
# ``predict`` takes the argmax of what the probabilities are monotone in: trees their leaves'
# unnormalized values, LogisticRegression its decision function (expit of it for two classes,
# a softmax or normalized expit for more), so a tie in the probabilities asks ``predict``.
MONOTONE = {
    "sklearn.linear_model": ("LogisticRegression",),
    "sklearn.tree": ("DecisionTreeClassifier", "ExtraTreeClassifier"),
}


def _final(model):
    """A Pipeline's final step (it transforms the same way for every method), else the model."""
    pipeline = sys.modules.get("sklearn.pipeline")
    if pipeline is not None and type(model) is pipeline.Pipeline and model.steps:
        return model.steps[-1][1]
    return model


def _loaded(table: dict) -> list:
    """The table's types among the modules already loaded (a model of one has loaded its
    module): an XGBoost model does not import scikit-learn's ensembles for this."""
    return [
        getattr(sys.modules[module], name, None)
        for module, names in table.items()
        if module in sys.modules
        for name in names
    ]


def argmax_classes(model):
    """The classes a model's ``predict`` picks by the highest ``predict_proba`` column, or
    None when it is not known to. Exact types only: a subclass may predict otherwise."""
    final = _final(model)
    if type(final) not in _loaded(ARGMAX) + _loaded(MONOTONE):
        return None
    if getattr(final, "n_outputs_", 1) != 1:
        return None
    classes = getattr(final, "classes_", None)
    return classes if getattr(classes, "ndim", 0) == 1 else None


def ties_go_by_argmax(model) -> bool:
    """True when even a tie in ``predict_proba`` is predicted as its first class (forests)."""
    return type(_final(model)) in _loaded(ARGMAX)


def argmax_predictions(proba, classes, ties_by_argmax: bool = False):
    """``(classes[argmax] per row, the rows only predict can say)``: those whose highest
    probability is NaN, or tied (unless ``ties_by_argmax``). None when ``proba`` is not a
    rows x classes array."""
    import numpy as np

    if not isinstance(proba, np.ndarray) or proba.ndim != 2 or proba.shape[1] != len(classes):
        return None
    top = proba.max(axis=1)
    unsure = np.isnan(top) if ties_by_argmax else (proba == top[:, None]).sum(axis=1) != 1
    return classes.take(proba.argmax(axis=1), axis=0), unsure
