"""What predicts inside a serving worker. A backend is loaded from the worker's job (the
bundle as an open file, central's trust list) and turns a DataFrame into named outputs.

``BACKENDS`` maps a name to its class; the server names the backend in each worker's job,
so another backend (ONNX) registers here and is chosen per version without touching the
worker. Runs only inside the sandboxed worker: the agent process never loads a model.
"""

from __future__ import annotations

import contextlib
import json
import tarfile
import warnings
from typing import Protocol

from ..argmax_predict import argmax_classes, argmax_predictions
from ..manifest import MANIFEST, data_member, model_member
from ..parquet_bytes import read_frame

SKOPS = model_member("skops")
X_MEMBER = data_member("X")
ARRAY_PARITY_ROWS = 200


class Backend(Protocol):
    name: str
    manifest: dict

    @classmethod
    def load(cls, job: dict) -> Backend:
        """Load from ``job``: ``bundle`` (a readable file path), ``trusted_types``."""
        ...

    def predict(self, frame) -> dict[str, list]:
        """Named outputs, one entry per row: ``predict``, and ``predict_proba`` where the
        model has it."""
        ...


def read_bundle(path: str) -> tuple[dict, dict]:
    """The manifest and the raw members a backend needs (model file, evaluation sample)."""
    from ..bundle import DATA_MEMBERS

    out = {}
    with tarfile.open(path, mode="r:") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        names = set(tar.getnames())
        for member in (SKOPS, *DATA_MEMBERS):
            if member in names:
                out[member] = tar.extractfile(member).read()
    return manifest, out


def _column(values) -> list:
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return [None if v != v else float(v) for v in arr.ravel().tolist()]  # NaN → null
    return arr.tolist()


