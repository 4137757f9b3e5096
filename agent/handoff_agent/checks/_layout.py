"""Model input in the layout scikit-learn's trees read fastest.

A tree or forest of scikit-learn's first makes a float32 array of what it is given; from a
DataFrame (or a column-major array) that copy is column-major, and its tree walks, which read
one row's features after another, take about twice as long on it. ``row_major`` makes the same
conversion row-major, so the model predicts the same numbers sooner.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import pandas as pd

# Exact classes (a subclass may predict another way) whose predict converts X to float32 and
# then walks each row down the trees.
_FLOAT32_TREES = (
    ("sklearn.ensemble", "RandomForestClassifier"),
    ("sklearn.ensemble", "RandomForestRegressor"),
    ("sklearn.ensemble", "ExtraTreesClassifier"),
    ("sklearn.ensemble", "ExtraTreesRegressor"),
    ("sklearn.ensemble", "IsolationForest"),
    ("sklearn.tree", "DecisionTreeClassifier"),
    ("sklearn.tree", "DecisionTreeRegressor"),
    ("sklearn.tree", "ExtraTreeClassifier"),
    ("sklearn.tree", "ExtraTreeRegressor"),
)


@functools.cache
def _float32_trees() -> frozenset[type]:
    return frozenset(getattr(importlib.import_module(m), n) for m, n in _FLOAT32_TREES)


def row_major(model, X):
    """``X`` as the float32 array ``model`` would make of it, row-major, when ``model`` is one
    of scikit-learn's trees or forests and ``X`` a DataFrame or 2-D array of plain numeric
    columns (a frame keeps its column names); else ``X`` as it is."""
    if type(model) not in _float32_trees():
        return X
    if isinstance(X, pd.DataFrame):
        dtypes = list(X.dtypes)
    elif isinstance(X, np.ndarray) and X.ndim == 2:
        dtypes = [X.dtype]
    else:
        return X
    if not all(isinstance(d, np.dtype) and d.kind in "biuf" for d in dtypes):
        return X  # extension, object or text columns: sklearn converts those its own way
    values = np.ascontiguousarray(np.asarray(X, dtype=np.float32))  # sklearn's conversion
    if isinstance(X, pd.DataFrame):
        # copy=False keeps the array as the frame's one block: sklearn gets it back as it is.
        return pd.DataFrame(values, columns=X.columns, copy=False)
    return values
