"""Serving benchmark: a LogisticRegression and a 200-tree RandomForest (scikit-learn's bundled
breast-cancer data), served side by side in one run:

- direct ``predict`` in this process (the model's own cost);
- a bare tornado handler answering a fixed body, with the same client (the least any request
  served by a tornado process costs on this machine);
- onnxruntime directly, on the graph ``handoff_agent.onnx_convert`` makes (``OnnxBackend``);
- ``mlflow models serve --env-manager local`` on the same model (the anchor);
- Handoff's model server on the scikit-learn (skops) and ONNX backends, deployed here as a
  team would: a local agent and a central one on loopback, each model pushed through the
  notebook API, validated at central and signed off to production. The skops deployment runs
  with ``--Validation.enabled=False``; the ONNX one converts on entering validated (parity on
  the evaluation sample) and load-tests the test slot, then serves on onnxruntime. The skops
  deployment also times a second LogisticRegression from its canary sign-off (approved) to
  the first default-route answer it serves.

It measures single-row p50/p99 at concurrency 1, throughput at concurrency 16, the router's
overhead over each backend's own predict, and the time from approved to serving canary
traffic, and ends with one MET/MISSED line per target of issue 11 (Handoff p50 <= 1/2
MLflow's; skops overhead <= 0.5 ms; the ONNX backend >= 5x faster than MLflow for the forest,
single row; approved -> canary <= 2 s; alarm -> rolled back <= 1 s is bench/guardrails.py's).
HTTP is driven by ``handoff_agent.loadtest``, the same client the deploy gate uses, over
keep-alive connections on loopback.

    python bench/serve.py                        # everything (several minutes, 2 cores)
    python bench/serve.py --quick --skip-mlflow  # fewer requests, no MLflow
    python bench/serve.py --skip-handoff --handoff-skops-url 'http://127.0.0.1:PORT/v2/models/bench-{model}/infer'
                          --handoff-onnx-url  '…'   # a server of yours; {model}: logreg, forest
    (or HANDOFF_SKOPS_URL / HANDOFF_ONNX_URL; HANDOFF_TOKEN is sent as the token)

Every process it starts is stopped in a finally block; its files live in one temp directory
that is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    MLFLOW_ENV,
    Agent,
    fmt_s,
    free_port,
    median,
    percentile,
    start_until_ready,
    stop_process,
)
from push import Report, verdict  # noqa: E402

CONCURRENCY = 16
MODELS = ("logreg", "forest")
SAVE_MLFLOW = """
import pickle, sys, mlflow.sklearn
with open(sys.argv[1], "rb") as f:
    model = pickle.load(f)
mlflow.sklearn.save_model(model, sys.argv[2], serialization_format="cloudpickle")
"""


def make_models() -> tuple[object, object, dict]:
    """The data as a DataFrame, its labels, and the two fitted models."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target
    X.columns = [c.replace(" ", "_") for c in X.columns]
    models = {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y),
        "forest": RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=-1).fit(X, y),
    }
    models["forest"].set_params(n_jobs=None)  # fitted in parallel, served as pushed
    return X, y, models


# -- in process -------------------------------------------------------------------------------


def time_single_rows(predict, X, reps: int, warmup: int = 20) -> list[float]:
    times = []
    for i in range(warmup + reps):
        row = X.iloc[i % len(X) : i % len(X) + 1]
        t = time.perf_counter()
        predict(row)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def threaded_throughput(predict, X, requests: int, threads: int = CONCURRENCY) -> float:
    """Single-row calls per second from ``threads`` threads in this process."""
    rows = [X.iloc[i % len(X) : i % len(X) + 1] for i in range(requests)]
    it = iter(rows)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                row = next(it, None)
            if row is None:
                return
            predict(row)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    t = time.perf_counter()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return requests / (time.perf_counter() - t)


def in_process(predict, X, args) -> dict:
    times = time_single_rows(predict, X, args.reps)
    return {
        "p50": median(times),
        "p99": percentile(times, 99),
        "throughput": threaded_throughput(predict, X, args.requests),
    }


