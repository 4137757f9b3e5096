"""Central loads only the exact types on its trust list, and never unpickles.

The default list admits the common families; a crafted skops file never runs; a pickle sent
straight to central's /versions is refused.
"""

from __future__ import annotations

import http.client
import io
import json
import pickle
import urllib.parse
import zipfile
from http.server import HTTPServer

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import trust_families
from agent_support import assert_error
from skops.io._general import NODE_TYPE_MAPPING
from support import (
    Receiver,
    RunningAgent,
    bundle_bytes,
    forwarding_args,
    push_model,
    start_receiver,
    until,
)
from test_pipeline_central import FIRST_SECRET
from test_pipeline_delivery import deliver, envelope

from handoff_agent import trust

POLICY = f"""
[intake]
secrets = ["{FIRST_SECRET}"]
revalidate = true
"""


def exec_payload(code: str, runner: str = "builtins.exec") -> bytes:
    """A skops file whose root is ``runner(code, {})``: it runs ``code`` if loaded."""
    module, _, name = runner.rpartition(".")
    namespace = {
        **{"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode"},
        "content": {},
        "key_types": {
            **{"__class__": "list", "__module__": "builtins", "__loader__": "ListNode"},
            **{"content": [], "__id__": 4},
        },
        "__id__": 3,
    }
    schema = {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(code),
                    "is_json": True,
                    "__id__": 2,
                },
                namespace,
            ],
            "__id__": 1,
        },
        "__id__": 0,
        "protocol": 2,
        "_skops_version": "0.16.0",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
    return buf.getvalue()


def start_central(tmp_path, *args, policy=POLICY) -> RunningAgent:
    path = tmp_path / "policy.toml"
    path.write_text(policy)
    central = RunningAgent(
        tmp_path / "central", tmp_path / "rt-central", ["--role", "central", "--policy", str(path)]
    )
    central.args += list(args)
    central.start()
    return central


# -- the list itself -------------------------------------------------------------------------


def test_default_list_is_exact_names_and_holds_no_gadget():
    assert trust.DEFAULT_TRUSTED
    for name in trust.DEFAULT_TRUSTED:
        assert trust.NAME.fullmatch(name), name  # no wildcard, no prefix
        assert trust.denied(name) is None, name


@pytest.mark.parametrize(
    "name",
    [
        "builtins.exec",
        "builtins.eval",
        "builtins.compile",
        "builtins.getattr",
        "builtins.__import__",
        "builtins.open",
        "posix.system",
        "os.system",
        "subprocess.Popen",
        "sys.modules",
        "importlib.import_module",
        "pickle.loads",
        "marshal.loads",
        "types.CodeType",
        # runners and readers found in the libraries models are built with
        "numpy.testing._private.utils.runstring",
        "numpy.lib._npyio_impl.load",
        "pandas.io.pickle.read_pickle",
        "pandas.read_pickle",
        "pandas.eval",
        "timeit.timeit",
        "cProfile.run",
        "pydoc.pipepager",
        "doctest.run_docstring_examples",
        "shelve.open",
        "sqlite3.connect",
        "pkgutil.resolve_name",
        "numexpr.evaluate",
        "sklearn.datasets.fetch_openml",
        "mylib.helpers.run_script",
    ],
)
def test_a_gadget_is_never_addable(name):
    with pytest.raises(Exception) as info:
        trust.check_addable([name])
    assert info.value.code == "type_never_trusted"
    assert "never trusted" in info.value.message
    assert trust.untrusted([name], [name]) == [name]  # not even when the table says so


@pytest.mark.parametrize("family", sorted(trust_families.FAMILIES))
def test_default_list_admits_the_family(family):
    for model in trust_families.FAMILIES[family]():
        data = sio.dumps(model)
        # Given only the default list, nothing in the file is untrusted, and it loads.
        assert trust.untrusted(trust.needed_types(data)) == [], type(model).__name__
        # The quick schema read at intake sees at least what skops would load.
        assert trust.needed_types(data) <= trust.schema_types(data)
        assert type(trust.load_skops(data, ())) is type(model)


