"""MLflow side of the benchmark, run in its own process by bench/push.py.

Keeping MLflow in a subprocess keeps its imports, threads and logging out of the process that
times Handoff, and lets us report MLflow's import cost separately from its per-call cost.
Each subcommand prints one JSON object on its last stdout line.

    push      log_model + register_model into a local sqlite store (default and fastest)
    populate  create a registered model with N versions in a sqlite store (in-process client)
    query     time get_registered_model / search_model_versions against a running server
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import time
import warnings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
warnings.filterwarnings("ignore")


def _import_mlflow():
    t0 = time.perf_counter()
    import mlflow
    import mlflow.sklearn

    return mlflow, time.perf_counter() - t0


def _setup_store(mlflow, store: str) -> None:
    os.makedirs(store, exist_ok=True)
    uri = f"sqlite:///{os.path.join(store, 'mlflow.db')}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = "bench"
    if mlflow.get_experiment_by_name(name) is None:
        art = os.path.join(store, "artifacts")
        os.makedirs(art, exist_ok=True)
        mlflow.create_experiment(name, artifact_location=f"file://{art}")
    mlflow.set_experiment(name)


def cmd_push(args) -> dict:
    mlflow, import_s = _import_mlflow()
    with open(args.model, "rb") as f:
        model = pickle.load(f)
    t0 = time.perf_counter()
    _setup_store(mlflow, args.store)
    setup_s = time.perf_counter() - t0
    # The fastest configuration names its requirements, so MLflow skips inferring them
    # (which otherwise loads the model in a subprocess to see what it imports).
    fast_reqs = mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=True)
    modes = {
        # MLflow 3's default format is skops, which refuses a forest's Tree type unless it is
        # trusted explicitly: this is the least a default user has to add.
        "default": {"skops_trusted_types": ["sklearn.tree._tree.Tree"]},
        # MLflow 2's default: cloudpickle, requirements inferred.
        "default_cloudpickle": {"serialization_format": "cloudpickle"},
        # Fastest: plain pickle (like Handoff), requirements named, so no inference.
        "fast": {"serialization_format": "pickle", "pip_requirements": fast_reqs},
        "fast_cloudpickle": {"serialization_format": "cloudpickle", "pip_requirements": fast_reqs},
    }

    def one(mode: str, rep: int) -> float:
        model._bench_rep = (mode, rep)  # new bytes each time, like a re-trained model
        kwargs = modes[mode]
        t = time.perf_counter()
        info = mlflow.sklearn.log_model(model, name="model", **kwargs)
        mlflow.register_model(info.model_uri, f"bench-rf-{mode}")
        return time.perf_counter() - t

    out = {"import_s": import_s, "setup_s": setup_s, "pip_requirements": fast_reqs}
    for mode in args.modes.split(","):
        warm = one(mode, -1)  # first call: lazy imports, table creation; not counted
        times = [one(mode, i) for i in range(args.reps)]
        out[mode] = {
            "kwargs": repr(modes[mode]),
            "warmup_s": warm,
            "times": times,
            "median": statistics.median(times),
        }
    return out


def cmd_populate(args) -> dict:
    mlflow, import_s = _import_mlflow()
    from mlflow import MlflowClient

    t0 = time.perf_counter()
    _setup_store(mlflow, args.store)
    client = MlflowClient()
    client.create_registered_model(args.name)
    for i in range(args.versions):
        client.create_model_version(args.name, source=f"file:///nonexistent/model-{i}")
    return {"import_s": import_s, "populate_s": time.perf_counter() - t0}


def cmd_query(args) -> dict:
    _, import_s = _import_mlflow()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=args.url, registry_uri=args.url)
    out = {"import_s": import_s}
    calls = {
        "get_registered_model": lambda: client.get_registered_model(args.name),
        "search_model_versions_100": lambda: client.search_model_versions(
            f"name='{args.name}'", max_results=100
        ),
    }
    for label, fn in calls.items():
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[label] = times
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("push")
    a.add_argument("--model", required=True)
    a.add_argument("--store", required=True)
    a.add_argument("--reps", type=int, default=3)
    a.add_argument("--modes", default="fast,default")
    a = sub.add_parser("populate")
    a.add_argument("--store", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--versions", type=int, default=1000)
    a = sub.add_parser("query")
    a.add_argument("--url", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--reps", type=int, default=200)
    a.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    result = {"push": cmd_push, "populate": cmd_populate, "query": cmd_query}[args.cmd](args)
    sys.stdout.flush()
    print("\n" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