# -- over HTTP --------------------------------------------------------------------------------


def measure_http(url: str, X, args, protocol: str = "v2", headers=None) -> dict:
    """Single-row p50/p99 at concurrency 1 and throughput at 16 against an inference URL."""
    from handoff_agent import loadtest

    result = asyncio.run(
        loadtest.run(
            url,
            X,
            protocol=protocol,
            levels=(1, CONCURRENCY),
            requests=args.reps,
            warmup=50,
            headers=headers,
        )
    )
    one, many = result.level(1), result.level(CONCURRENCY)
    return {
        "p50": one.p50,
        "p99": one.p99,
        "throughput": many.throughput,
        "errors": one.errors + many.errors,
        "first_error": one.first_error or many.first_error,
    }


def _handoff_headers() -> dict:
    token = os.environ.get("HANDOFF_TOKEN")
    return {"Authorization": f"token {token}"} if token else {}


def measure_handoff(url: str | None, X, args, headers: dict | None = None) -> dict | None:
    """A Handoff V2 infer URL: one deployed here (``HandoffDeployment``) or one passed in."""
    return measure_http(url, X, args, "v2", headers or _handoff_headers()) if url else None


# -- Handoff deployed here --------------------------------------------------------------------

SECRET = "bench-serve-secret-7Hq2Lr9VxWm4ZpK8nT3y"
POLICY = f"""
[intake]
trusted_types = []
revalidate = false

[intake.senders]
bench = "{SECRET}"

[stages.approved]
reviewer = 1
[stages.canary]
reviewer = 1
[stages.production]
reviewer = 1

[deploy]
canary_percent = 10

[deploy.loadtest]
requests = 100
"""


