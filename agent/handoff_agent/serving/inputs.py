"""Prediction requests in, validated against the version's recorded input signature.

Two wire formats decode to the same thing, one list per column:
- the Open Inference Protocol (V2): named tensors, one per column (or one ``[rows, columns]``
  tensor in signature order), JSON or with the binary-data extension;
- MLflow's ``/invocations``: ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``.

Then one check says exactly what is wrong, as the project's JSON error with a 4xx: unknown or
missing columns, a wrong type, too many rows, a NaN where the model cannot take one, or a body
that is not what the format says. The worker never sees a request that fails here.
"""

from __future__ import annotations

import datetime
import json
import math
import struct
import sys

from ..errors import BadRequest, HandoffError, TooLarge

FORMATS_HINT = (
    'Send {"dataframe_split": {"columns": [...], "data": [[...]]}}, '
    '{"dataframe_records": [{...}]}, {"instances": [...]} or {"inputs": {...}}.'
)
V2_HINT = 'Send {"inputs": [{"name": COLUMN, "shape": [ROWS], "datatype": "FP64", "data": [...]}]}.'


class InvalidInput(HandoffError):
    status, code = 422, "invalid_input"


def malformed(message: str, hint: str = FORMATS_HINT) -> BadRequest:
    return BadRequest(message, hint, code="malformed_body")


# -- signature -------------------------------------------------------------------------------


def kind_of(dtype: str) -> str:
    """f(loat), i(nteger), b(ool), d(ate and time, sent as an ISO 8601 string), s(tring-like)
    or '' (anything) for a pandas dtype name."""
    d = (dtype or "").lower()
    if d.startswith(("float", "double")):
        return "f"
    if d.startswith(("int", "uint")):
        return "i"
    if d.startswith("bool"):
        return "b"
    if d.startswith("datetime"):
        return "d"
    if d in ("object", "string", "str", "category") or d.startswith("string"):
        return "s"
    return ""


def signature_columns(manifest: dict) -> list[dict]:
    return list(((manifest or {}).get("signature") or {}).get("columns") or [])


# -- MLflow /invocations ---------------------------------------------------------------------


def decode_invocations(body: dict, expected: list[str]) -> dict[str, list]:
    """One of MLflow's four keys → columns. ``expected``: the signature's column order, for
    rows given as plain lists."""
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in body]
    if len(keys) != 1:
        raise malformed(
            "The body must have exactly one of dataframe_split, dataframe_records, instances, "
            f"inputs; it has {', '.join(sorted(body)) or 'none'}."
        )
    key, value = keys[0], body[keys[0]]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise malformed("dataframe_split must be an object with columns and data.")
        columns = value.get("columns", expected)
        return _rows(value["data"], columns, key)
    if key == "dataframe_records":
        return _records(value, key)
    if isinstance(value, dict):  # inputs/instances as {column: values}
        return {str(k): _as_list(v, key) for k, v in value.items()}
    if not isinstance(value, list):
        raise malformed(f"{key} must be a list or an object of columns.")
    if value and all(isinstance(r, dict) for r in value):
        return _records(value, key)
    if value and all(isinstance(r, list) for r in value):
        return _rows(value, expected, key)
    if len(expected) == 1:  # one column given as a flat list
        return {expected[0]: value}
    raise malformed(f"{key} must hold records (objects) or rows (lists) of {len(expected)} values.")


def _as_list(v, key: str) -> list:
    if not isinstance(v, list):
        return [v]
    return v


def _records(value, key: str) -> dict[str, list]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise malformed(f"{key} must be a list of objects, one per row.")
    names: list[str] = []
    for r in value:
        for k in r:
            if k not in names:
                names.append(k)
    missing = object()
    cols = {n: [r.get(n, missing) for r in value] for n in names}
    for n, vals in cols.items():
        if any(v is missing for v in vals):
            raise InvalidInput(
                f"Column {n!r} is missing from some rows.",
                "Give every record the same keys.",
                code="missing_columns",
            )
    return cols


def _rows(data, columns, key: str) -> dict[str, list]:
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise malformed(f"{key}: columns must be a list of names.")
    if len(set(columns)) != len(columns):  # the later would silently replace the earlier
        twice = next(c for c in columns if columns.count(c) > 1)
        raise malformed(f"{key}: column {twice!r} is given twice.")
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
        raise malformed(f"{key}: data must be a list of rows, each a list.")
    bad = next((i for i, r in enumerate(data) if len(r) != len(columns)), None)
    if bad is not None:
        raise malformed(
            f"{key}: row {bad} has {len(data[bad])} values for {len(columns)} columns.",
            f"Each row lists the columns in this order: {', '.join(columns)}.",
        )
    return {c: [r[i] for r in data] for i, c in enumerate(columns)}


# -- V2 (Open Inference Protocol) ------------------------------------------------------------

V2_NUMPY = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
V2_KIND = {"BOOL": "b", "BYTES": "s", **{k: "i" for k in V2_NUMPY if "INT" in k}}
V2_KIND.update({"FP16": "f", "FP32": "f", "FP64": "f"})