def _tree_ensemble(model):
    """``(trees, method)`` for a scikit-learn forest whose output is the plain mean of its
    trees' ``method`` (exact types, one output), or None. Read in scikit-learn's source (1.3
    to 1.9): the forest checks the input once, then sums ``tree.predict_proba(X,
    check_input=False)`` (a regressor: ``predict``) over its trees through joblib and divides
    by their number. On one row the dispatch costs several times the trees themselves (16 ms
    against 3.6 ms for 200 trees), so ``_ensemble_mean`` sums them itself, in the same
    order: the same floats."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import (
        DecisionTreeClassifier,
        DecisionTreeRegressor,
        ExtraTreeClassifier,
        ExtraTreeRegressor,
    )

    kinds = {
        RandomForestClassifier: ("predict_proba", (DecisionTreeClassifier,)),
        ExtraTreesClassifier: ("predict_proba", (ExtraTreeClassifier,)),
        RandomForestRegressor: ("predict", (DecisionTreeRegressor,)),
        ExtraTreesRegressor: ("predict", (ExtraTreeRegressor,)),
    }
    method, tree_types = kinds.get(type(model), (None, ()))
    estimators = list(getattr(model, "estimators_", ()))
    if method is None or getattr(model, "n_outputs_", 1) != 1 or not estimators:
        return None
    if any(type(e) not in tree_types for e in estimators):
        return None
    return estimators, method


def _pipeline_steps(model):
    """``(transforms, final)`` of a plain Pipeline, or None. Read in scikit-learn's source
    (1.3 to 1.9): without metadata routing, its ``predict`` and ``predict_proba`` check that
    it is fitted, call each transform in turn (skipping None and "passthrough"), then the
    final step's method. Calling the steps here skips that check on every request (about a
    tenth of a millisecond on one row); the model was fitted when it loaded."""
    from sklearn import get_config
    from sklearn.pipeline import Pipeline

    if type(model) is not Pipeline or not model.steps or get_config()["enable_metadata_routing"]:
        return None
    final = model.steps[-1][1]
    if final is None or isinstance(final, str):
        return None
    return [s for _, s in model.steps[:-1] if s is not None and not isinstance(s, str)], final


def _scaler_kernel(step):
    """A StandardScaler's ``transform`` on a float64 array, or None for any other step. Read
    in scikit-learn's source (1.3 to 1.9): it copies the checked array, subtracts ``mean_``
    (with_mean), divides by ``scale_`` (with_std), in place; so does this, without the checks
    (a tenth of a millisecond on one row, more between requests, when the caches are cold)."""
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    if type(step) is not StandardScaler:
        return None
    mean = step.mean_ if step.with_mean else None
    scale = step.scale_ if step.with_std else None

    def transform(X):
        X = np.array(X, dtype=np.float64, copy=True)
        if mean is not None:
            X -= mean
        if scale is not None:
            X /= scale
        return X

    return transform


def _logistic_kernel(final):
    """A two-class LogisticRegression's ``predict_proba`` on a float64 array, or None. Read in
    scikit-learn's source (1.3 to 1.9): one-vs-rest for two classes is ``X @ coef_.T +
    intercept_``, flattened, its expit in place, then the columns ``1 - p`` and ``p``; so is
    this, without the checks. An explicit multinomial takes a softmax instead: not this."""
    import numpy as np
    from scipy.special import expit
    from sklearn.linear_model import LogisticRegression

    if type(final) is not LogisticRegression or getattr(final, "coef_", None) is None:
        return None
    if len(final.classes_) != 2 or final.coef_.shape[0] != 1:
        return None
    if getattr(final, "multi_class", "auto") not in ("auto", "ovr", "warn", "deprecated"):
        return None
    coef_t, intercept = final.coef_.T, final.intercept_

    def predict_proba(X):
        p = (X @ coef_t + intercept).reshape(-1)
        expit(p, out=p)
        return np.stack([1 - p, p], axis=1)

    return predict_proba


def _linear_kernels(transforms: list, final):
    """``(transforms, predict_proba)`` as plain array functions for a scaled two-class
    LogisticRegression (bare or in a Pipeline of StandardScalers), or None."""
    steps = [_scaler_kernel(step) for step in transforms]
    proba = _logistic_kernel(final)
    if proba is None or None in steps:
        return None
    return steps, proba


def _linear_proba(kernels, X, width: int | None):
    """``_linear_kernels``' ``predict_proba`` on a finite float array of ``width`` columns,
    else None (a frame, a NaN or an infinity goes through scikit-learn's own checks)."""
    import numpy as np

    if not isinstance(X, np.ndarray) or X.ndim != 2 or X.shape[1] != width:
        return None
    if not np.isfinite(X).all():
        return None
    transforms, proba = kernels
    for transform in transforms:
        X = transform(X)
    return proba(X)


def _ensemble_mean(trees, X, method: str):
    """The forest's ``method`` on a finite float array, summed over ``trees`` as the forest
    sums it; None for input the forest's own checks should see (NaN, inf)."""
    import numpy as np

    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        return None
    total = None
    for tree in trees:
        part = getattr(tree, method)(X, check_input=False)
        if total is None:
            total = np.zeros(part.shape, dtype=np.float64)
        total += part
    total /= len(trees)
    return total


class SkopsBackend:
    """The scikit-learn model itself, read from ``model.skops`` through the trust list
    given in the job (central's, never what the file asks for). Nothing is unpickled.

    A classifier whose ``predict`` is the class of its highest probability
    (``argmax_classes``) is called once per request, for ``predict_proba``; any other model
    is called for both. A model that answers a bare float64 array exactly as it answers the
    DataFrame (``array_columns``) gets the array: scikit-learn's checks of a frame's names
    and dtypes, which the server has made already, cost more than a small predict. On the
    array, a forest's trees are summed here (``_tree_ensemble``), without its per-tree
    dispatch, a Pipeline's steps are called in turn (``_pipeline_steps``), and a scaled
    two-class LogisticRegression is computed as scikit-learn computes it, without its checks
    (``_linear_kernels``), kept only when it gives the model's own floats on the evaluation
    sample, row by row and all at once (``_kernels_agree``)."""

    name = "skops"

    def __init__(self, model, manifest: dict, sample=None):
        from ..plugins import as_input, input_kind

        self.model, self.manifest, self.sample = model, manifest, sample
        self.input_kind, self._as_input = input_kind(manifest), as_input
        try:
            self.classes = argmax_classes(model)
            self.steps = _pipeline_steps(model)
            transforms, final = self.steps if self.steps else ([], model)
            self.forest = _tree_ensemble(final)
            linear = _linear_kernels(transforms, final)
        except ImportError:
            self.classes = self.steps = self.forest = linear = None
        self.linear = None  # not before the array path is known to be the frame's
        self.array_columns = self._array_columns()
        if linear is not None and self._kernels_agree(linear):
            self.linear = linear

    @classmethod
    def load(cls, job: dict) -> SkopsBackend:
        from ..trust import load_skops

        manifest, members = read_bundle(job["bundle"])
        if SKOPS not in members:
            raise ValueError("the bundle holds no model.skops; central serves only skops")
        model = load_skops(members[SKOPS], job.get("trusted_types") or ())
        sample = None
        if X_MEMBER in members:
            sample = read_frame(members[X_MEMBER])
        # The array path's one warning, on every call (the worker serves this model alone).
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return cls(model, manifest, sample)

    def class_labels(self) -> list | None:
        """A classifier's classes, in ``predict_proba``'s column order."""
        labels = getattr(self.model, "classes_", None)
        return None if labels is None else _column(labels)

    def predict_block(self, block, columns: list[str]) -> dict[str, list] | None:
        """Named outputs for a float64 rows x ``columns`` array, when the model takes the
        array in that column order (``array_columns``); None sends the frame instead."""
        if self.array_columns is None or columns != self.array_columns:
            return None
        return self.predict(block)

    def predict(self, X) -> dict[str, list]:
        """Named outputs for a frame (or, from ``predict_block``, its float64 array)."""
        X = self._as_input(X, self.input_kind)
        if self.classes is not None:
            proba = self._call(X, "predict_proba")
            got = argmax_predictions(proba, self.classes)
            unsure = got is None or got[1].any()  # a tie or a NaN: only predict can say
            predicted = self._call(X, "predict") if unsure else got[0]
            return {"predict": _column(predicted), "predict_proba": proba.tolist()}
        out = {"predict": _column(self._call(X, "predict"))}
        if hasattr(self.model, "predict_proba"):
            # e.g. SVC without probability=True has the method but refuses
            with contextlib.suppress(AttributeError, NotImplementedError):
                out["predict_proba"] = self._call(X, "predict_proba").tolist()
        return out

    def _call(self, X, method: str):
        """The model's ``method`` on X: a Pipeline step by step, a forest summed, a linear
        model computed directly."""
        fast = self._linear(X, method)
        if fast is not None:
            return fast
        model = self.model
        if self.steps is not None:
            transforms, model = self.steps
            for step in transforms:
                X = step.transform(X)
        summed = self._summed(X, method)
        return getattr(model, method)(X) if summed is None else summed

    def _summed(self, X, method: str):
        """A forest's ``method`` summed over its trees, on an array of its width only (a
        frame goes through the forest's own checks of its names)."""
        import numpy as np

        if self.forest is None or self.forest[1] != method or not isinstance(X, np.ndarray):
            return None
        trees = self.forest[0]
        if X.ndim != 2 or X.shape[1] != trees[0].n_features_in_:
            return None
        return _ensemble_mean(trees, X, method)

    def _linear(self, X, method: str):
        """The linear kernels' ``predict_proba`` where they apply (``_linear_proba``)."""
        if self.linear is None or method != "predict_proba":
            return None
        return _linear_proba(self.linear, X, getattr(self.model, "n_features_in_", None))

    def _kernels_agree(self, kernels) -> bool:
        """The linear kernels give the model's own ``predict_proba``, float for float, for
        the first ``ARRAY_PARITY_ROWS`` evaluation rows, one at a time (as serving mostly
        calls it) and all at once."""
        import numpy as np

        if self.array_columns is None:
            return False
        rows = self.sample.iloc[:ARRAY_PARITY_ROWS].to_numpy(dtype="float64")
        batches = [rows[i : i + 1] for i in range(len(rows))] + [rows]
        width = getattr(self.model, "n_features_in_", None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                own = [self.model.predict_proba(b) for b in batches]
            ours = [_linear_proba(kernels, b, width) for b in batches]
        except Exception:
            return False
        return all(o is not None and np.array_equal(o, m) for o, m in zip(ours, own, strict=True))

    def _array_columns(self) -> list[str] | None:
        """The evaluation sample's columns when every one is float64, the model was fitted on
        them in that order (or on an unnamed array), and its outputs for the sample's first
        ``ARRAY_PARITY_ROWS`` rows are the same, value for value, from the array as from the
        frame; else None (a model that selects columns by name, say)."""
        sample = self.sample
        if sample is None or not len(sample):
            return None
        if not all(str(t) == "float64" for t in sample.dtypes):
            return None
        columns = [str(c) for c in sample.columns]
        names = getattr(self.model, "feature_names_in_", None)
        if names is not None and [str(n) for n in names] != columns:
            return None
        rows = sample.iloc[:ARRAY_PARITY_ROWS]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                same = self.predict(rows) == self.predict(rows.to_numpy(dtype="float64"))
        except Exception:  # the model wants its frame
            return None
        return columns if same else None

    def nan_columns(self) -> list[str] | None:
        """The columns where this model takes a NaN, found by predicting the first evaluation
        row with that column blanked; None when there is no sample to try."""
        if self.sample is None or not len(self.sample):
            return None
        import pandas as pd

        ok = []
        for col in self.sample.columns:
            row = self.sample.iloc[:1].copy()
            dtype = row[col].dtype
            if getattr(dtype, "na_value", None) is pd.NA:
                # a nullable column (Int64, boolean): a request's null reaches it as pd.NA
                row[col] = pd.array([None], dtype=dtype)
            # "O": object, or pandas' string dtype (what Parquet reads back under pandas 3,
            # where a request's null in a text column reaches the model as NaN too)
            elif dtype.kind in "fcO":
                row[col] = float("nan")
            else:
                continue
            try:  # in the form the server hands it (a text pipeline gets its texts)
                self.model.predict(self._as_input(row, self.input_kind))
            except Exception:  # the model refuses it: so will the server
                continue
            ok.append(str(col))
        return ok


# A name maps to a class, or to "module:Class" imported only in the worker that needs it
# (onnxruntime is the optional `serve` extra).
BACKENDS: dict[str, type | str] = {
    "skops": SkopsBackend,
    "onnx": "handoff_agent.serving.onnx_backend:OnnxBackend",
}