class HandoffDeployment:
    """A local agent and a central one on loopback; models pushed through the notebook API,
    validated at central (``onnx``: ONNX conversion and load test on; else skops only) and
    signed off to production, as a team would."""

    def __init__(self, tmp: Path, label: str, onnx: bool, workers: int, extra=()):
        from central import Central

        self.label, self.onnx = label, onnx
        base = tmp / f"handoff-{label}"
        base.mkdir()
        (base / "policy.toml").write_text(POLICY)
        self.central = Central(
            base / "central",
            base / "rt-central",
            base / "central.log",
            free_port(),
            SECRET + "-central-token",
            [
                "--policy",
                str(base / "policy.toml"),
                "--HandoffAgent.checks=[]",
                f"--Serving.workers={workers}",
                "--Serving.poll_interval=0.2",
                f"--Validation.enabled={onnx}",
                *extra,
            ],
        )
        self.local = Agent(
            base / "local",
            base / "rt-local",
            base / "local.log",
            (
                "--forward-to",
                "central",
                "--HandoffAgent.checks=[]",
                "--HandoffAgent.owner_name=bench",
                "--HandoffAgent.forward_backoff=0.1",
                "--CentralDestination.status_interval=0.2",
            ),
        )

    def start(self) -> HandoffDeployment:
        self.central.start(timeout=120)
        self.local.extra_args += [
            f"--CentralDestination.url={self.central.url}",
            f"--CentralDestination.secret={SECRET}",
            f"--CentralDestination.token={self.central.token}",
        ]
        self.local.start(timeout=120)
        info = json.loads(self.central.runtime_file.read_text())
        self.serving_url = info["serving_url"]
        return self

    def stop(self) -> None:
        self.local.stop()
        self.central.stop()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"token {self.central.token}"}

    def request(self, method: str, path: str, body=None) -> tuple[int, dict]:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.central.url + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.central.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def push(self, model, name: str, X, y, timeout: float = 300) -> int:
        """Push through the notebook API; wait until central has it validated."""
        from jupyter_handoff import api, config

        config._instance = config.Handoff(
            agent_url=self.local.url, token=self.local.token, auto_start=False
        )
        try:
            pushed = api.push(model, name, X=X, y=y).number
        finally:
            config._instance = None

        def validated():
            rows = self.request("GET", f"/api/v1/models/{name}/versions")[1].get("versions", [])
            return (
                next((r["number"] for r in rows if r.get("stage") == "validated"), None)
                if rows and max(r["number"] for r in rows) >= pushed
                else None
            )

        return wait_for(validated, timeout, f"{name} validated at central")

    def stage(self, name: str, number: int) -> str:
        return self.request("GET", f"/api/v1/models/{name}/versions/{number}")[1].get("stage")

    def sign(self, name: str, number: int, until: str) -> None:
        path = f"/api/v1/models/{name}/versions/{number}/signoffs"
        while self.stage(name, number) != until:
            status, body = self.request("POST", path, {"decision": "approve", "comment": "ok"})
            if status != 201:
                raise RuntimeError(f"sign-off of {name}:{number} refused: {body}")

    def validation(self, name: str, number: int, timeout: float = 600) -> dict:
        path = f"/api/v1/models/{name}/versions/{number}/validation"
        return wait_for(
            lambda: (v := self.request("GET", path)[1]).get("state") == "done" and v,
            timeout,
            f"{name}:{number} validation",
        )

    def production_backend(self, name: str) -> str | None:
        view = self.request("GET", f"/api/v1/models/{name}/deployment")[1]
        prod = next((s for s in view.get("slots", []) if s["slot"] == "production"), {})
        return prod.get("backend") if prod.get("workers") else None

    def deploy(self, model, name: str, X, y) -> tuple[str, dict | None]:
        """Push, validate and promote to production; the V2 URL and the validation."""
        number = self.push(model, name, X, y)
        validation = self.validation(name, number) if self.onnx else None
        self.sign(name, number, "production")
        want = (validation or {}).get("backend") or "skops"
        wait_for(lambda: self.production_backend(name) == want, 300, f"{name} on {want}")
        return f"{self.serving_url}/v2/models/{name}/infer", validation

    def approved_to_canary(self, model, name: str, X, y) -> float:
        """Seconds from the canary sign-off of an approved version to the first default-route
        answer served by it (the policy's canary share, random routing)."""
        number = self.push(model, name, X, y)

        def test_slot_ready():  # a reviewer approves after looking at it: its workers are up
            url = f"{self.serving_url}/v2/models/{name}/versions/{number}/ready"
            return _get_status(url, self.headers) == 200

        wait_for(test_slot_ready, 300, f"{name}:{number} loaded in the test slot")
        self.sign(name, number, "approved")
        t0 = time.perf_counter()
        self.sign(name, number, "canary")

        def served_by_canary():
            status, headers = _invocation(self.serving_url, name, X, self.headers)
            return status == 200 and headers.get("X-Handoff-Model-Version") == str(number)

        wait_for(served_by_canary, 120, f"{name}:{number} serving canary traffic", every=0.0)
        return time.perf_counter() - t0


def _invocation(url: str, name: str, X, headers: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    row = X.iloc[:1]
    body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
    req = urllib.request.Request(
        f"{url}/invocations?model={name}", data=json.dumps(body).encode(), method="POST"
    )
    req.add_header("Content-Type", "application/json")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def _get_status(url: str, headers: dict) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class MlflowServe:
    """``mlflow models serve`` on a saved model, in its own process group."""

    def __init__(self, model_dir: Path, log: Path, workers: int = 1):
        self.model_dir, self.log, self.workers = model_dir, log, workers
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self, timeout: float = 180.0) -> float:
        self.port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(self.model_dir)]
        cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)]
        cmd += ["-w", str(self.workers)]
        self.proc, took = start_until_ready(
            cmd, self.log, f"{self.url}/ping", "mlflow models serve", timeout
        )
        return took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


