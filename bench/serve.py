"""Serving benchmark: a LogisticRegression and a 200-tree RandomForest (scikit-learn's bundled
breast-cancer data), served side by side in one run:

- direct ``predict`` in this process (the floor);
- onnxruntime directly, on the graph ``handoff_agent.onnx_convert`` makes (``OnnxBackend``);
- ``mlflow models serve --env-manager local`` on the same model (the anchor);
- Handoff's model server on the scikit-learn (skops) and ONNX backends: pass their V2 infer
  URLs (below); without them those rows say "not measured".

It measures single-row p50/p99 at concurrency 1 and throughput at concurrency 16, and prints
ratios (targets from issue 11: Handoff p50 <= 1/2 MLflow's; the ONNX backend >= 5x faster than
MLflow for the forest, single row). HTTP is driven by ``handoff_agent.loadtest``, the same
client the deploy gate uses, over keep-alive connections on loopback.

    python bench/serve.py                        # everything (about 1-2 minutes, 2 cores)
    python bench/serve.py --quick --skip-mlflow  # fewer requests, no MLflow
    python bench/serve.py --handoff-skops-url 'http://127.0.0.1:PORT/v2/models/bench-{model}/infer'
                          --handoff-onnx-url  '…'   # {model} is "logreg" or "forest"
    (or HANDOFF_SKOPS_URL / HANDOFF_ONNX_URL; HANDOFF_TOKEN is sent as the token)

Every process it starts is stopped in a finally block; its files live in one temp directory
that is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    MLFLOW_ENV,
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


def make_models() -> tuple[object, dict]:
    """The data as a DataFrame, and the two fitted models."""
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
    return X, models


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


# SLOT (Handoff, scikit-learn backend): a V2 infer URL of Handoff's model server serving
# this model with the skops backend. Until the server deploys the bench models itself, pass
# --handoff-skops-url; then replace the URL argument with a deployment made here.
def measure_handoff_skops(url: str | None, X, args) -> dict | None:
    return measure_http(url, X, args, "v2", _handoff_headers()) if url else None


# SLOT (Handoff, ONNX backend): the same, for a version the server serves with OnnxBackend.
def measure_handoff_onnx(url: str | None, X, args) -> dict | None:
    return measure_http(url, X, args, "v2", _handoff_headers()) if url else None


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


def _url(template: str | None, name: str) -> str | None:
    return template.replace("{model}", name) if template else None


def bench_model(rep: Report, name: str, model, X, tmp: Path, args) -> dict:
    from handoff_agent import onnx_convert
    from handoff_agent.serving.onnx_backend import OnnxBackend

    title = {"logreg": "LogisticRegression (scaled)", "forest": "RandomForest, 200 trees"}[name]
    rep.section(f"{name}: {title}, single row p50 / p99 at c=1, rows/s at c={CONCURRENCY}")
    results: dict = {}
    results["direct"] = in_process(model.predict, X, args)

    data, _meta = onnx_convert.to_onnx(model, X, "classification")
    backend = OnnxBackend(data)
    same = backend.predict(X)["predict"] == model.predict(X).tolist()
    results["onnxruntime"] = in_process(backend.predict, X, args)
    results["onnxruntime"]["labels_equal"] = same

    results["handoff_skops"] = measure_handoff_skops(_url(args.handoff_skops_url, name), X, args)
    results["handoff_onnx"] = measure_handoff_onnx(_url(args.handoff_onnx_url, name), X, args)
    results["mlflow"] = None if args.skip_mlflow else measure_mlflow(model, X, tmp, name, args)

    labels = {
        "direct": "direct predict (in process)",
        "onnxruntime": "onnxruntime, OnnxBackend (in process)",
        "handoff_skops": "Handoff V2, skops backend",
        "handoff_onnx": "Handoff V2, ONNX backend",
        "mlflow": "mlflow models serve (/invocations)",
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
    # What serving adds over each backend's own predict: skops over direct predict, ONNX over
    # onnxruntime called directly.
    for key, floor in (("handoff_skops", direct), ("handoff_onnx", ort)):
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
    r, direct = results["handoff_skops"], results["direct"]
    overhead = r["p50"] - direct["p50"] if r else None
    rep.row(
        "target: skops overhead over direct <= 0.5 ms",
        fmt_s(overhead) if overhead is not None else "-",
        rep.target(
            f"{name}_skops_overhead", "<= 0.5 ms", overhead, overhead <= 5e-4 if r else None
        ),
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
    try:
        rep.note(
            f"mlflow models serve runs {args.mlflow_workers} worker(s); throughput at "
            f"c={CONCURRENCY} compares fairly only with as many Handoff serving workers."
        )
        X, models = make_models()
        rep.data["models"] = {}
        for name in args.models.split(","):
            rep.data["models"][name] = bench_model(rep, name, models[name], X, tmp, args)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    rep.finish("Serving benchmark summary (loopback, this machine)", t_start, load0, args.out)
    print("Targets:", ", ".join(f"{k} {verdict(v['met'])}" for k, v in rep.data["targets"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
