"""Handoff benchmark: the check suite on a RandomForest, against its raw calls and mlflow.evaluate.

A benchmark, not a test. In one run on this machine it measures (issue #3, "Benchmark"):

  1. push -> first provisional verdict: time from ``jupyter_handoff.push`` until the agent
     publishes the provisional verdict (once loads, smoke and performance are in; followed on
     the agent's event stream);
  2. push -> full report: until the agent publishes the rendered report; with ``--sequential``
     also for an agent that runs the same suite one check after another in one worker
     (``--HandoffAgent.workers=1``), in the same run: the baseline of the parallel checks;
  3. the sum of the raw library calls the suite makes, timed alone in this process (model load,
     predict, bootstrap metrics, latency loops, fairlearn, permutation importance, partial
     dependence, drift statistics, plots), beside the worker's own per-check durations;
  4. ``mlflow.evaluate`` (default evaluator) on the same model and data, in its own process;
  5. permutation importance: the check's stacked, time-budgeted ranking against sklearn's
     unbudgeted one on all evaluation rows (Spearman, top-k agreement), and their times.

It ends with one line per target of issue 13 (MET or MISSED, with the ratio) and writes the
ratios under stable keys (``ratios``) in bench/results/checks.json.

Both for a first version (nothing to compare with) and for a second, different model of the
same name, which the agent compares with the first (the champion).

    python bench/checks.py                # everything (about 3-4 minutes, 2 cores)
    python bench/checks.py --sequential   # also the one-worker baseline (twice the agents)
    python bench/checks.py --quick        # smaller forest and data, 1 rep, no MLflow
    python bench/checks.py --skip-mlflow  # Handoff and its raw calls only

Model: RandomForestClassifier(n_estimators=200, random_state=0) as in bench/push.py, fitted
on the first 20,000 rows of make_classification(n_samples=25,000, n_features=30,
random_state=0) plus a binary ``gender`` column (seeded RNG); the last 5,000 rows are the
evaluation set and ``gender`` is the sensitive column; 5,000 training rows are the reference.

Each measurement starts a fresh agent (``--HandoffAgent.forward_to=[]``: nothing is forwarded)
and waits until its warm spare worker has finished importing before the first push. Every
process it starts is stopped in a finally block, and all files live in one temporary
directory that is removed at the end. Writes bench/results/checks.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import MLFLOW_ENV, Agent, fmt_s, median, wait_workers_idle  # noqa: E402
from push import Report  # noqa: E402

from handoff_agent.checks.explainability import ExplainabilityCheck  # noqa: E402
from handoff_agent.vocabulary import PROVISIONAL_CHECKS, PROVISIONAL_FIELD  # noqa: E402

MLFLOW_EVAL = HERE / "_mlflow_eval.py"
FIRST = PROVISIONAL_CHECKS  # the checks behind the provisional verdict
SUITE = ("loads", "smoke", "schema", "performance", "latency", "fairness")
SUITE += ("explainability", "drift")
EXPLAIN = ExplainabilityCheck.defaults  # the check's budget, mirrored by the raw calls
# Issue 13's targets: the first provisional verdict within 1 s, the full report in half the
# time of the same suite run sequentially, and at most 1.1x the raw library calls.
TARGET_PROVISIONAL, TARGET_PARALLEL, TARGET_OVERHEAD = 1.0, 0.5, 1.1
WORKERS = os.cpu_count() or 1  # the agent's default check workers, one per CPU

FULL = {"train": 20_000, "eval": 5_000, "ref": 5_000, "trees": 200, "agents": 3, "raw_reps": 3}
QUICK = {"train": 4_000, "eval": 1_000, "ref": 1_000, "trees": 50, "agents": 1, "raw_reps": 1}


# -- data and model ---------------------------------------------------------------------------


def make_data(cfg: dict) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    n = cfg["train"] + cfg["eval"]
    X, y = make_classification(n_samples=n, n_features=30, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(30)])
    frame["gender"] = np.random.default_rng(0).integers(0, 2, n)
    y = pd.Series(y, name="label")
    train, ev = slice(0, cfg["train"]), slice(cfg["train"], n)
    X_tr, y_tr = frame.iloc[train], y.iloc[train]
    t = time.perf_counter()
    # n_jobs=-1 only to fit faster; the pickled estimator says n_jobs=None, as in push.py.
    model = RandomForestClassifier(n_estimators=cfg["trees"], random_state=0, n_jobs=-1)
    model.fit(X_tr, y_tr)
    model.set_params(n_jobs=None)
    return {
        "model": model,
        "fit_s": time.perf_counter() - t,
        "X": frame.iloc[ev].reset_index(drop=True),
        "y": y.iloc[ev].reset_index(drop=True),
        "ref": X_tr.sample(cfg["ref"], random_state=1).reset_index(drop=True),
    }


# -- the agent's event stream -----------------------------------------------------------------


class EventLog:
    """Follows GET /api/v1/events?model=NAME in a thread; stamps each event on arrival."""

    def __init__(self, agent: Agent, model: str):
        self.events: list[tuple[float, str, dict]] = []
        self.cond = threading.Condition()
        self.conn = agent.connection(timeout=600)
        query = urllib.parse.urlencode({"model": model})
        headers = {"Authorization": f"token {agent.token}", "Accept": "text/event-stream"}
        self.conn.request("GET", f"/api/v1/events?{query}", headers=headers)
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise RuntimeError(f"event stream answered {self.resp.status}")
        first = self.resp.readline()  # ": connected": subscribed before we push
        if not first.startswith(b":"):
            raise RuntimeError(f"unexpected event stream start {first!r}")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        kind, data = "message", []
        with contextlib.suppress(Exception):
            for raw in iter(self.resp.readline, b""):
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    event = json.loads("\n".join(data))
                    with self.cond:
                        self.events.append((time.perf_counter(), kind, event))
                        self.cond.notify_all()
                    kind, data = "message", []

    def wait(self, pred, timeout: float) -> tuple[float, dict]:
        """The first event matching ``pred(kind, data)``: (arrival time, data)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, kind, data in self.events:
                    if pred(kind, data):
                        return t, data
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    raise TimeoutError("the expected event did not arrive")
                self.cond.wait(min(left, 1.0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        self.conn.close()
        self.thread.join(5)


def wait_spare_ready(agent: Agent, least: float = 3.0, most: float = 30.0) -> float:
    """Wait until the agent has been up ``least`` s and its spare workers (one per worker slot)
    have stopped using CPU (their imports are done and they are blocked reading their job).
    Returns the agent's uptime."""
    started = time.perf_counter() - (agent.startup_seconds or 0)
    wait_workers_idle(agent, most=max(0.0, started + most - time.perf_counter()), present=True)
    time.sleep(max(0.0, min(started + least, started + most) - time.perf_counter()))
    return time.perf_counter() - started


# -- 1 and 2: push to verdict and report -------------------------------------------------------


def timed_push(agent: Agent, push, model, data: dict, name: str) -> dict:
    """One push, followed on the event stream until its report exists."""
    events = EventLog(agent, name)
    try:
        t0 = time.perf_counter()
        v = push(
            model, name=name, X=data["X"], y=data["y"], sensitive=["gender"], reference=data["ref"]
        )
        t_push = time.perf_counter() - t0
        n = v.number

        def check_done(check):
            return lambda k, d: (
                k == "check"
                and d.get("version") == n
                and d.get("check") == check
                and d.get("status") not in ("running", "queued")
            )

        done = {c: events.wait(check_done(c), 600)[0] - t0 for c in FIRST}
        # The provisional verdict; the final one when it came first (no check was left).
        t_prov, _ = events.wait(
            lambda k, d: k in (PROVISIONAL_FIELD, "verdict") and d.get("version") == n, 600
        )
        t_loads_start = (
            events.wait(
                lambda k, d: k == "check" and d.get("version") == n and d.get("check") == "loads",
                600,
            )[0]
            - t0
        )
        t_verdict, verdict = events.wait(lambda k, d: k == "verdict" and d["version"] == n, 600)
        t_report, _ = events.wait(lambda k, d: k == "report" and d["version"] == n, 600)
    finally:
        events.close()
    version = agent.get_json(f"/api/v1/models/{name}/versions/{n}")
    checks = {c["name"]: c for c in version["checks"]}
    perf = (checks.get("performance", {}).get("result") or {}).get("metrics") or {}
    loads = (checks.get("loads", {}).get("result") or {}).get("metrics") or {}
    return {
        "version": n,
        "push_s": t_push,
        "loads_started_s": t_loads_start,
        "first_done": done,
        "first_verdict_s": max(done.values()),
        "provisional_s": t_prov - t0,
        "verdict_s": t_verdict - t0,
        "report_s": t_report - t0,
        "verdict": verdict.get("verdict"),
        "reports": version.get("reports"),
        "champion_compared": "champion_roc_auc" in perf,
        "worker_load_s": loads.get("load_seconds"),
        "durations": {c: checks[c]["duration"] for c in checks},
        "statuses": {c: checks[c]["status"] for c in checks},
    }


def bench_agent(
    rep: Report, cfg: dict, data: dict, tmp: Path, runtime_dir: Path, sequential: bool = False
) -> dict:
    mode = "sequential" if sequential else "parallel"
    rep.section(
        f"1-2. Push -> provisional verdict and -> full report, checks {mode}"
        + (" (one worker: the baseline)" if sequential else "")
    )
    import jupyter_handoff

    with contextlib.suppress(Exception):
        from jupyter_handoff.config import settings

        settings().auto_start = False  # never start a detached agent we would not stop

    model = data["model"]
    runs: list[dict] = []
    for i in range(cfg["agents"]):
        args = ["--HandoffAgent.forward_to=[]"]
        if sequential:
            args.append("--HandoffAgent.workers=1")
        agent = Agent(
            tmp / f"home-{mode}-{i}", runtime_dir, tmp / "agent.log", extra_args=tuple(args)
        )
        try:
            agent.start()
            uptime = wait_spare_ready(agent)
            model._bench_push = (i, 1)
            first = timed_push(agent, jupyter_handoff.push, model, data, "bench-checks")
            # The next spare worker was started when the first push took the warm one; give
            # it the same chance to finish importing.
            wait_spare_ready(agent, least=0)
            model._bench_push = (i, 2)  # new bytes: a different model, compared with v1
            second = timed_push(agent, jupyter_handoff.push, model, data, "bench-checks")
        finally:
            agent.stop()
        runs.append({"agent_uptime_s": uptime, "first": first, "second": second})
        print(
            f"   agent {i} ({mode}): up {uptime:.1f} s before push; v1 provisional "
            f"{fmt_s(first['provisional_s'])}, report {fmt_s(first['report_s'])} "
            f"({first['verdict']}); v2 {fmt_s(second['provisional_s'])}, "
            f"{fmt_s(second['report_s'])} ({second['verdict']})",
            flush=True,
        )
    rep.data[f"agent_runs_{mode}"] = runs
    reps = len(runs)
    up = median([r["agent_uptime_s"] for r in runs])
    rep.row("agent uptime before the first push", f"{up:.1f} s", "warm spare worker ready")
    summary = {}
    for key, label in (("first", "v1, no champion"), ("second", "v2, champion compare")):
        got = [r[key] for r in runs]
        s = {
            k: median([g[k] for g in got])
            for k in (
                "push_s",
                "loads_started_s",
                "first_verdict_s",
                "provisional_s",
                "verdict_s",
                "report_s",
            )
        }
        s["champion_compared"] = all(g["champion_compared"] for g in got)
        s["verdicts"] = sorted({g["verdict"] for g in got})
        s["durations"] = {c: median([g["durations"][c] for g in got]) for c in got[0]["durations"]}
        s["worker_load_s"] = median([g["worker_load_s"] or 0 for g in got])
        summary[key] = s
        pv, full = s["provisional_s"], s["report_s"]
        rep.row(f"{label}: push() returns", fmt_s(s["push_s"]), f"median of {reps}")
        rep.row(
            f"{label}: loads check starts",
            fmt_s(s["loads_started_s"]),
            "bundle verified, model(s) and data loaded",
        )
        rep.row(f"{label}: loads, smoke, performance in", fmt_s(s["first_verdict_s"]), "")
        note = ""
        if not sequential:
            ok = pv <= TARGET_PROVISIONAL
            note = rep.target(f"provisional_{key}", f"<= {TARGET_PROVISIONAL:.0f} s", pv, ok)
        rep.row(f"{label}: provisional verdict", fmt_s(pv), note)
        rep.row(f"{label}: verdict (all checks)", fmt_s(s["verdict_s"]), "")
        rep.row(
            f"{label}: verdict -> report",
            fmt_s(s["report_s"] - s["verdict_s"]),
            "rendering the report",
        )
        rep.row(f"{label}: full report", fmt_s(full), "")
        rep.row(
            f"{label}: verdict",
            "/".join(s["verdicts"]),
            "champion compared" if s["champion_compared"] else "no champion",
        )
    rep.data["agent" if not sequential else "agent_sequential"] = summary
    if sequential:
        return summary
    rep.note(
        "Times run from just before jupyter_handoff.push() (which serializes the model and the "
        "data, writes parquet and uploads) to the arrival of the agent's SSE event. Each of the "
        f"{reps} agent(s) is fresh (own home, forward_to=[]) and has been up until its warm spare "
        "worker stopped using CPU (>= 3 s); before v2 the next spare is also let finish."
    )
    return summary


# -- 3. the raw calls, alone in this process ---------------------------------------------------


class Calls:
    def __init__(self):
        self.rows: list[tuple[str, str, float]] = []

    def __call__(self, check: str, label: str, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.rows.append((check, label, time.perf_counter() - t))
        return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _bootstrap_weights(n: int, reps: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(reps, n)) + (np.arange(reps) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=reps * n).reshape(reps, n) * 1.0


def _bootstrap_metrics(W, y, pred, proba):
    """Accuracy, F1, log loss and ROC AUC for every replicate (row of W), with numpy."""
    import numpy as np

    total = W.sum(axis=1)
    out = {"accuracy": (W @ (y == pred)) / total}
    tp, fp = W @ ((pred == 1) & (y == 1)), W @ ((pred == 1) & (y != 1))
    fn = W @ ((pred != 1) & (y == 1))
    out["f1"] = 2 * tp / (2 * tp + fp + fn)
    p_true = np.clip(proba[np.arange(len(y)), y], np.finfo(float).eps, 1.0)
    out["log_loss"] = (W @ -np.log(p_true)) / total
    order = np.argsort(proba[:, 1], kind="mergesort")
    s, pos = proba[order, 1], (y[order] == 1).astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Wo = W[:, order]
    p = np.add.reduceat(Wo * pos, starts, axis=1)
    q = np.add.reduceat(Wo, starts, axis=1) - p
    below = np.cumsum(q, axis=1) - q
    out["roc_auc"] = (p * (below + 0.5 * q)).sum(axis=1) / (p.sum(axis=1) * q.sum(axis=1))
    return {k: np.percentile(v, [2.5, 97.5]) for k, v in out.items()}


def _sha256_all(blobs: dict) -> list[str]:
    return [hashlib.sha256(b).hexdigest() for b in blobs.values()]


def _verify_load(data: bytes):
    hashlib.sha256(data).hexdigest()
    return pickle.loads(data)


def _point_metrics(y, pred, proba):
    from sklearn import metrics as m

    return (
        m.accuracy_score(y, pred),
        m.f1_score(y, pred, pos_label=1),
        m.log_loss(y, proba, labels=[0, 1]),
        m.roc_auc_score(y == 1, proba[:, 1]),
    )


def raw_suite(data: dict, blobs: dict, champion: bool) -> list[tuple[str, str, float]]:
    """The library calls the built-in checks make with their defaults, timed one by one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from scipy.stats import ks_2samp
    from sklearn.inspection import partial_dependence
    from sklearn.metrics import accuracy_score, roc_curve

    from handoff_agent.checks._dependence import handled as stacked_handled
    from handoff_agent.checks._dependence import partial_dependence as stacked_dependence
    from handoff_agent.checks._permutation import permutation_importance as stacked_importance

    c = Calls()
    # worker: verify the bundle, unpickle, read the data members
    c("load", "sha256 (model + 4 parquet)", _sha256_all, blobs)
    model = c("load", "pickle.loads(model)", pickle.loads, blobs["model"])
    frames = c(
        "load",
        "pd.read_parquet x4",
        lambda: {k: pd.read_parquet(io.BytesIO(v)) for k, v in blobs.items() if k != "model"},
    )
    X, y, ref = frames["X"], frames["y"].iloc[:, 0].to_numpy(), frames["ref"]
    sens = frames["sensitive"]
    champ = None
    if champion:
        champ = c("load", "champ sha256 + pickle.loads", _verify_load, blobs["model"])
    models = [("", model)] + ([("champ ", champ)] if champ is not None else [])

    # loads: predict on 5 rows
    c("loads", "predict(5 rows)", model.predict, X.iloc[:5])

    # smoke: 200 rows, a single row, predict_proba, determinism
    s = X.iloc[:200]
    c("smoke", "predict(200 rows)", model.predict, s)
    c("smoke", "predict(1 row)", model.predict, X.iloc[:1])
    c("smoke", "predict_proba(200 rows)", model.predict_proba, s)
    c("smoke", "predict(200 rows) again", model.predict, s)

    # performance: outputs, sklearn point estimates, 200 bootstrap replicates, ROC plot
    outs = []
    for prefix, m in models:
        proba = c("performance", f"{prefix}predict_proba({len(X)})", m.predict_proba, X)
        # a forest's predict is the argmax of its predict_proba: the check takes it from there
        label = f"{prefix}predict as argmax(proba)"
        pred = c("performance", label, lambda m=m, p=proba: m.classes_.take(p.argmax(axis=1)))
        label = f"{prefix}sklearn acc/f1/logloss/auc"
        c("performance", label, _point_metrics, y, pred, proba)
        outs.append((prefix, pred, proba))
    W = c("performance", f"bootstrap weights 200x{len(y)}", _bootstrap_weights, len(y), 200, 0)
    for prefix, pred, proba in outs:
        label = f"{prefix}bootstrap metrics+CIs"
        c("performance", label, _bootstrap_metrics, W, y, pred, proba)

    def roc_plot():
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        for _, _, proba in outs:
            fpr, tpr, _ = roc_curve(y == 1, proba[:, 1])
            ax.plot(fpr, tpr)
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        return _png(fig)

    c("performance", "roc_curve + PNG", roc_plot)

    # latency: warm-up, 50 single rows, 1000-row batch (traced, then 2 more), pickled size
    for prefix, m in models:
        batch = X.iloc[:1000]

        def singles(m=m):
            m.predict(X.iloc[:1])
            for i in range(50):
                m.predict(X.iloc[i : i + 1])

        def batches(m=m, batch=batch):
            tracemalloc.start()
            try:
                m.predict(batch)
            finally:
                tracemalloc.stop()
            m.predict(batch)
            m.predict(batch)

        class Counter:
            size = 0

            def write(self, b):  # protocol 5 also writes PickleBuffers, which have no len()
                n = memoryview(b).nbytes
                self.size += n
                return n

        c("latency", f"{prefix}predict(1 row) x51", singles)
        c("latency", f"{prefix}predict({len(batch)}) x3, traced", batches)
        c("latency", f"{prefix}pickle.dump (size)", pickle.dump, m, Counter(), 5)

    # fairness: predict again, MetricFrame per gender group, bar plot
    pred = np.asarray(c("fairness", f"predict({len(X)})", model.predict, X))
    groups = sens["gender"].astype("object").astype(str).to_numpy()
    frame = c(
        "fairness",
        "MetricFrame, 5 metrics",
        lambda: (
            MetricFrame(
                metrics={
                    "count": count,
                    "selection_rate": selection_rate,
                    "accuracy": accuracy_score,
                    "tpr": true_positive_rate,
                    "fpr": false_positive_rate,
                },
                y_true=y,
                y_pred=pred,
                sensitive_features=groups,
            ).by_group
        ),
    )

    def bar_plot():
        fig, ax = plt.subplots(figsize=(3.6, 0.6 + 0.3 * len(frame)))
        ax.barh([str(g) for g in frame.index], frame["selection_rate"].astype(float))
        return _png(fig)

    c("fairness", "bar plot PNG", bar_plot)

    # explainability: permutation importance on 1000 rows x 3, PDP of the top 3 on 300 rows
    idx = np.sort(np.random.default_rng(0).choice(len(X), min(1000, len(X)), replace=False))
    Xs, ys = X.iloc[idx], pd.Series(y).iloc[idx]
    imp = c(
        "explainability",
        f"stacked permutation {len(Xs)}x3",
        stacked_importance,
        model,
        Xs,
        ys,
        n_repeats=3,
        seconds=EXPLAIN["seconds"],
        min_rows=EXPLAIN["min_rows"],
        random_state=0,
    )
    top = [X.columns[i] for i in np.argsort(-imp["mean"])[:3]]
    small = Xs.iloc[np.sort(np.random.default_rng(0).choice(len(Xs), 300, replace=False))]
    for f in top:
        categorical = small[f].nunique() <= 2
        j = list(small.columns).index(f)
        if stacked_handled(model, small, j, categorical):  # the check's path for this forest
            pdp = c(
                "explainability",
                f"stacked partial_dep. {f} 300x20",
                stacked_dependence,
                model,
                small,
                j,
                categorical=categorical,
                grid_resolution=20,
            )
        else:
            pdp = c(
                "explainability",
                f"partial_dep. {f} 300x20",
                partial_dependence,
                model,
                small,
                [f],
                categorical_features=[f] if categorical else None,
                grid_resolution=20,
                kind="average",
            )

        def pdp_plot(pdp=pdp):
            fig, ax = plt.subplots(figsize=(3.4, 2.4))
            for curve in np.asarray(pdp["average"]):
                ax.plot(pdp["grid_values"][0], curve)
            return _png(fig)

        c("explainability", f"PDP PNG {f}", pdp_plot)

    # drift: per feature, PSI at the reference's deciles and the KS statistic; a histogram
    def drift():
        out = {}
        for col in X.columns:
            r, cur = ref[col].dropna().to_numpy(float), X[col].dropna().to_numpy(float)
            edges = np.unique(np.quantile(r, np.linspace(0, 1, 11)[1:-1]))
            h = [
                np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
                for v in (r, cur)
            ]
            e, a = (v / v.sum() + 1e-4 for v in h)
            e, a = e / e.sum(), a / a.sum()
            out[col] = (float(np.sum((a - e) * np.log(a / e))), ks_2samp(r, cur).statistic)
        return out

    psi = c("drift", f"PSI + ks_2samp x{X.shape[1]} features", drift)
    worst = max(psi, key=lambda k: psi[k][0])

    def hist_plot():
        fig, ax = plt.subplots(figsize=(3.6, 2.6))
        r, cur = ref[worst].astype(float), X[worst].astype(float)
        bins = np.histogram_bin_edges(np.concatenate([r, cur]), bins=30)
        ax.hist(r, bins=bins, alpha=0.5, density=True)
        ax.hist(cur, bins=bins, alpha=0.5, density=True)
        return _png(fig)

    c("drift", "histogram PNG", hist_plot)
    return c.rows


def worker_imports() -> dict[str, float]:
    """Cold import times, in a fresh process, of what the worker imports during the checks
    (its warm spare has already imported numpy, pandas, pyarrow and sklearn.metrics)."""
    code = (
        "import json, time\n"
        "import numpy, pandas, pyarrow.parquet, sklearn.base, sklearn.metrics\n"
        "out = {}\n"
        "for m in ('sklearn.ensemble', 'fairlearn.metrics', 'scipy.stats', 'sklearn.inspection', "
        "'matplotlib.pyplot'):\n"
        "    t = time.perf_counter(); __import__(m); out[m] = time.perf_counter() - t\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, env=env, timeout=300, check=True
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def bench_raw(rep: Report, cfg: dict, data: dict, agent: dict | None) -> dict:
    rep.section("3. The suite's raw library calls, alone in this process (vs the worker)")
    import pandas as pd

    def parquet(frame) -> bytes:
        buf = io.BytesIO()
        frame.to_parquet(buf)
        return buf.getvalue()

    blobs = {
        "model": pickle.dumps(data["model"], protocol=5),
        "X": parquet(data["X"]),
        "y": parquet(data["y"].to_frame()),
        "sensitive": parquet(data["X"][["gender"]]),
        "ref": parquet(data["ref"]),
    }
    assert isinstance(data["X"], pd.DataFrame)
    raw_suite(data, blobs, champion=True)  # warm-up: imports, caches; not counted
    # One set of passes with the champion; v1's calls are the same minus the champion's, so
    # the two sums come from the same measurements.
    reps = [raw_suite(data, blobs, champion=True) for _ in range(cfg["raw_reps"])]
    second = [
        (ck, label, median([r[i][2] for r in reps])) for i, (ck, label, _) in enumerate(reps[0])
    ]
    out = {"first": [r for r in second if not r[1].startswith("champ ")], "second": second}
    imports = worker_imports()
    d = {"calls": out, "worker_imports": imports, "reps": cfg["raw_reps"]}
    rep.data["raw"] = d

    reps_note = f"median of {cfg['raw_reps']}, after 1 warm-up"
    for check, label, s in out["second"]:
        tag = label.startswith("champ ")
        rep.row(f"{check}: {label}"[:46], fmt_s(s), "v2 only" if tag else "")
    sums = {k: sum(s for _, _, s in rows) for k, rows in out.items()}
    d["sums"] = sums
    rep.row("sum of raw calls, v1 (no champion)", fmt_s(sums["first"]), reps_note)
    rep.row("sum of raw calls, v2 (with champion)", fmt_s(sums["second"]), reps_note)

    by_check = {
        k: {c: sum(s for ck, _, s in rows if ck == c) for c in ("load", *SUITE)}
        for k, rows in out.items()
    }
    d["by_check"] = by_check
    rep.row("per check: raw v1", "", "worker v1 | v2: raw, worker")
    for c in ("load", *SUITE):
        w1 = w2 = None
        if agent:
            key = "worker_load_s" if c == "load" else None
            w1 = agent["first"][key] if key else agent["first"]["durations"].get(c)
            w2 = agent["second"][key] if key else agent["second"]["durations"].get(c)
        rep.row(
            f"  {c}",
            fmt_s(by_check["first"][c]),
            f"worker {fmt_s(w1):>9} | v2: raw {fmt_s(by_check['second'][c]):>9}"
            f" worker {fmt_s(w2):>9}",
        )
    rep.row(
        "  (worker load: unpickle only, 'load_seconds')",
        "",
        "raw load also hashes and reads parquet; v2 worker unpickles the champion first",
    )
    imp = sum(imports.values())
    rep.row(
        "cold imports the worker does inside checks",
        fmt_s(imp),
        ", ".join(f"{k} {fmt_s(v)}" for k, v in imports.items()),
    )
    if agent:
        for key, label in (("first", "v1"), ("second", "v2")):
            a = agent[key]
            worker = sum(a["durations"].values()) + (a["worker_load_s"] or 0)
            full, raw = a["report_s"], sums[key]
            ratio = full / raw
            d[f"overhead_{key}"] = ratio
            rep.row(f"{label}: sum of worker check durations + unpickle", fmt_s(worker), "")
            rest = full - a["push_s"] - worker
            rep.row(
                f"{label}: push->report - push() - worker sum",
                fmt_s(rest),
                "dispatch, verify, parquet, champion, DB, report (< 0: checks overlapped)",
            )
            rep.row(
                f"{label}: overhead = push->report / raw sum",
                f"{ratio:.2f}x",
                rep.target(
                    f"overhead_{key}", f"<= {TARGET_OVERHEAD}x", ratio, ratio <= TARGET_OVERHEAD
                ),
            )
            rep.row(f"{label}: worker durations / raw sum", f"{worker / raw:.2f}x", "")
    rep.note(
        "Raw calls mirror the built-in checks' defaults (agent/handoff_agent/checks/*): smoke "
        "200 rows; performance 200 bootstrap replicates computed with numpy as _metrics.py "
        "does; latency 1+50 single rows and 3 batches of 1,000 (first under tracemalloc) plus "
        "pickling for the size; fairness 5 fairlearn metrics; explainability permutation "
        "importance on 1,000 rows x 3 repeats and PDP of the top 3 on 300 rows, grid 20; drift "
        "PSI at 10 reference quantile bins and ks_2samp per feature; one PNG per plot as the "
        "checks draw (6 for v1). Imports are warm here (a warm-up pass ran first); the worker "
        "imports sklearn.ensemble (when unpickling), fairlearn, scipy.stats, sklearn.inspection "
        "and matplotlib cold, inside the timed work."
    )
    return d


# -- 4. mlflow.evaluate -----------------------------------------------------------------------


def bench_mlflow(rep: Report, data: dict, tmp: Path, agent: dict | None) -> dict:
    rep.section("4. mlflow.evaluate (default evaluator) on the same model and data")
    model_path, data_path = tmp / "model.pkl", tmp / "eval.pkl"
    model_path.write_bytes(pickle.dumps(data["model"], protocol=5))
    frame = data["X"].copy()
    frame["label"] = data["y"].to_numpy()
    data_path.write_bytes(pickle.dumps(frame, protocol=5))
    cmd = [sys.executable, str(MLFLOW_EVAL), "--model", str(model_path), "--data"]
    cmd += [str(data_path), "--store", str(tmp / "mlflow"), "--reps", "3"]
    with open(tmp / "mlflow.log", "ab") as err:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **MLFLOW_ENV},
            timeout=1800,
            check=False,
            start_new_session=True,
        )
    if proc.returncode != 0:
        log = (tmp / "mlflow.log").read_text()[-2000:]
        raise RuntimeError(f"mlflow evaluate helper failed ({proc.returncode}):\n{log}")
    ml = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    rep.data["mlflow"] = ml
    m = ml["median"]
    rep.row(f"MLflow {ml['mlflow_version']} import", fmt_s(ml["import_s"]), "separate process")
    rep.row("mlflow.evaluate, first call (warm-up)", fmt_s(ml["warmup_s"]), "not counted")
    rep.row("mlflow.evaluate(model_uri, ...)", fmt_s(m), "median of 3 after warm-up")
    if agent:
        for key, label in (("first", "v1"), ("second", "v2")):
            full = agent[key]["report_s"]
            rep.row(f"mlflow.evaluate / Handoff full suite ({label})", f"{m / full:.2f}x", "")
    rep.note(
        "mlflow.evaluate logs "
        + ", ".join(ml["metrics"])
        + " and plots "
        + ", ".join(ml["artifacts"])
        + ". "
        + (
            "SHAP is not installed, so its default evaluator skipped explainability; "
            if not ml["shap_installed"]
            else ""
        )
        + "it has no bootstrap CIs, latency, fairness, drift or champion comparison. Each call "
        "runs in its own run and loads the model from a local sqlite/file store."
    )
    return ml


# -- 5. permutation importance: ranking stability ---------------------------------------------


def _agreement(a, b, k: int) -> float:
    """The share of ``b``'s top ``k`` features that are also in ``a``'s top ``k``."""
    import numpy as np

    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def bench_importance(rep: Report, data: dict) -> dict:
    rep.section("5. Permutation importance: the check's stacked, budgeted ranking vs unbudgeted")
    from scipy.stats import spearmanr
    from sklearn.inspection import permutation_importance

    from handoff_agent.checks._permutation import permutation_importance as stacked
    from handoff_agent.checks._util import subsample

    model, X, y = data["model"], data["X"], data["y"]
    t = time.perf_counter()
    ref = permutation_importance(model, X, y, n_repeats=5, random_state=0).importances_mean
    ref_s = time.perf_counter() - t
    rep.row(f"sklearn, all {len(X):,} rows x 5 (reference)", fmt_s(ref_s), "unbudgeted ranking")
    Xs, ys, _ = subsample(X, y, EXPLAIN["max_rows"], EXPLAIN["random_state"])
    runs = {
        "sklearn_check_rows": lambda: (
            permutation_importance(
                model, Xs, ys, n_repeats=EXPLAIN["n_repeats"], random_state=0
            ).importances_mean
        ),
        "stacked_unbudgeted": lambda: stacked(model, Xs, ys, n_repeats=EXPLAIN["n_repeats"])[
            "mean"
        ],
    }
    used = {}

    def budgeted():
        r = stacked(
            model,
            Xs,
            ys,
            n_repeats=EXPLAIN["n_repeats"],
            seconds=EXPLAIN["seconds"],
            min_rows=EXPLAIN["min_rows"],
        )
        used["rows"] = r["rows"]
        return r["mean"]

    runs["stacked_budgeted"] = budgeted
    out = {"reference_s": ref_s, "features": len(X.columns)}
    labels = {
        "sklearn_check_rows": f"sklearn, {len(Xs):,} rows x {EXPLAIN['n_repeats']} (before)",
        "stacked_unbudgeted": f"stacked, {len(Xs):,} rows x {EXPLAIN['n_repeats']}",
        "stacked_budgeted": f"stacked, budget {EXPLAIN['seconds']:.0f} s (the check)",
    }
    for key, fn in runs.items():
        t = time.perf_counter()
        got = fn()
        took = time.perf_counter() - t
        rho = float(spearmanr(got, ref).statistic)
        top3, top5 = _agreement(got, ref, 3), _agreement(got, ref, 5)
        out[key] = {"s": took, "spearman": rho, "top3": top3, "top5": top5}
        rows = f", {used['rows']} rows" if key == "stacked_budgeted" else ""
        rep.row(
            labels[key],
            fmt_s(took),
            f"Spearman {rho:.2f}, top-3 {top3:.0%}, top-5 {top5:.0%} vs reference{rows}",
        )
    out["budgeted_rows"] = used.get("rows")
    rep.data["importance"] = out
    rep.note(
        "Permutation importance: Spearman over all 31 features and the share of the reference's "
        "top 3 / top 5 found in the same top k. make_classification gives 2 informative and 2 "
        "redundant features; the other 27 are noise whose order is random in every method, so "
        "the top-k agreement is what the check's PDP plots (top 3) depend on."
    )
    return out


# -- main -------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller model and data, 1 rep, no MLflow")
    p.add_argument("--skip-mlflow", action="store_true", help="no MLflow")
    p.add_argument("--dir", default=None, help="where to make the temp dir (default: $TMPDIR)")
    p.add_argument("--out", default=str(HERE / "results" / "checks.json"))
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="also run the suite one check after another (one worker): the parallel baseline",
    )
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="handoff-bench-checks-", dir=args.dir))
    runtime_dir = tmp / "rt"
    # jupyter_handoff finds the agent through the runtime dir: set it before importing it.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    rep = Report()
    rep.data["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tmp": str(tmp),
        "args": vars(args),
        "config": cfg,
    }
    load0 = os.getloadavg()
    rep.data["machine"]["loadavg_start"] = load0
    print(f"Handoff checks benchmark on {platform.node()} ({os.cpu_count()} CPUs), temp dir {tmp}")
    print(f"load average at start: {load0[0]:.2f} (1 min); other work on the machine skews numbers")
    try:
        data = make_data(cfg)
        print(
            f"RandomForest({cfg['trees']} trees) on {cfg['train']:,} x 31, fit {data['fit_s']:.1f}"
            f" s; eval {len(data['X']):,} rows, reference {len(data['ref']):,}",
            flush=True,
        )
        rep.data["model"] = {"fit_s": data["fit_s"], **cfg}
        agent = bench_agent(rep, cfg, data, tmp, runtime_dir)
        seq = None
        if args.sequential:
            seq = bench_agent(rep, cfg, data, tmp, runtime_dir, sequential=True)
            rep.section("1-2. Parallel against sequential checks (same run)")
            for key, label in (("first", "v1"), ("second", "v2")):
                ratio = agent[key]["report_s"] / seq[key]["report_s"]
                ok = ratio <= TARGET_PARALLEL
                rep.row(
                    f"{label}: full report parallel / sequential",
                    f"{ratio:.2f}x",
                    rep.target(f"parallel_{key}", f"<= {TARGET_PARALLEL}x", ratio, ok),
                )
                best = best_split(seq[key], WORKERS)
                rep.row(
                    f"{label}: the least {WORKERS} workers could reach",
                    f"{best:.2f}x",
                    "the sequential run's checks spread evenly, the rest (push, loading, "
                    "report) as it was",
                )
        raw = bench_raw(rep, cfg, data, agent)
        importance = bench_importance(rep, data)
        if args.quick or args.skip_mlflow:
            rep.section("4. mlflow.evaluate (default evaluator) on the same model and data")
            rep.row("mlflow.evaluate", "skipped", "--quick" if args.quick else "--skip-mlflow")
        else:
            bench_mlflow(rep, data, tmp, agent)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    rep.data["ratios"] = ratios(agent, seq, raw, importance)
    rep.finish(
        "Handoff checks benchmark summary (loopback, this machine)", t_start, load0, args.out
    )
    print("\nTargets (issue 13)")
    for line in summary_lines(rep.data["ratios"]):
        print(line)
    return 0


def best_split(seq: dict, workers: int) -> float:
    """The least parallel/sequential ratio ``workers`` workers could reach on a sequential
    run: what is not a check (the push, loading the model, the report) stays as long as it
    was, and the checks at best share the workers evenly, never ending before the longest.
    On two cores this is about 0.55x, above the 0.5x target. The sequential run's
    explainability already spreads its predicts over the free core (``predict_rows``), so
    its duration there is less than its CPU time and this bound errs low."""
    durations = list(seq["durations"].values())
    work = sum(durations)
    rest = seq["report_s"] - work
    return (rest + max(work / workers, max(durations))) / seq["report_s"]


def ratios(agent: dict, seq: dict | None, raw: dict, importance: dict) -> dict:
    """The targets' ratios under stable keys (bench/results/checks.json ``ratios``)."""
    out = {}
    for key, v in (("first", "v1"), ("second", "v2")):
        out[f"full_vs_sequential_{v}"] = (
            agent[key]["report_s"] / seq[key]["report_s"] if seq else None
        )
        out[f"full_vs_sequential_best_{v}"] = best_split(seq[key], WORKERS) if seq else None
        out[f"provisional_vs_1s_{v}"] = agent[key]["provisional_s"] / TARGET_PROVISIONAL
        out[f"overhead_vs_raw_{v}"] = raw.get(f"overhead_{key}")
    b = importance["stacked_budgeted"]
    out["importance_spearman"] = b["spearman"]
    out["importance_top3"] = b["top3"]
    out["importance_top5"] = b["top5"]
    return out


def summary_lines(r: dict) -> list[str]:
    """One line per target: MET or MISSED, with the ratio."""
    lines = []
    for v in ("v1", "v2"):
        for key, bound, what in (
            (f"full_vs_sequential_{v}", TARGET_PARALLEL, "full report / sequential suite"),
            (f"provisional_vs_1s_{v}", 1.0, f"first provisional verdict / {TARGET_PROVISIONAL} s"),
            (f"overhead_vs_raw_{v}", TARGET_OVERHEAD, "full report / raw library calls"),
        ):
            x = r.get(key)
            if x is None:
                state = "n/a (run with --sequential)"
            else:
                state = f"{'MET' if x <= bound else 'MISSED'} {x:.2f}x (target <= {bound}x)"
                best = r.get(f"full_vs_sequential_best_{v}")
                if key.startswith("full_vs_sequential") and best is not None:
                    state += f"; {WORKERS} workers reach {best:.2f}x at best"
            lines.append(f"  {v} {what:<40} {state}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