FLOOR_SERVER = """
import json, sys
import tornado.ioloop, tornado.web
ANSWER = json.dumps({"model_name": "floor", "model_version": "1", "outputs": [
    {"name": "predict", "datatype": "INT64", "shape": [1], "data": [1]}]})
class Infer(tornado.web.RequestHandler):
    def get(self, name):
        self.write(ANSWER)
    def post(self, name):
        json.loads(self.request.body)
        self.set_header("Content-Type", "application/json")
        self.write(ANSWER)
app = tornado.web.Application([(r"/v2/models/([^/]+)/infer", Infer)])
app.listen(int(sys.argv[1]), "127.0.0.1")
tornado.ioloop.IOLoop.current().start()
"""


def measure_floor(X, tmp: Path, args) -> dict:
    """The machine's floor for one request: the same client against a bare tornado handler
    (parse the JSON body, answer a fixed V2 body), in its own process. Anything served over
    HTTP by a tornado process here costs at least this over the model's predict."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/models/floor/infer"
    proc, _ = start_until_ready(
        [sys.executable, "-c", FLOOR_SERVER, str(port)], tmp / "floor.log", url, "floor", 60
    )
    try:
        return measure_http(url, X, args)
    finally:
        stop_process(proc)


def measure_mlflow(model, X, tmp: Path, name: str, args) -> dict:
    pkl, model_dir = tmp / f"{name}.pkl", tmp / f"mlflow-{name}"
    pkl.write_bytes(pickle.dumps(model, protocol=5))
    subprocess.run(
        [sys.executable, "-c", SAVE_MLFLOW, str(pkl), str(model_dir)],
        check=True,
        env={**os.environ, **MLFLOW_ENV},
        capture_output=True,
        timeout=600,
    )
    server = MlflowServe(model_dir, tmp / f"mlflow-serve-{name}.log", args.mlflow_workers)
    try:
        ready = server.start()
        out = measure_http(f"{server.url}/invocations", X, args, "invocations")
        out["startup_s"] = ready
        return out
    finally:
        server.stop()


# -- the run ----------------------------------------------------------------------------------


def bench_handoff(rep: Report, X, y, models: dict, tmp: Path, args, running: list) -> None:
    """Handoff deployed here, once per backend: the bench models pushed, validated at central
    and promoted to production. The deployments stay up (added to ``running``, which the
    caller stops, also when this fails half-way), so each model's Handoff rows are measured
    beside its other rows. With the skops deployment also: the time from approved to serving
    canary traffic."""
    rep.section("Handoff deployments (pushed, validated, signed off)")
    args.handoff = {}
    for key, onnx in (("handoff_skops", False), ("handoff_onnx", True)):
        if getattr(args, f"{key}_url"):
            continue  # a server given on the command line is measured instead
        dep = HandoffDeployment(tmp, key, onnx, args.mlflow_workers)
        running.append(dep)
        t0 = time.perf_counter()
        dep.start()
        rep.row(f"{key}: central + local agent up", fmt_s(time.perf_counter() - t0), "")
        for name in args.models.split(","):
            t0 = time.perf_counter()
            url, validation = dep.deploy(models[name], f"bench-{name}", X, y)
            took = time.perf_counter() - t0
            note = "push, validate, 3 sign-offs"
            if validation:
                parity = validation.get("parity") or {}
                lt = validation.get("loadtest") or {}
                note += (
                    f"; backend {validation['backend']}, parity max abs diff "
                    f"{parity.get('max_abs_diff') or 0:.2g}, load test {lt.get('verdict')}"
                )
            rep.row(f"{key}: {name} deployed to production", fmt_s(took), note)
            args.handoff.setdefault(key, {})[name] = (url, dep.headers, validation)
        if not onnx and "logreg" in args.models.split(","):
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            second = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000))
            took = dep.approved_to_canary(second.fit(X, y), "bench-logreg", X, y)
            rep.row(
                "approved -> serving canary traffic",
                fmt_s(took),
                rep.target("approved_to_canary", "<= 2 s", took, took <= 2.0),
            )


def _url(template: str | None, name: str) -> str | None:
    return template.replace("{model}", name) if template else None


def bench_model(rep: Report, name: str, model, X, tmp: Path, args) -> dict:
    from handoff_agent import onnx_convert
    from handoff_agent.serving.backend import SkopsBackend
    from handoff_agent.serving.onnx_backend import OnnxBackend

    title = {"logreg": "LogisticRegression (scaled)", "forest": "RandomForest, 200 trees"}[name]
    rep.section(f"{name}: {title}, single row p50 / p99 at c=1, rows/s at c={CONCURRENCY}")
    results: dict = {}
    results["direct"] = in_process(model.predict, X, args)
    # What a skops worker calls: the row as the float64 block it builds from the request,
    # with the one warning it filters (SkopsBackend.load)
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    skops, columns = SkopsBackend(model, {}, sample=X), [str(c) for c in X.columns]
    results["skops"] = in_process(
        lambda row: skops.predict_block(row.to_numpy(dtype="float64"), columns), X, args
    )
    results["skops"]["array_path"] = skops.array_columns is not None

    data, _meta = onnx_convert.to_onnx(model, X, "classification")
    backend = OnnxBackend(data)
    same = backend.predict(X)["predict"] == model.predict(X).tolist()
    results["onnxruntime"] = in_process(backend.predict, X, args)
    results["onnxruntime"]["labels_equal"] = same

    for key in ("handoff_skops", "handoff_onnx"):
        deployed = args.handoff.get(key, {}).get(name)  # deployed by this run
        if deployed:
            url, headers, validation = deployed
            results[key] = measure_handoff(url, X, args, headers)
            results[key]["validation"] = validation
        else:
            results[key] = measure_handoff(_url(getattr(args, f"{key}_url"), name), X, args)
    results["mlflow"] = None if args.skip_mlflow else measure_mlflow(model, X, tmp, name, args)
    results["floor"] = measure_floor(X, tmp, args)

    labels = {
        "direct": "direct predict (in process)",
        "skops": "scikit-learn, SkopsBackend (in process)",
        "onnxruntime": "onnxruntime, OnnxBackend (in process)",
        "handoff_skops": "Handoff V2, skops backend",
        "handoff_onnx": "Handoff V2, ONNX backend",
        "mlflow": "mlflow models serve (/invocations)",
        "floor": "floor: a bare tornado handler, same client",
    }
    for key, label in labels.items():
        r = results[key]
        if r is None:
            rep.row(label, "not measured", "pass its URL" if "handoff" in key else "--skip-mlflow")
            continue
        note = f"p99 {fmt_s(r['p99'])}, {r['throughput']:.0f} rows/s"
        if r.get("errors"):
            note += f", {r['errors']} errors ({r['first_error']})"
        rep.row(label, fmt_s(r["p50"]), note)

    direct, ort, anchor = results["direct"], results["onnxruntime"], results["mlflow"]
    rep.row("direct p50 / onnxruntime p50", f"{direct['p50'] / ort['p50']:.1f}x", "in process")
    if anchor:
        rep.row("MLflow p50 - direct p50", fmt_s(anchor["p50"] - direct["p50"]), "its overhead")
    # What serving adds over each backend's own predict, called in process as its worker calls
    # it (the target below is over direct predict, as issue 11 words it).
    for key, floor in (("handoff_skops", results["skops"]), ("handoff_onnx", ort)):
        r = results[key]
        if r is None:
            continue
        rep.row(f"{key} p50 - its backend's p50", fmt_s(r["p50"] - floor["p50"]), "overhead")
        if anchor:
            rep.row(f"{key} p50 / MLflow p50", f"{r['p50'] / anchor['p50']:.2f}x", "")
            rep.row(
                f"{key} throughput / MLflow",
                f"{r['throughput'] / anchor['throughput']:.2f}x",
                f"c={CONCURRENCY}",
            )
    targets(rep, name, results)
    return results


def targets(rep: Report, name: str, results: dict) -> None:
    anchor = results["mlflow"]
    for key in ("handoff_skops", "handoff_onnx"):
        r = results[key]
        ok = r["p50"] <= anchor["p50"] / 2 if r and anchor else None
        measured = r["p50"] / anchor["p50"] if r and anchor else None
        rep.row(
            f"target: {key} p50 <= 1/2 MLflow's",
            f"{measured:.2f}x" if measured else "-",
            rep.target(f"{name}_{key}_p50_half_mlflow", "<= 0.5x", measured, ok),
        )
    r, direct, floor = results["handoff_skops"], results["direct"], results["floor"]
    overhead = r["p50"] - direct["p50"] if r else None
    rep.row(
        "target: skops overhead over direct <= 0.5 ms",
        fmt_s(overhead) if overhead is not None else "-",
        rep.target(f"{name}_skops_overhead", "<= 0.5 ms", overhead, overhead <= 5e-4 if r else None)
        + f" (one bare tornado round trip here: {fmt_s(floor['p50'])})",
    )
    if name == "forest":
        r = results["handoff_onnx"]
        speedup = anchor["p50"] / r["p50"] if r and anchor else None
        rep.row(
            "target: ONNX backend >= 5x faster than MLflow",
            f"{speedup:.1f}x" if speedup else "-",
            rep.target(
                "forest_onnx_5x_mlflow", ">= 5x", speedup, speedup >= 5 if speedup else None
            ),
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer requests")
    p.add_argument("--skip-mlflow", action="store_true", help="no mlflow models serve")
    p.add_argument(
        "--skip-handoff", action="store_true", help="deploy no Handoff here (measure URLs given)"
    )
    p.add_argument(
        "--handoff-skops-url",
        default=os.environ.get("HANDOFF_SKOPS_URL"),
        help="V2 infer URL of Handoff serving with skops; {model} becomes logreg or forest",
    )
    p.add_argument(
        "--handoff-onnx-url",
        default=os.environ.get("HANDOFF_ONNX_URL"),
        help="V2 infer URL of Handoff serving with ONNX; {model} becomes logreg or forest",
    )
    p.add_argument("--models", default=",".join(MODELS), help="which of logreg,forest")
    p.add_argument(
        "--mlflow-workers",
        type=int,
        default=1,
        help="uvicorn workers of mlflow models serve (its default: 1); match c.Serving.workers",
    )
    p.add_argument("--dir", default=None, help="where to make the temp dir (default: $TMPDIR)")
    p.add_argument("--out", default=str(HERE / "results" / "serve.json"))
    args = p.parse_args(argv)
    args.reps = 200 if args.quick else 2000
    args.requests = 400 if args.quick else 4000

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="handoff-bench-serve-", dir=args.dir))
    rep = Report()
    rep.data["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "args": vars(args),
    }
    load0 = os.getloadavg()
    rep.data["machine"]["loadavg_start"] = load0
    print(f"Serving benchmark on {platform.node()} ({os.cpu_count()} CPUs), temp dir {tmp}")
    running: list = []
    try:
        rep.note(
            f"mlflow models serve runs {args.mlflow_workers} worker(s); throughput at "
            f"c={CONCURRENCY} compares fairly only with as many Handoff serving workers."
        )
        X, y, models = make_models()
        args.handoff = {}
        if not args.skip_handoff:
            bench_handoff(rep, X, y, models, tmp, args, running)
        rep.data["models"] = {}
        for name in args.models.split(","):
            rep.data["models"][name] = bench_model(rep, name, models[name], X, tmp, args)
        rep.section("Issue 11 targets measured elsewhere")
        rep.row(
            "alarm -> rolled back",
            "-",
            rep.target("alarm_to_rolled_back", "<= 1 s", None, None)
            + " (the guardrail tick: bench/guardrails.py)",
        )
    finally:
        import shutil

        for dep in running:
            dep.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rep.finish("Serving benchmark summary (loopback, this machine)", t_start, load0, args.out)
    print("\nTargets (issue 11):")
    for key, t in rep.data["targets"].items():
        measured = t["measured"]
        shown = "-" if measured is None else f"{measured:.4g}"
        print(f"  {verdict(t['met']):<6} {key:<40} {t['target']:<10} measured {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
