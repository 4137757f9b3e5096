"""End to end: a Tfidf text pipeline fed a list of strings, and a model fitted on a numpy array,
pushed through the notebook API to a real agent that forwards to central. Every check gives a
real result, the verdicts come, and once delivered the local disk keeps only the versions (no
delivery envelope, no converted bundle)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from support import push_model, until, wait_checked
from test_pipeline_central import start_pair

WORDS = {1: ["great", "excellent", "lovely", "superb"], 0: ["awful", "terrible", "dull", "poor"]}
FILLER = ["the", "film", "was", "really", "quite", "plot", "acting", "and"]
# The groups are random, so any gap between them is chance: judge fairness, but loosely.
LOOSE = {"fairness.max_dp_diff": 0.5, "fairness.max_eo_diff": 0.5}


def reviews(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    texts = [
        " ".join([*rng.choice(FILLER, rng.integers(3, 9)).tolist(), str(rng.choice(WORDS[t]))])
        for t in y
    ]
    return texts, y


def assert_real_results(version: dict) -> None:
    assert version["status"] in ("passed", "warned"), version["verdict"]
    statuses = {c["name"]: c["status"] for c in version["checks"]}
    expected = {"loads", "smoke", "schema", "performance", "latency"}
    expected |= {"fairness", "explainability", "drift"}
    assert expected <= set(statuses), statuses
    for c in version["checks"]:
        assert c["status"] in ("pass", "warn"), (c["name"], c.get("message"))
        assert "Traceback" not in (c.get("message") or "")


def test_text_and_numpy_models_get_verdicts(tmp_path):
    local, central = start_pair(tmp_path, revalidate=False)
    try:
        # A text pipeline: X is a plain list of strings, the sensitive groups a Series.
        texts, y = reviews(400, 0)
        text_model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, y)
        X_test, y_test = reviews(200, 1)
        reference, _ = reviews(200, 2)
        group = pd.Series(np.where(np.arange(200) % 2, "a", "b"), name="group")
        v = push_model(
            local,
            text_model,
            "reviews",
            X=X_test,
            y=y_test,
            sensitive=group,
            reference=reference,
            gate=LOOSE,
        )
        text_version = wait_checked(local, "reviews", v.number)
        assert text_version["manifest"]["signature"]["input"] == "text"
        assert_real_results(text_version)

        # A model fitted on a 2-D numpy array: no column names anywhere.
        X, yy = make_classification(600, n_features=5, random_state=0)
        array_model = LogisticRegression().fit(X[:300], yy[:300])
        v = push_model(
            local,
            array_model,
            "arrays",
            X=X[300:500],
            y=yy[300:500],
            sensitive=np.where(np.arange(200) % 2, "a", "b"),
            reference=X[:300],
            gate=LOOSE,
        )
        array_version = wait_checked(local, "arrays", v.number)
        assert array_version["manifest"]["signature"]["input"] == "array"
        assert_real_results(array_version)

        # Both were forwarded (pickles converted to skops for central). Once delivered, the
        # local disk keeps neither the envelopes nor the converted bundles, only the versions
        def delivered():
            rows = local.request("GET", "/api/v1/outbox")[1]["outbox"]
            return {r["state"]: r["n"] for r in rows} == {"delivered": 2}

        until(delivered, timeout=120, what="two deliveries")
        out = local.cli("fsck").stdout
        blobs, referenced = re.match(r"(\d+) blobs, (\d+) references checked", out).groups()
        assert blobs == referenced and "fsck: OK" in out, out  # every blob is a version's
        assert "note:" not in out, out  # no envelope, converted bundle or unreferenced blob
        for name in ("reviews", "arrays"):  # and central has each, as skops
            (remote,) = central.request("GET", f"/api/v1/models/{name}/versions")[1]["versions"]
            assert (
                remote["digest"]
                != local.request("GET", f"/api/v1/models/{name}/versions/1")[1]["digest"]
            )
    finally:
        local.stop()
        central.stop()
