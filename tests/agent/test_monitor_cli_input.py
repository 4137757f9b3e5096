"""``jupyter handoff monitor import`` and ``monitor run`` (without a running central: in their
own process) with input monitoring cannot use, or a policy file it cannot run under: one
line and exit 2, as the API's 400 is.
A replay time out of range (NaN, a far year) never loops over windows that never end; a
``score`` that is no probability (a logit) never reaches the stores, where it made every
monitoring run of the model fail."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support import handoff_cli

from handoff_agent.store.metadata import MetadataStore


def _home(tmp_path):
    home = tmp_path / "central"
    home.mkdir()
    MetadataStore.for_home(home).close()  # central's home, as its first start leaves it
    return {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "no-central")}, str(home)


@pytest.mark.parametrize("reference", [True, False])
def test_a_score_that_is_no_probability_is_refused_at_import(tmp_path, reference):
    env, home = _home(tmp_path)
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 2, 300)  # a decision function's values, not P(positive)
    frame = pd.DataFrame({"x": logit / 2, "prediction": (logit > 0).astype(int), "score": logit})
    frame["time"] = 1_767_225_600 + np.arange(300) * 60.0
    frame.to_parquet(tmp_path / "f.parquet")
    args = ["monitor", "import", "churn", str(tmp_path / "f.parquet"), "--home", home]

    out = handoff_cli(env, *([*args, "--reference"] if reference else args))

    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "", out.stdout
    first = out.stderr.strip().splitlines()[0]
    row = int(np.flatnonzero((logit < 0) | (logit > 1))[0])
    assert first == (
        f"The column score holds {float(logit[row])!r} (row {row}), not a probability between "
        "0 and 1."
    ), out.stderr
    assert "predict_proba(X)[:, 1]" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "now, said",
    [
        ("nan", "--now 'nan' is not a time between 2000-01-01 and the agent's clock"),
        ("inf", "--now 'inf' is not a time between 2000-01-01 and the agent's clock"),
        ("1999-01-01", "--now '1999-01-01' is not a time between 2000-01-01 and the agent's"),
        ("yesterday", "--now 'yesterday' is neither epoch seconds nor an ISO time like"),
        # past the clock, however far: the clock's rule (it had said up to 7 days was a time)
        ("1e12", "now 1e+12 (epoch seconds) is later than the agent's clock ("),
        ("9999-12-31T00:00:00Z", "now 9999-12-31 00:00:00 UTC is later than the agent's clock ("),
    ],
)
def test_a_replay_time_out_of_range_is_one_line_offline(tmp_path, now, said):
    """A usage mistake: one line, exit 2 (it was exit 1 and named a week ahead as allowed)."""
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "no-central")}
    home = tmp_path / "central"
    home.mkdir()
    MetadataStore.for_home(home).close()  # central's home, as its first start leaves it
    log = pd.DataFrame({"x": np.arange(10.0), "prediction": [0, 1] * 5})
    log["time"] = 1_767_225_600 + np.arange(10) * 60.0
    log.to_parquet(tmp_path / "log.parquet")
    imported = handoff_cli(
        env, "monitor", "import", "churn", str(tmp_path / "log.parquet"), "--home", str(home)
    )
    assert imported.returncode == 0, imported.stderr

    out = handoff_cli(env, "monitor", "run", "churn", "--now", now, "--home", str(home))

    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith(said) and len(lines) <= 2, out.stderr
    assert "Traceback" not in out.stderr


def test_a_replay_time_past_the_clock_is_refused_offline_and_stores_no_window(tmp_path):
    env, home = _home(tmp_path)
    log = pd.DataFrame({"x": np.arange(10.0), "prediction": [0, 1] * 5})
    log["time"] = time.time() - 3600 + np.arange(10) * 60.0
    log.to_parquet(tmp_path / "log.parquet")
    args = ("--home", home)
    imported = handoff_cli(env, "monitor", "import", "churn", str(tmp_path / "log.parquet"), *args)
    assert imported.returncode == 0, imported.stderr
    ahead = str(time.time() + 86400)  # tomorrow: today's daily window has not closed

    out = handoff_cli(env, "monitor", "run", "churn", "--now", ahead, *args)

    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith("now ") and "is later than the agent's clock (" in first, first
    assert "Traceback" not in out.stderr
    store = MetadataStore.for_home(Path(home))
    try:
        assert store.windows_of("churn") == []
    finally:
        store.close()


def test_a_run_at_a_central_that_does_not_answer_is_one_line(tmp_path):
    env = {**os.environ, "HANDOFF_TOKEN": "t", "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    out = handoff_cli(env, "monitor", "run", "churn", "--url", "http://127.0.0.1:9")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == (
        "The agent at http://127.0.0.1:9 is not answering ([Errno 111] Connection refused)."
    )


def test_an_empty_reference_is_refused_and_the_one_in_use_stays(tmp_path):
    env, home = _home(tmp_path)
    pd.DataFrame({"x": [0.5, 1.0], "prediction": [0, 1]}).to_parquet(tmp_path / "ref.parquet")
    pd.DataFrame({"x": [], "prediction": []}).to_parquet(tmp_path / "empty.parquet")
    args = ["monitor", "import", "churn", "--reference", "--home", home]
    assert handoff_cli(env, *args[:3], str(tmp_path / "ref.parquet"), *args[3:]).returncode == 0
    out = handoff_cli(env, *args[:3], str(tmp_path / "empty.parquet"), *args[3:])
    assert out.returncode == 2 and out.stderr.startswith("The reference has no rows."), out.stderr
    store = MetadataStore.for_home(tmp_path / "central")
    try:
        assert store.reference_of("churn")["rows"] == 2
    finally:
        store.close()


def test_an_offline_run_judges_under_the_policy_central_runs_with(tmp_path):
    """Central started with ``--policy FILE``: an offline run given the same file judges by
    its thresholds (here min_samples), not by the defaults; a missing or broken file is one
    line, exit 2, as serve's start is; so is a log to import that is not there."""
    env, home = _home(tmp_path)
    log = pd.DataFrame({"x": np.arange(50.0), "prediction": [0, 1] * 25})
    log["time"] = 1_767_225_600 + np.arange(50) * 60.0
    log.to_parquet(tmp_path / "log.parquet")
    assert (
        handoff_cli(
            env, "monitor", "import", "churn", str(tmp_path / "log.parquet"), "--home", home
        ).returncode
        == 0
    )
    policy = tmp_path / "central-policy.toml"
    policy.write_text("[monitor]\nmin_samples = 20\n")
    run = ["monitor", "run", "churn", "--now", "2026-01-02T00:00:00Z", "--home", home]

    out = handoff_cli(env, *run, "--policy", str(policy), "--json")

    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)["windows"][0]
    assert first["status"] == "ok" and first["metrics"]["traffic"]["requests"] == 50, first
    misspelt = tmp_path / "misspelt.toml"
    misspelt.write_text("[monitor]\nmin_sample = 20\n")
    for path, said in (
        (tmp_path / "none.toml", f"--policy {tmp_path / 'none.toml'}: no such file."),
        (tmp_path / "log.parquet", f"{tmp_path / 'log.parquet'} is not valid TOML"),
        (misspelt, f"{misspelt}: [monitor]: unknown key 'min_sample'; the keys are "),
    ):
        out = handoff_cli(env, *run, "--policy", str(path))
        # the file's mistake, a usage mistake as serve says it: exit 2 (it was exit 1)
        assert out.returncode == 2 and out.stderr.startswith(said), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stdout == "", out.stderr
    out = handoff_cli(env, "monitor", "import", "churn", str(tmp_path / "nolog.parquet"))
    assert out.returncode == 2, out.stderr
    assert (
        out.stderr.strip()
        == f"No file {tmp_path / 'nolog.parquet'}. Give a Parquet prediction log."
    )


