"""Request decoding in-process: the four MLflow formats and V2 (JSON and binary) give the same
columns; what the HTTP matrix in test_serving.py cannot reach cheaply is checked here."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from handoff_agent.errors import HandoffError
from handoff_agent.serving.inputs import (
    decode_invocations,
    decode_v2,
    split_binary,
    validate,
)

SIG = [
    {"name": "x", "dtype": "float64"},
    {"name": "n", "dtype": "int64"},
    {"name": "s", "dtype": "object"},
]
COLS = {"x": [1.5, 2.0], "n": [1, 2], "s": ["a", "b"]}
NAMES = ["x", "n", "s"]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": NAMES, "data": [[1.5, 1, "a"], [2.0, 2, "b"]]}},
        {"dataframe_records": [{"x": 1.5, "n": 1, "s": "a"}, {"x": 2.0, "n": 2, "s": "b"}]},
        {"instances": [[1.5, 1, "a"], [2.0, 2, "b"]]},
        {"inputs": COLS},
    ],
)
def test_every_mlflow_format_decodes_to_the_same_columns(body):
    assert decode_invocations(body, NAMES) == COLS


def test_v2_binary_extension_and_matrix_tensor():
    x = np.array([1.5, 2.0]).tobytes()
    n = np.array([1, 2], dtype="<i8").tobytes()
    s = b"".join(struct.pack("<I", len(v)) + v for v in (b"a", b"b"))
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [2],
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(x)},
            },
            {
                "name": "n",
                "shape": [2, 1],
                "datatype": "INT64",
                "parameters": {"binary_data_size": len(n)},
            },
            {
                "name": "s",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(s)},
            },
        ]
    }
    raw = json.dumps(header).encode()
    body, tail = split_binary(raw + x + n + s, str(len(raw)))
    assert decode_v2(body, tail, NAMES) == COLS
    matrix = {
        "inputs": [{"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]
    }
    assert decode_v2(matrix, b"", ["a", "b"]) == {"a": [1, 3], "b": [2, 4]}


def test_validation_orders_columns_and_names_the_problem():
    request, rows = validate({"s": ["a"], "n": [1], "x": [None]}, SIG, ["x"], 10)
    assert (request["columns"], rows) == (NAMES, 1)
    for columns, nan_ok, code in [
        ({"x": [1.0], "n": [1.5], "s": ["a"]}, [], "wrong_dtype"),
        ({"x": [True], "n": [1], "s": ["a"]}, [], "wrong_dtype"),
        ({"x": [1.0], "n": [1], "s": [3]}, [], "wrong_dtype"),
        ({"x": [None], "n": [1], "s": ["a"]}, [], "nan_not_allowed"),
        ({"x": [float("nan")], "n": [1], "s": ["a"]}, None, "nan_not_allowed"),
        ({"x": [1.0] * 11, "n": [1] * 11, "s": ["a"] * 11}, [], "too_many_rows"),
        ({"x": [float("inf")], "n": [1], "s": ["a"]}, ["x"], "out_of_range"),
        ({"x": [10**400], "n": [1], "s": ["a"]}, [], "out_of_range"),
        ({"x": [1.0], "n": [2**63], "s": ["a"]}, [], "out_of_range"),
    ]:
        with pytest.raises(HandoffError) as e:
            validate(columns, SIG, nan_ok, 10)
        assert e.value.code == code and 400 <= e.value.status < 500


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        ({"shape": [1], "datatype": "INT8", "data": [1000]}, "is INT8 but holds 1000"),
        ({"shape": [1], "datatype": "UINT8", "data": [-1]}, "is UINT8 but holds -1"),
        ({"shape": [True], "datatype": "FP64", "data": [1.0]}, "shape must be a list of sizes"),
        ({"shape": [], "datatype": "FP64", "data": [1.0]}, "shape must be a list of sizes"),
    ],
)
def test_v2_values_fit_their_datatype_and_shapes_are_sizes(tensor, says):
    with pytest.raises(HandoffError) as e:
        decode_v2({"inputs": [{"name": "x", **tensor}]}, b"", ["x"])
    assert says in e.value.message and 400 <= e.value.status < 500


def test_a_column_given_twice_is_refused_not_overwritten():
    body = {"dataframe_split": {"columns": ["x", "x"], "data": [[1.0, 2.0]]}}
    with pytest.raises(HandoffError) as e:
        decode_invocations(body, ["x"])
    assert "column 'x' is given twice" in e.value.message


def test_a_date_column_takes_iso_8601_and_a_client_s_bad_date_is_the_client_s_422():
    """A value the column's dtype cannot read would fail in the model's worker and count
    against a canary as the model's error: it is refused before, naming the form."""
    sig = [{"name": "signup", "dtype": "datetime64[ns]"}]
    for good in ("2024-01-31", "2024-01-31T09:30:00", "2024-01-31 09:30:00.5", None):
        validate({"signup": [good]}, sig, ["signup"], 10)
    for bad in ("not a date", 1706659200000, "31/01/2024"):
        with pytest.raises(HandoffError) as e:
            validate({"signup": [bad]}, sig, ["signup"], 10)
        assert e.value.code == "wrong_dtype" and "ISO 8601" in str(e.value), bad


def test_a_null_text_is_refused_before_a_text_pipeline_sees_it():
    """The probe of where a model takes a missing value hands it its input as serving does
    (a text pipeline gets texts): a null text is the client's 422, not the model's error."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from handoff_agent.serving.backend import SkopsBackend

    texts = pd.DataFrame({"review": ["good fast", "slow bad"] * 10})
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts["review"], [1, 0] * 10)
    backend = SkopsBackend(model, {"signature": {"input": "text"}}, sample=texts)
    assert backend.nan_columns() == []
    with pytest.raises(HandoffError) as e:
        validate({"review": [None]}, [{"name": "review", "dtype": "object"}], [], 10)
    assert e.value.code == "nan_not_allowed"