def test_a_crafted_exec_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    data = exec_payload(f"open({str(marker)!r}, 'w').write('ran')")
    # The schema names builtins.exec; the default list does not trust it, nor does asking.
    assert "builtins.exec" in trust.needed_types(data) & trust.schema_types(data)
    with pytest.raises(trust.UntrustedTypes) as info:
        trust.load_skops(data, ["builtins.exec"])
    assert "Never trusted, since they can run code: builtins.exec" in str(info.value)
    assert not marker.exists()
    # The payload is real: trusting what the file asks for (the old behaviour) runs it, with
    # a skops that has the loader it names (0.12 and later; older ones cannot load it at all).
    if any(key[0] == "ConstructorFromReduceNode" for key in NODE_TYPE_MAPPING):
        sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        assert marker.read_text() == "ran"


def test_a_runner_hidden_in_numpy_is_refused_even_when_the_table_trusts_it(tmp_path):
    marker = tmp_path / "pwned"
    runner = "numpy.testing._private.utils.runstring"  # exec under another name
    data = exec_payload(f"open({str(marker)!r}, 'w').write('ran')", runner)
    with pytest.raises(trust.UntrustedTypes) as info:
        trust.load_skops(data, [runner])
    assert f"Never trusted, since they can run code: {runner}" in str(info.value)
    assert not marker.exists()
    if any(key[0] == "ConstructorFromReduceNode" for key in NODE_TYPE_MAPPING):
        sio.loads(data, trusted=[runner])  # the payload is real
        assert marker.read_text() == "ran"


# -- central ---------------------------------------------------------------------------------


class TrustHook(Receiver):
    """The security team's channel."""

    received: list = []
    secret = "trust-webhook-secret-7Hq2Lm9Xc4Vb8N"


def start_hooked_central(
    tmp_path, receiver, *args, policy=POLICY
) -> tuple[RunningAgent, HTTPServer]:
    """A central whose webhook destination (the security team's channel) is ``receiver``, a
    real HTTP server answering on a thread; the caller shuts both down."""
    hook, url = start_receiver(receiver, "/security")
    central = start_central(
        tmp_path,
        "--forward-to",
        "webhook",
        f"--WebhookDestination.url={url}",
        f"--WebhookDestination.secret={receiver.secret}",
        f"--WebhookDestination.allowed_urls={json.dumps([url])}",
        *args,
        policy=policy,
    )
    return central, hook


def test_exec_through_skops_waits_in_needs_trust_and_is_never_trusted(tmp_path):
    central, hook = start_hooked_central(tmp_path, TrustHook)
    marker = tmp_path / "pwned"
    try:
        payload = exec_payload(f"open({str(marker)!r}, 'w').write('ran')")
        # When a signed delivery carries it
        status, out = deliver(central, envelope("evil", payload))
        # Then it is recorded, but waits for trust; nothing loads it
        assert status == 201, out
        assert (out["stage"], out["needs_trust"]) == ("needs_trust", ["builtins.exec"])
        version = central.request("GET", "/api/v1/models/evil/versions/1")[1]
        assert version["stage"] == "needs_trust"
        assert version["needs_trust"] == ["builtins.exec"]
        assert version["checks"] == []
        assert version["stages"][-1]["comment"] == ("waiting for an admin to trust: builtins.exec")
        # The webhook (the security team's channel) is told what the version names
        until(lambda: TrustHook.received, timeout=30, what="the trust notice")
        [got] = TrustHook.received
        assert json.loads(got["raw"]) == {
            "type": "trust",
            "model": "evil",
            "version": 1,
            "needs_trust": ["builtins.exec"],
            "url": f"{central.url}/api/v1/models/evil/versions/1",
        }
        # And an admin cannot trust it, by the CLI or over HTTP
        cli = central.cli("trust", "add", "builtins.exec")
        assert cli.returncode == 1
        assert "Refused to trust builtins.exec" in cli.stderr
        status, body = central.request("POST", "/api/v1/trust", {"types": ["builtins.exec"]})
        assert_error(status, body, 400, "type_never_trusted")
        listing = central.request("GET", "/api/v1/trust")[1]
        assert listing["added"] == [] and "builtins.exec" not in listing["default"]
        assert central.request("GET", "/api/v1/models/evil/versions/1")[1]["stage"] == (
            "needs_trust"
        )
        assert not marker.exists()
    finally:
        central.stop()
        hook.shutdown()


