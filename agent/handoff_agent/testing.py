"""A conformance kit for check plugins, in the spirit of sklearn's ``parametrize_with_checks``.

The built-in checks pass it; a plugin author runs the same suite on their own check::

    from handoff_agent.testing import parametrize_with_checks
    from my_package import MyCheck

    @parametrize_with_checks([MyCheck()])
    def test_conformance(check, conformance_test):
        conformance_test(check)

Each conformance test takes a check and raises ``AssertionError`` when the check breaks the
contract in ``handoff_agent.plugins``. The data is small and generated (no downloads), so
the whole suite takes well under a second per check. Imports sklearn and pandas: use it in
tests, never in the agent.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re

from .plugins import STATUSES, Check, CheckContext, CheckResult, compares_champion

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
FIELDS = {f.name for f in dataclasses.fields(CheckContext)}
DATA_FIELDS = ("X", "y", "sensitive", "reference_X", "reference_y", "champion")


# -- the data a check is run on ---------------------------------------------------------------


def make_context(task: str = "classification", *, n_samples: int = 300, random_state: int = 0):
    """A small, complete ``CheckContext``: a fitted sklearn pipeline on generated data, a
    reference sample, a sensitive column, a weaker champion and a previous manifest.

    The evaluation rows carry a non-default index (as a slice of a larger frame would), with
    ``sensitive`` aligned to it. ``config`` is empty; ``run_check`` merges the defaults in.
    Each call returns a fresh deep copy, so a check that mutates it harms no other test.
    """
    return copy.deepcopy(_context(task, n_samples, random_state))


@functools.lru_cache(maxsize=8)
def _context(task: str, n_samples: int, random_state: int) -> CheckContext:
    import numpy as np
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.datasets import make_classification, make_regression
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    if task == "classification":
        X, y = make_classification(
            n_samples, n_features=4, n_informative=3, n_redundant=0, random_state=random_state
        )
        estimator, champion = LogisticRegression(), DummyClassifier(strategy="prior")
    elif task == "regression":
        X, y = make_regression(n_samples, n_features=4, noise=10.0, random_state=random_state)
        estimator, champion = Ridge(), DummyRegressor()
    else:
        raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
    rng = np.random.default_rng(random_state)
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    X["segment"] = rng.choice(["a", "b", "c"], n_samples)
    y = pd.Series(y, name="target")
    sensitive = pd.DataFrame({"group": rng.choice(["g1", "g2"], n_samples)})
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["segment"]), remainder="passthrough"
        ),
        estimator,
    )
    half = n_samples // 2
    ref, ev = slice(0, half), slice(half, n_samples)
    model.fit(X.iloc[ref], y.iloc[ref])
    champion.fit(X.iloc[ref], y.iloc[ref])
    signature = {"columns": [{"name": str(c), "dtype": str(t)} for c, t in X.dtypes.items()]}
    manifest = {"name": "conformance", "task": task, "flavor": "sklearn", "signature": signature}
    return CheckContext(
        model=model,
        manifest=manifest,
        X=X.iloc[ev],
        y=y.iloc[ev],
        sensitive=sensitive.iloc[ev],
        reference_X=X.iloc[ref],
        reference_y=y.iloc[ref],
        champion=champion,
        champion_manifest=copy.deepcopy(manifest),
        previous_manifest=copy.deepcopy(manifest),
        task=task,
    )


def run_check(check, ctx: CheckContext, **kwargs) -> CheckResult:
    """Run ``check`` as the worker does: its defaults merged under ``ctx.config``."""
    ctx = dataclasses.replace(ctx, config={**getattr(check, "defaults", {}), **ctx.config})
    return check.run(ctx, **kwargs)


def assert_valid_result(res, where: str = "run()") -> None:
    """``res`` is a ``CheckResult`` with a known status and strictly JSON-serialisable parts."""
    assert isinstance(res, CheckResult), f"{where} returned {type(res).__name__}, not CheckResult"
    assert res.status in STATUSES, f"{where} returned status {res.status!r}, not one of {STATUSES}"
    assert isinstance(res.message, str), f"{where}: message must be a str"
    assert isinstance(res.metrics, dict), f"{where}: metrics must be a dict"
    assert isinstance(res.tables, dict), f"{where}: tables must be a dict of lists of rows"
    for name, rows in res.tables.items():
        assert isinstance(rows, list), f"{where}: table {name!r} must be a list of dicts"
        assert all(isinstance(r, dict) for r in rows), f"{where}: rows of {name!r} must be dicts"
    assert isinstance(res.plots, dict), f"{where}: plots must be a dict of name -> base64 PNG"
    for name, data in res.plots.items():
        assert isinstance(data, str), f"{where}: plot {name!r} must be a base64 str"
        assert data.startswith("iVBORw0KGgo"), f"{where}: plot {name!r} is not a base64 PNG"
    try:
        json.dumps(res.to_json(), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise AssertionError(
            f"{where} returned a result that is not JSON-serialisable ({e}). Convert numpy "
            "types with float()/int() and use None for NaN or infinity."
        ) from None


# -- the conformance tests ---------------------------------------------------------------------


def check_has_api_attributes(check) -> None:
    """name, title, needs, defaults and run() are there, with the right types."""
    assert isinstance(check, Check), "a check needs name, title, needs, defaults and run()"
    assert isinstance(check.name, str) and NAME.match(check.name), (
        f"name {check.name!r} must be lowercase letters, digits and underscores"
    )
    assert isinstance(check.title, str) and check.title.strip(), "title must be a non-empty str"
    assert "\n" not in check.title, "title must be one line"
    assert isinstance(check.needs, tuple), "needs must be a tuple of CheckContext field names"
    unknown = set(check.needs) - FIELDS
    assert not unknown, f"needs names unknown CheckContext fields: {sorted(unknown)}"
    assert isinstance(check.defaults, dict), "defaults must be a dict"


def check_defaults_are_json(check) -> None:
    """Defaults can be stored, shown and overridden as JSON, with str keys."""
    assert all(isinstance(k, str) for k in check.defaults), "defaults keys must be str"
    json.dumps(check.defaults, allow_nan=False)


def check_runs_on_classification(check) -> None:
    """A complete classification context gives a valid result that is not an error."""
    res = run_check(check, make_context("classification"))
    assert_valid_result(res, "run() on classification")
    assert res.status != "error", f"run() on classification gave an error: {res.message}"


def check_runs_on_regression(check) -> None:
    """A complete regression context gives a valid result that is not an error."""
    res = run_check(check, make_context("regression"))
    assert_valid_result(res, "run() on regression")
    assert res.status != "error", f"run() on regression gave an error: {res.message}"


def check_needs_are_sufficient(check) -> None:
    """With only the fields in ``needs`` (and the model and manifest), run() still works."""
    full = make_context("classification")
    bare = {f: None for f in DATA_FIELDS if f not in check.needs}
    ctx = dataclasses.replace(full, **bare, champion_manifest=None, previous_manifest=None)
    res = run_check(check, ctx)
    assert_valid_result(res, "run() with only its needs")
    assert res.status != "error", (
        f"run() with only {check.needs or 'no data'} gave an error, so needs is incomplete: "
        f"{res.message}"
    )


def check_handles_missing_needs(check) -> None:
    """Without a field it needs, run() returns a result (ideally "skip") instead of raising."""
    full = make_context("classification")
    for field in check.needs:
        try:
            res = run_check(check, dataclasses.replace(full, **{field: None}))
        except Exception as e:
            raise AssertionError(
                f"run() raised {type(e).__name__} without {field!r}; return "
                'CheckResult("skip", ...) instead'
            ) from e
        assert_valid_result(res, f"run() without {field!r}")


def check_does_not_mutate_context(check) -> None:
    """run() leaves the data, the manifests and the config as it found them."""
    ctx = make_context("classification")
    ctx.config = copy.deepcopy(check.defaults)
    before = {f: copy.deepcopy(getattr(ctx, f)) for f in FIELDS - {"model", "champion"}}
    check.run(ctx)
    for f, old in before.items():
        new = getattr(ctx, f)
        if hasattr(old, "equals"):
            same = old.equals(new) and list(old.index) == list(new.index)
            if hasattr(old, "columns"):
                same = same and list(old.columns) == list(new.columns)
                same = same and list(old.dtypes) == list(new.dtypes)
        else:
            same = old == new
        assert same, f"run() modified ctx.{f}; work on a copy instead"


def check_survives_broken_model(check) -> None:
    """A model whose predict raises gives a result, not an exception."""
    ctx = dataclasses.replace(make_context("classification"), model=_BrokenModel())
    try:
        res = run_check(check, ctx)
    except Exception as e:
        raise AssertionError(
            f"run() raised {type(e).__name__} for a model whose predict raises. Catch it and "
            'return CheckResult("fail", "predict raised ...")'
        ) from e
    assert_valid_result(res, "run() on a broken model")


def check_without_a_champion_when_it_does_not_compare(check) -> None:
    """A check that says ``compares_champion = False`` is run without the champion (its
    worker does not load it): its status and metrics must be the same either way."""
    if compares_champion(check):
        return
    full = make_context("classification")
    alone = dataclasses.replace(full, champion=None, champion_manifest=None)
    a, b = run_check(check, full), run_check(check, alone)
    assert_valid_result(b, "run() without the champion")
    assert (a.status, a.metrics) == (b.status, b.metrics), (
        "compares_champion is False, but run() changed without the champion: "
        f"{a.status} {a.metrics} against {b.status} {b.metrics}"
    )


def check_accepts_keyword_arguments(check) -> None:
    """run(ctx, **kwargs) accepts keyword arguments it does not know, so the API can grow."""
    res = run_check(check, make_context("regression"), handoff_future_argument=True)
    assert_valid_result(res, "run() with an extra keyword argument")


CONFORMANCE_TESTS = (
    check_has_api_attributes,
    check_defaults_are_json,
    check_runs_on_classification,
    check_runs_on_regression,
    check_needs_are_sufficient,
    check_handles_missing_needs,
    check_does_not_mutate_context,
    check_survives_broken_model,
    check_without_a_champion_when_it_does_not_compare,
    check_accepts_keyword_arguments,
)


class _BrokenModel:
    """A classifier that loaded fine but cannot predict."""

    _estimator_type = "classifier"
    classes_ = [0, 1]

    def fit(self, X, y=None):
        return self

    def predict(self, X):
        raise RuntimeError("this model is broken on purpose")

    predict_proba = predict

    def score(self, X, y):
        raise RuntimeError("this model is broken on purpose")


# -- entry points for test suites --------------------------------------------------------------


def _instances(checks):
    return [c() if isinstance(c, type) else c for c in checks]


def check_check(check) -> None:
    """Run every conformance test on ``check``; raise ``AssertionError`` on the first failure."""
    (check,) = _instances([check])
    for test in CONFORMANCE_TESTS:
        test(check)


def parametrize_with_checks(checks):
    """A ``pytest.mark.parametrize`` over every (check, conformance test) pair.

    ``checks`` holds check instances or classes. The decorated test takes two arguments,
    ``check`` and ``conformance_test``, and calls ``conformance_test(check)``.
    """
    import pytest  # the `test` extra: only plugin authors' test suites call this

    pairs = [(c, t) for c in _instances(checks) for t in CONFORMANCE_TESTS]
    ids = [f"{getattr(c, 'name', type(c).__name__)}-{t.__name__}" for c, t in pairs]
    return pytest.mark.parametrize("check, conformance_test", pairs, ids=ids)