def split_binary(raw: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON part and the binary tail of a V2 request (the binary-data extension)."""
    if header_length is None:
        return _json(raw), b""
    try:
        n = int(header_length)
    except ValueError:
        raise malformed("Inference-Header-Content-Length must be an integer.", V2_HINT) from None
    if not 0 <= n <= len(raw):
        raise malformed(
            f"Inference-Header-Content-Length is {n}; the body has {len(raw)} bytes.", V2_HINT
        )
    return _json(raw[:n]), raw[n:]


def _json(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"null")
    except ValueError as e:
        raise malformed(f"The body is not valid JSON ({e}).", V2_HINT) from None
    if not isinstance(body, dict):
        raise malformed("The body must be a JSON object.", V2_HINT)
    return body


def decode_v2(body: dict, tail: bytes, expected: list[str]) -> dict[str, list]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        raise malformed("inputs must be a non-empty list of tensors.", V2_HINT)
    out: dict[str, list] = {}
    offset = 0
    for tensor in inputs:
        name, shape, dtype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or not name:
            raise malformed("Every input tensor needs a name (its column).", V2_HINT)
        if (
            not isinstance(shape, list)
            or not shape
            or not all(type(s) is int and s >= 0 for s in shape)
        ):
            raise malformed(f"Tensor {name!r}: shape must be a list of sizes, e.g. [3].", V2_HINT)
        if dtype not in V2_KIND:
            raise malformed(
                f"Tensor {name!r}: unknown datatype {dtype!r}.",
                f"Datatypes are {', '.join(sorted(V2_KIND))}.",
            )
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(tail):
                raise malformed(f"Tensor {name!r}: binary_data_size overruns the body.", V2_HINT)
            values = _from_binary(tail[offset : offset + size], dtype, name)
            offset += size
        elif "data" in tensor:
            values = _flatten(tensor["data"])
        else:
            raise malformed(f"Tensor {name!r} has no data.", V2_HINT)
        count = math.prod(shape) if shape else 1
        if len(values) != count:
            raise malformed(
                f"Tensor {name!r}: shape {shape} holds {count} values, data has {len(values)}.",
                V2_HINT,
            )
        _check_v2_values(values, dtype, name)
        if len(shape) == 2 and shape[1] > 1 and name not in expected:
            # One [rows, columns] tensor: the columns in the signature's order.
            if shape[1] != len(expected):
                raise InvalidInput(
                    f"Tensor {name!r} has {shape[1]} columns; the model takes {len(expected)}: "
                    f"{', '.join(expected)}.",
                    "Send one tensor per column, named after it.",
                    code="wrong_shape",
                )
            width = shape[1]
            for j, col in enumerate(expected):
                out[col] = values[j::width]
            continue
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(
                f"Tensor {name!r} has shape {shape}; a column is [rows] or [rows, 1].",
                "Send one tensor per column, named after it.",
                code="wrong_shape",
            )
        if name in out:
            raise malformed(f"Tensor {name!r} is given twice.", V2_HINT)
        out[name] = values
    return out


def _flatten(data) -> list:
    if not isinstance(data, list):
        return [data]
    if any(isinstance(v, list) for v in data):
        flat: list = []
        for v in data:
            flat.extend(_flatten(v))
        return flat
    return data


def _from_binary(raw: bytes, dtype: str, name: str) -> list:
    import numpy as np

    if dtype == "BYTES":
        values, i = [], 0
        while i < len(raw):
            if i + 4 > len(raw):
                raise malformed(f"Tensor {name!r}: truncated BYTES element.", V2_HINT)
            (n,) = struct.unpack_from("<I", raw, i)
            values.append(raw[i + 4 : i + 4 + n].decode("utf-8", errors="replace"))
            i += 4 + n
        return values
    width = np.dtype(V2_NUMPY[dtype]).itemsize
    if len(raw) % width:
        raise malformed(
            f"Tensor {name!r}: {len(raw)} bytes is not a whole number of {dtype}.", V2_HINT
        )
    return np.frombuffer(raw, dtype=V2_NUMPY[dtype]).tolist()


# A JSON null is a missing value in any tensor; the column's check then says whether the
# model takes one there (a nullable Int64 column may).
_V2_OK = {
    "f": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    "i": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "b": lambda v: v is None or isinstance(v, bool),
    "s": lambda v: v is None or isinstance(v, str),
}


def _check_v2_values(values: list, dtype: str, name: str) -> None:
    kind = V2_KIND[dtype]
    if kind == "f" and all(type(v) is float for v in values):
        return  # the usual float column, at C speed
    ok = _V2_OK[kind]
    bad = next((v for v in values if not ok(v)), _NONE)
    if bad is _NONE and kind == "i":
        lo, hi = _INT_BOUNDS[dtype]
        bad = next((v for v in values if v is not None and not lo <= v <= hi), _NONE)
    if bad is not _NONE:
        raise InvalidInput(
            f"Tensor {name!r} is {dtype} but holds {bad!r}.",
            "Make the datatype match the values.",
            code="wrong_dtype",
        )


_NONE = object()


def _int_bounds(code: str) -> tuple[int, int]:
    bits = 8 * int(code[-1])
    return (0, 2**bits - 1) if code[1] == "u" else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


_INT_BOUNDS = {k: _int_bounds(t) for k, t in V2_NUMPY.items() if V2_KIND[k] == "i"}


# -- validation ------------------------------------------------------------------------------


def validate(
    columns: dict[str, list],
    signature: list[dict],
    nan_ok: list[str] | None,
    max_rows: int,
    v2_dtypes: dict[str, str] | None = None,
) -> tuple[dict, int]:
    """The worker's request (columns in signature order, their dtypes) and the row count,
    or an error naming what is wrong. Without a recorded signature the columns pass as
    given (the model itself then decides)."""
    names = [c["name"] for c in signature] or list(columns)
    given = list(columns)
    unknown = [c for c in given if c not in names]
    missing = [c for c in names if c not in columns]
    if unknown:
        raise InvalidInput(
            f"Unknown column{'s' * (len(unknown) > 1)}: {', '.join(map(repr, unknown))}.",
            f"The model takes: {', '.join(names)}.",
            code="unknown_columns",
        )
    if missing:
        raise InvalidInput(
            f"Missing column{'s' * (len(missing) > 1)}: {', '.join(map(repr, missing))}.",
            f"The model takes: {', '.join(names)}.",
            code="missing_columns",
        )
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise malformed(
            "The columns have different numbers of rows.", "Give every column one value a row."
        )
    rows = lengths.pop() if lengths else 0
    if rows == 0:
        raise malformed("The request has no rows.", "Send at least one row to predict.")
    if rows > max_rows:
        raise TooLarge(
            f"The request has {rows} rows; one request may carry at most {max_rows}.",
            "Split it into smaller requests (c.Serving.max_rows).",
            code="too_many_rows",
        )
    dtypes = {c["name"]: c.get("dtype", "") for c in signature}
    for name in names:
        _check_column(name, columns[name], kind_of(dtypes.get(name, "")), nan_ok)
    request = {"columns": names, "data": {n: columns[n] for n in names}, "dtypes": dtypes}
    return request, rows


# What a number may be: finite and, in an integer column, an int64. Past that the model
# refuses the row, and a refusal counts against a canary's guardrails: a client's bad value
# must be the client's 422, not the model's error.
FLOAT_MAX = sys.float_info.max
INT_RANGE = _INT_BOUNDS["INT64"]


def _iso_time(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _in_range(v: int | float, kind: str) -> bool:
    if kind == "i":
        return INT_RANGE[0] <= v <= INT_RANGE[1]
    return -FLOAT_MAX <= v <= FLOAT_MAX  # False for inf, NaN and ints past float64


def _check_column(name: str, values: list, kind: str, nan_ok: list[str] | None) -> None:
    if kind == "f" and all(type(v) is float and -FLOAT_MAX <= v <= FLOAT_MAX for v in values):
        return  # finite floats: what a numeric column usually holds (the loop says the rest)
    for i, v in enumerate(values):
        blank = v is None or (isinstance(v, float) and v != v)
        if blank:  # where the model takes one (a nullable Int64 column too), it passes
            if nan_ok is None or name not in nan_ok:
                raise InvalidInput(
                    f"Column {name!r} row {i} is missing (null/NaN), and this model cannot "
                    "take a missing value there.",
                    "Fill it in before calling the model.",
                    code="nan_not_allowed",
                )
            continue
        if isinstance(v, (dict, list)):
            wrong = True
        elif kind == "f":
            wrong = isinstance(v, bool) or not isinstance(v, (int, float))
        elif kind == "i":
            wrong = isinstance(v, bool) or not (
                isinstance(v, int) or (isinstance(v, float) and v.is_integer())
            )
        elif kind == "b":
            wrong = not isinstance(v, bool)
        elif kind == "s":
            wrong = not isinstance(v, str)
        elif kind == "d":  # what the column's astype reads; else the model would be blamed
            wrong = not isinstance(v, str) or not _iso_time(v)
        else:
            wrong = False
        if not wrong and kind in ("f", "i") and not _in_range(v, kind):
            raise InvalidInput(
                f"Column {name!r} row {i} is {v!r}, out of the range the model takes "
                f"({'a finite number' if kind == 'f' else 'a 64-bit integer'}).",
                "Send the value as the model was trained on it.",
                code="out_of_range",
            )
        if wrong:
            want = {
                "f": "a number",
                "i": "an integer",
                "b": "true or false",
                "s": "a string",
                "d": "a date or time in ISO 8601, e.g. '2024-01-31' or '2024-01-31T09:30:00'",
            }
            raise InvalidInput(
                f"Column {name!r} row {i} is {v!r}; the model takes {want[kind]} there.",
                "Send values of the column's recorded type (GET /v2/models/NAME lists them).",
                code="wrong_dtype",
            )
