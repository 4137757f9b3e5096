"""schema: the input signature compared with the previous version's."""

import pandas as pd
import pytest

from handoff_agent.checks.api import CheckContext
from handoff_agent.checks.schema import SchemaCheck

BEFORE = [("age", "int64"), ("income", "float64"), ("city", "object")]


def _manifest(columns):
    return {"signature": {"columns": [{"name": n, "dtype": d} for n, d in columns]}}


def _schema(after, before=BEFORE, **config):
    ctx = CheckContext(None, _manifest(after), previous_manifest=_manifest(before), config=config)
    return SchemaCheck().run(ctx)


def test_unchanged_signature_passes():
    assert _schema(BEFORE).status == "pass"


def test_first_version_passes():
    ctx = CheckContext(None, _manifest(BEFORE))
    res = SchemaCheck().run(ctx)
    assert res.status == "pass"
    assert "First version" in res.message


@pytest.mark.parametrize(
    "after, change, words",
    [
        (BEFORE[:2], "removed", "'city' removed"),
        (
            [("age", "int64"), ("salary", "float64"), ("city", "object")],
            "renamed",
            "'income' renamed to 'salary'",
        ),
        (
            [("age", "object"), ("income", "float64"), ("city", "object")],
            "retyped",
            "'age' retyped from int64 to object",
        ),
    ],
    ids=["removed", "renamed", "retyped"],
)
def test_breaking_changes_fail(after, change, words):
    res = _schema(after)
    assert res.status == "fail"
    assert "Breaking change" in res.message
    assert words in res.message
    assert res.metrics[change] == 1
    assert any(c["change"] == change for c in res.tables["changes"])


def test_widening_warns_unless_disallowed():
    after = [("age", "float64"), ("income", "float64"), ("city", "object")]
    assert _schema(after).status == "warn"
    assert _schema(after, allow_widening=False).status == "fail"


def test_added_and_reordered_columns_warn():
    assert _schema([*BEFORE, ("score", "float64")]).status == "warn"
    assert _schema(list(reversed(BEFORE))).status == "warn"
    assert _schema([*BEFORE, ("score", "float64")], on_added="fail").status == "fail"


def test_data_that_does_not_match_the_signature_fails():
    X = pd.DataFrame({"age": [1], "income": [2.0]})
    res = SchemaCheck().run(CheckContext(None, _manifest(BEFORE), X=X))
    assert res.status == "fail"