def test_a_log_without_inputs_or_rows_is_refused_and_monitoring_goes_on(tmp_path):
    """A log of times and predictions alone was imported, and then every run of the model's
    monitoring failed: it is refused, and the model's runs go on."""
    env, home = _home(tmp_path)
    times = 1_767_225_600 + np.arange(30) * 60.0
    bare = pd.DataFrame({"time": times, "prediction": [0, 1] * 15, "label": [0, 1] * 15})
    bare.to_parquet(tmp_path / "bare.parquet")
    bare.head(0).assign(x=[]).to_parquet(tmp_path / "empty.parquet")
    # A reference without inputs is allowed: its predictions alone still judge drift
    bare.drop(columns="time").to_parquet(tmp_path / "ref.parquet")
    imp = ["monitor", "import", "churn"]
    for name, said in (
        ("bare", "The prediction log has no input columns, only time, prediction, label."),
        ("empty", "The prediction log holds no rows."),
    ):
        out = handoff_cli(env, *imp, str(tmp_path / f"{name}.parquet"), "--home", home)
        assert out.returncode == 2 and out.stderr.splitlines()[0] == said, out.stderr
    ref = handoff_cli(env, *imp, str(tmp_path / "ref.parquet"), "--reference", "--home", home)
    assert ref.returncode == 0, ref.stderr
    bare.assign(x=np.arange(30.0)).to_parquet(tmp_path / "log.parquet")
    assert handoff_cli(env, *imp, str(tmp_path / "log.parquet"), "--home", home).returncode == 0

    out = handoff_cli(
        env, "monitor", "run", "churn", "--now", "2026-01-03T00:00:00Z", "--home", home
    )

    # and the run says what it judged in lines a person reads (--json: every metric)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "churn: judged 2 closed windows by 2026-01-03T00:00:00Z:",
        "  daily    2026-01-01  insufficient 30 requests, 0.00% errors; 30 predictions, fewer "
        "than min_samples = 200",
        "  daily    2026-01-02  insufficient 0 requests; 0 predictions, fewer than min_samples = "
        "200",
        "No alert changes.",
    ], out.stdout