def test_a_pickle_pushed_to_central_is_refused_and_creates_nothing(tmp_path):
    central = start_central(tmp_path)
    marker = tmp_path / "pwned"
    try:
        ann = central.make_token("ann", "analyst")

        class Marker:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        data = bundle_bytes("evil", pickle.dumps(Marker()))
        status, body = central.push_bytes("evil", data, Authorization=f"token {ann}")
        err = assert_error(status, body, 403, "intake_only")
        assert "only through signed intake" in err["message"]
        assert "local agent" in err["hint"]
        status, body = central.request("GET", "/api/v1/models")
        assert body["models"] == []
        # Nor does signed intake take a pickle
        status, body = deliver(central, envelope("evil", pickle.dumps(Marker()), "pickle"))
        assert_error(status, body, 415, "pickle_refused")
        assert central.request("GET", "/api/v1/models")[1]["models"] == []
        assert not marker.exists()
    finally:
        central.stop()


def test_a_policy_that_accepts_pickles_stops_central_at_start(tmp_path):
    with pytest.raises(RuntimeError) as info:
        start_central(tmp_path, policy=POLICY + "accept_pickle = true\n")
    assert "accept_pickle is no longer supported" in str(info.value)


# -- end to end: the default list admits the common families -----------------------------------

FAMILIES_E2E = {
    "linear_pipeline": lambda: trust_families.linear_pipeline(),
    "random_forest": lambda: _fit("sklearn.ensemble", "RandomForestClassifier", n_estimators=5),
    "hist_gradient_boosting": lambda: _fit(
        "sklearn.ensemble", "HistGradientBoostingClassifier", max_iter=5
    ),
    "xgboost": lambda: _fit("xgboost", "XGBClassifier", n_estimators=5, max_depth=2),
    "lightgbm": lambda: _fit("lightgbm", "LGBMClassifier", n_estimators=5, verbose=-1),
    "text_pipeline": lambda: (trust_families.text_pipelines()[0], *trust_families.texts()),
    "numpy_array": lambda: _fit_array(),
    "xgboost_regressor": lambda: _fit_regressor("xgboost", "XGBRegressor", n_estimators=5),
    "multiclass_forest": lambda: _fit(
        "sklearn.ensemble", "RandomForestClassifier", n_estimators=5, classes=3
    ),
}


def _fit_regressor(module: str, cls: str, **kwargs):
    import importlib

    X, _ = trust_families.numeric()
    y = X["a"] * 2.0 + X["b"]
    return getattr(importlib.import_module(module), cls)(**kwargs).fit(X, y), X, y


def _fit_array():
    """A model fitted on a bare numpy array (no column names), pushed as one."""
    from sklearn.linear_model import LogisticRegression

    X, y = trust_families.numeric()
    return LogisticRegression().fit(X.to_numpy(), y), X.to_numpy(), y.to_numpy()


def _fit(module: str, cls: str, classes: int = 2, **kwargs):
    import importlib

    X, y = trust_families.numeric(classes=classes)
    return getattr(importlib.import_module(module), cls)(**kwargs).fit(X, y), X, y


def start_local(tmp, central, *args: str) -> RunningAgent:
    """A local agent that hands every version to ``central``."""
    local = RunningAgent(
        tmp / "local",
        tmp / "rt-local",
        [*args, *forwarding_args(central, FIRST_SECRET, owner=None)],
    )
    local.start()
    return local


@pytest.fixture(scope="module")
def pair(tmp_path_factory, backend):
    tmp = tmp_path_factory.mktemp("trust-pair")
    checks = "--HandoffAgent.checks=['loads', 'smoke']"
    central = start_central(tmp, checks)
    local = start_local(tmp, central, checks)
    yield local, central
    local.stop()
    central.stop()


def stage_of(agent, name, number=1):
    return agent.request("GET", f"/api/v1/models/{name}/versions/{number}")[1].get("stage")


