"""MLflow side of bench/checks.py: ``mlflow.evaluate`` on a pickled model and evaluation frame.

Run in its own process (telemetry off) so MLflow's imports, threads and logging stay out of
the process that times Handoff. The model is logged once (untimed, plain pickle, explicit pip
requirements); each timed call is ``mlflow.evaluate(model_uri, ...)`` inside its own run, so
it loads the model from the artifact store, as a Handoff worker loads it from the bundle.
Prints one JSON object on its last stdout line.

    python bench/_mlflow_eval.py --model m.pkl --data eval.pkl --store DIR --reps 3
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
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mlflow_helper import _import_mlflow, _setup_store  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="pickled DataFrame: features and the target")
    p.add_argument("--target", default="label")
    p.add_argument("--store", required=True)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)

    mlflow, import_s = _import_mlflow()
    with open(args.model, "rb") as f:
        model = pickle.load(f)
    with open(args.data, "rb") as f:
        data = pickle.load(f)
    _setup_store(mlflow, args.store)
    t = time.perf_counter()
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="pickle",
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(),
    )
    log_model_s = time.perf_counter() - t

    def one():
        with mlflow.start_run():
            t = time.perf_counter()
            result = mlflow.evaluate(
                info.model_uri,
                data,
                targets=args.target,
                model_type="classifier",
                evaluators=["default"],
            )
            return time.perf_counter() - t, result

    warm, result = one()  # lazy imports, first run's tables: not counted
    times = [one()[0] for _ in range(args.reps)]
    try:
        import shap  # noqa: F401

        shap_installed = True
    except ImportError:
        shap_installed = False
    out = {
        "mlflow_version": mlflow.__version__,
        "import_s": import_s,
        "log_model_s": log_model_s,
        "warmup_s": warm,
        "times": times,
        "median": statistics.median(times),
        "metrics": sorted(result.metrics),
        "artifacts": sorted(result.artifacts),
        "shap_installed": shap_installed,
    }
    sys.stdout.flush()
    print("\n" + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