def test_a_log_the_stores_cannot_hold_or_labels_that_score_wrong_are_refused(tmp_path):
    """A status or version that is text failed the import with Arrow's traceback; a request
    id given twice joined each label to another row's prediction, and "yes" labels for a
    0/1 model (the feedback route's 400) scored every prediction wrong: each is one line,
    exit 2, and nothing is imported. Labels a request of several rows sends as a list
    (an array in Parquet) import."""
    env, home = _home(tmp_path)
    rows = 40
    log = pd.DataFrame({"x": np.arange(rows, dtype=float), "prediction": [0, 1] * (rows // 2)})
    log["time"] = 1_767_225_600 + np.arange(rows) * 60.0
    log["label"] = [1, 0] * (rows // 2)
    cases = [
        ({"status": ["weird"] * rows}, "The column status holds 'weird' (row 0), not an HTTP"),
        ({"version": ["2"] + ["v2"] * (rows - 1)}, "The column version holds 'v2' (row 1)"),
        ({"latency_ms": [1.0, -5.0] * (rows // 2)}, "The column latency_ms holds -5.0 (row 1)"),
        (
            {"request_id": [f"r{i % 30}" for i in range(rows)]},
            "The column request_id holds 'r0' more than once (rows 0 and 30).",
        ),
        (
            {"label": ["no", "yes"] * (rows // 2)},
            "The label of row 0 is 'no', but the model predicts numbers (it predicted 0).",
        ),
        (
            {"label": [1.0, np.inf] * (rows // 2)},
            "The label of row 1 is inf: a label is a number, a text of at most 256",
        ),
    ]
    for i, (columns, said) in enumerate(cases):
        path = tmp_path / f"bad{i}.parquet"
        log.assign(**columns).to_parquet(path)
        out = handoff_cli(env, "monitor", "import", "churn", str(path), "--home", home)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.splitlines()[0].startswith(said), out.stderr
        assert len(out.stderr.strip().splitlines()) == 2 and "Traceback" not in out.stderr
    listed = log.assign(label=[[1, 0]] * rows)
    listed.to_parquet(tmp_path / "lists.parquet")
    lists = str(tmp_path / "lists.parquet")
    out = handoff_cli(env, "monitor", "import", "churn", lists, "--home", home, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["labels"] == rows
    store = MetadataStore.for_home(tmp_path / "central")
    try:
        assert sum(s["rows"] for s in store.segments_of("churn")) == rows  # the last one only
    finally:
        store.close()


def test_a_labelled_row_without_label_time_got_its_label_at_its_time(tmp_path):
    """README: label_time defaults to time. A file whose label_time is missing (NaT) on some
    labelled rows was refused; those labels now arrive at their row's time, the others at
    their label_time."""
    env, home = _home(tmp_path)
    rows = 6
    served = pd.Timestamp("2026-01-01T00:00:00Z") + pd.to_timedelta(np.arange(rows), unit="h")
    later = served + pd.Timedelta(days=2)
    log = pd.DataFrame(
        {
            "x": np.arange(rows, dtype=float),
            "prediction": [0, 1] * (rows // 2),
            "time": served,
            "request_id": [f"r{i}" for i in range(rows)],
            "label": [1, 0, None, 1, 0, 1],
            "label_time": [later[0], pd.NaT, pd.NaT, later[3], pd.NaT, later[5]],
        }
    )
    path = tmp_path / "labels.parquet"
    log.to_parquet(path)
    out = handoff_cli(env, "monitor", "import", "churn", str(path), "--home", home, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["labels"] == 5
    store = MetadataStore.for_home(tmp_path / "central")
    try:
        got = {f["request_id"]: f["time"] for f in store.labels_for("churn", list(log.request_id))}
    finally:
        store.close()
    arrived = {r: pd.Timestamp(t) for r, t in got.items()}
    assert arrived == {
        "r0": later[0],
        "r1": served[1],  # no label_time: at its time
        "r3": later[3],
        "r4": served[4],
        "r5": later[5],
    }


def test_import_says_what_it_imported_in_a_line_and_json_on_request(tmp_path):
    """``monitor import`` prints what it added for people (``--json``: the whole answer, as
    before): the predictions, the days they were served on, the labels and the features."""
    env, home = _home(tmp_path)
    served = pd.Timestamp("2026-01-01T22:00:00Z") + pd.to_timedelta(np.arange(6), unit="h")
    log = pd.DataFrame(
        {"x": np.arange(6.0), "prediction": [0, 1] * 3, "time": served, "label": [1, 0] * 3}
    )
    log.to_parquet(tmp_path / "log.parquet")
    args = ["monitor", "import", "churn", str(tmp_path / "log.parquet"), "--home", home]
    out = handoff_cli(env, *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "churn: imported 6 predictions served over 2 days (2026-01-01 to 2026-01-02), "
        "6 labels, 1 input feature."
    ]
    # imported again (its end not seen, say): each prediction counted once, and it says so
    out = handoff_cli(env, *args, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    body = json.loads(out.stdout)
    assert (body["rows"], body["already_logged"], body["days"]) == (6, 6, 2), body
    assert (body["first"][:19], body["last"][:19]) == ("2026-01-01T22:00:00", "2026-01-02T03:00:00")
    again = handoff_cli(env, *args).stdout.splitlines()
    assert len(again) == 1 and again[0].startswith("churn: imported 0 of 6 predictions "), again
    assert again[0].endswith("; 6 were logged already (counted once)."), again
    # a reference says what it set
    out = handoff_cli(env, *args[:4], "--reference", "--home", home)
    assert out.returncode == 0, out.stdout + out.stderr
    [line] = out.stdout.splitlines()
    assert line.startswith("churn: monitoring reference set from 6 rows (blob "), line