@pytest.mark.parametrize("family", sorted(FAMILIES_E2E))
def test_the_family_is_validated_at_central_with_the_default_list(pair, family):
    local, central = pair
    model, X, y = FAMILIES_E2E[family]()
    name = family.replace("_", "-")
    # Given a pickle push at the local agent: checks, conversion to skops, hand-off
    push_model(local, model, name, X=X, y=y)
    # Then central loads it with its default list only, and validates it
    until(lambda: stage_of(local, name) in ("validated", "rejected", "needs_trust"), 180)
    remote = central.request("GET", f"/api/v1/models/{name}/versions/1")[1]
    assert remote["stage"] == "validated", remote["stages"]
    # in JSON a browser parses: no bare NaN (xgboost's missing=nan is a parameter)
    for agent in (local, central):
        conn = http.client.HTTPConnection(agent.host, agent.port, timeout=60)
        auth = {"Authorization": f"token {agent.token}"}
        conn.request("GET", f"/api/v1/models/{name}/versions/1", headers=auth)
        body = conn.getresponse().read()
        conn.close()
        json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in {name}'s detail"))
    assert remote["serialization"] == "skops"
    assert {c["name"]: c["status"] for c in remote["checks"]} == {
        "loads": "pass",
        "smoke": "pass",
    }
    # And central's model server answers for it (its test slot) as the notebook's model does
    if isinstance(X, np.ndarray):  # the signature names an array's columns
        names = [c["name"] for c in remote["manifest"]["signature"]["columns"]]
        rows = pd.DataFrame(X[:20], columns=names)
        expected = model.predict(X[:20]).tolist()
    else:
        rows = X.dropna().head(20)
        expected = model.predict(rows).tolist()
    status, body = until(lambda: _served(central, name, rows), 120, f"{name}:1 serving")
    assert status == 200, body
    if family == "text_pipeline":  # texts as `%mlops predict NAME texts` sends them
        from jupyter_handoff.serving_calls import _body

        texts = rows.head(5).tolist()
        status, out = local.request(
            "POST", f"/api/v1/models/{name}/predict", {**_body(texts), "version": 1}
        )
        assert (status, out.get("predictions")) == (200, expected[:5]), out
        # the probabilities' columns are named: the notebook labels them by class
        assert out["classes"] == model.classes_.tolist(), out
    served = next(o["data"] for o in body["outputs"] if o["name"] == "predict")
    # And its V2 metadata names the outputs it answered with, and a classifier's classes
    meta = _metadata(central, name)
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        (o["name"], o["datatype"]) for o in body["outputs"]
    ], (meta, body)
    classes = getattr(model, "classes_", None)
    assert meta.get("parameters", {}).get("classes") == (
        None if classes is None else np.asarray(classes).tolist()
    ), meta
    if isinstance(expected[0], float):  # a regressor: ONNX computes in float32
        np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
        return
    assert len(served) == len(expected), body
    assert sum(a == b for a, b in zip(served, expected, strict=True)) >= 19, (served, expected)


def _metadata(central, name: str) -> dict:
    status, body = _v2(central, "GET", f"/v2/models/{name}/versions/1")
    assert status == 200, body
    return body


def _v2(central, method: str, path: str, body=None) -> tuple[int, dict]:
    """(status, JSON answer) of central's model server."""
    url = urllib.parse.urlsplit(json.loads(central.runtime_file.read_text())["serving_url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": f"token {central.token}", "Content-Type": "application/json"}
    try:
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _served(central, name: str, rows) -> tuple[int, dict] | None:
    """Central's model server's V2 answer for version 1 of ``name`` (a column a tensor),
    or None while the version is not loaded yet."""
    frame = rows.to_frame() if hasattr(rows, "to_frame") else rows
    kinds = {"f": "FP64", "i": "INT64", "u": "INT64", "b": "BOOL"}
    inputs = [
        {
            "name": str(c),
            "shape": [len(frame)],
            "datatype": kinds.get(frame[c].dtype.kind, "BYTES"),
            "data": frame[c].tolist(),
        }
        for c in frame.columns
    ]
    answer = _v2(central, "POST", f"/v2/models/{name}/versions/1/infer", {"inputs": inputs})
    return None if answer[0] in (404, 503) else answer
