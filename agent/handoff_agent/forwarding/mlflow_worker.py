"""Register one version in an MLflow Model Registry, in a worker process.

Run as ``python -I -m handoff_agent.forwarding.mlflow_worker`` by the ``mlflow`` destination:
registering means loading the model, and the agent never unpickles. It reads one JSON job, with
the bundle and report as open files (verified by the agent's blob store), on stdin
(``sandbox.receive_job``) and writes one JSON result on its protocol channel:
``{"ok": true, "name", "version", "run_id"}`` or
``{"ok": false, "retryable": bool, "error": "..."}``.

Idempotent per delivery id: the run is tagged with it, and so is the registered version (the
tags are set when the version is created), so a retry finds the earlier attempt's run and
version instead of registering a second one.

mlflow comes from the ``mlflow`` extra and is imported only here, in this worker: no default
path (push, checks, hand-off to central, serving) runs it.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
import tarfile
import tempfile

DELIVERY_TAG = "handoff.delivery_id"
LOGGED_TAG = "handoff.logged_model_uri"
MAX_TAG = 4000  # MLflow caps tag values at 5000 characters (8000 on newer servers)
# MLflow error codes that another attempt cannot fix; anything else is retried.
REFUSALS = {
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "INVALID_STATE",
    "RESOURCE_LIMIT_EXCEEDED",
}


class Refused(Exception):
    """A failure no retry can fix: the delivery goes to dead-letter with this message."""


def load_model(job: dict):
    from ..worker import _load_model, explain_load_error

    try:
        with tarfile.open(job["bundle"], mode="r:") as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())
            return _load_model(tar, manifest, job.get("trusted_types")), manifest
    except Exception as e:
        raise Refused(explain_load_error(e)) from e


def _tag(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_TAG else text[: MAX_TAG - 1] + "…"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _log_kwargs(fmt: str, sklearn_version: str) -> dict:
    import mlflow.sklearn

    params = inspect.signature(mlflow.sklearn.log_model).parameters
    kw = {
        "serialization_format": fmt,
        # Explicit: MLflow's inference of requirements imports and probes the model again.
        "pip_requirements": [f"scikit-learn=={sklearn_version}"]
        + (["cloudpickle"] if fmt == "cloudpickle" else []),
    }
    kw["name" if "name" in params else "artifact_path"] = "model"
    return kw


def check_loggable(model, fmt: str, sklearn_version: str, scratch: str) -> None:
    """Serialize locally first, so a model MLflow cannot log is told apart from a down server."""
    import mlflow.sklearn

    kw = _log_kwargs(fmt, sklearn_version)
    kw.pop("name", None)
    kw.pop("artifact_path", None)
    try:
        mlflow.sklearn.save_model(model, os.path.join(scratch, "probe"), **kw)
    except Exception as e:
        raise Refused(
            f"MLflow cannot log this model with serialization_format={fmt!r}: "
            f"{type(e).__name__}: {e}"
        ) from e
    finally:
        shutil.rmtree(os.path.join(scratch, "probe"), ignore_errors=True)


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created meanwhile by another worker
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_version(client, name: str, delivery_id: str):
    """The version an earlier attempt of this delivery registered, if any."""
    from mlflow.exceptions import MlflowException  # the `mlflow` extra (see the module docstring)

    try:
        found = client.search_model_versions(
            f"name = '{_quote(name)}' and tags.`{DELIVERY_TAG}` = '{_quote(delivery_id)}'"
        )
    except MlflowException as e:
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        # Older servers cannot filter versions by tag: filter here instead.
        found = [
            v
            for v in client.search_model_versions(f"name = '{_quote(name)}'")
            if (v.tags or {}).get(DELIVERY_TAG) == delivery_id
        ]
    return min(found, key=lambda v: int(v.version)) if found else None


def register(job: dict, scratch: str) -> dict:
    # mlflow is the optional `mlflow` extra: only this destination's worker imports it, and
    # only when c.HandoffAgent.forward_to names mlflow (the default is central alone).
    import mlflow
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    model, manifest = load_model(job)
    import sklearn

    fmt = job.get("serialization_format") or "cloudpickle"
    check_loggable(model, fmt, sklearn.__version__, scratch)

    mlflow.set_tracking_uri(job["tracking_uri"])
    client = MlflowClient(job["tracking_uri"])
    name, did = job["registered_model_name"], job["delivery_id"]
    version_tags = {k: _tag(v) for k, v in job["version_tags"].items()}
    version_tags[DELIVERY_TAG] = did

    existing = find_version(client, name, did)
    if existing is not None:
        for k, v in version_tags.items():
            if (existing.tags or {}).get(k) != v:
                client.set_model_version_tag(name, existing.version, k, v)
        return {
            "ok": True,
            "name": name,
            "version": int(existing.version),
            "run_id": existing.run_id,
        }

    exp_id = _experiment_id(client, job["experiment"])
    runs = client.search_runs(
        [exp_id], filter_string=f"tags.`{DELIVERY_TAG}` = '{_quote(did)}'", max_results=20
    )
    logged = [r for r in runs if r.data.tags.get(LOGGED_TAG)]
    for r in runs:  # a worker killed mid-log leaves its run open: close it as failed
        if not r.data.tags.get(LOGGED_TAG) and r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, "FAILED")
    if logged:  # an earlier attempt logged the model but died before registering it
        run = logged[0]
        model_uri = run.data.tags[LOGGED_TAG]
    else:
        run_tags = {k: _tag(v) for k, v in job["run_tags"].items()}
        run_tags[DELIVERY_TAG] = did
        with mlflow.start_run(
            experiment_id=exp_id, run_name=job.get("run_name"), tags=run_tags
        ) as active:
            info = mlflow.sklearn.log_model(model, **_log_kwargs(fmt, sklearn.__version__))
            report = job.get("report")
            if report:
                html = os.path.join(scratch, "report.html")
                shutil.copyfile(report["path"], html)
                mlflow.log_artifact(html, artifact_path="handoff")
            manifest_path = os.path.join(scratch, "manifest.json")
            with open(manifest_path, "w") as f:
                json.dump(manifest, f, indent=1, sort_keys=True)
            mlflow.log_artifact(manifest_path, artifact_path="handoff")
            model_uri = info.model_uri
            mlflow.set_tag(LOGGED_TAG, model_uri)
        run = client.get_run(active.info.run_id)

    mv = mlflow.register_model(model_uri, name, tags=version_tags)
    return {"ok": True, "name": name, "version": int(mv.version), "run_id": run.info.run_id}


def classify(exc: BaseException) -> dict:
    if isinstance(exc, Refused):
        return {"ok": False, "retryable": False, "error": str(exc)}
    if isinstance(exc, ImportError) and getattr(exc, "name", "") == "mlflow":
        return {
            "ok": False,
            "retryable": False,
            "error": "mlflow is not installed where the agent runs; "
            "install it with `pip install 'jupyter-handoff[mlflow]'`",
        }
    code = getattr(exc, "error_code", "")
    text = f"{type(exc).__name__}: {exc}"
    if code in REFUSALS:
        return {"ok": False, "retryable": False, "error": f"MLflow refused: {text}"}
    return {"ok": False, "retryable": True, "error": f"MLflow: {text}"}


def _register_once(job: dict) -> dict:
    os.environ.update(job.pop("env", None) or {})  # settings, not secrets: they come with the job
    scratch = tempfile.mkdtemp(prefix="handoff-mlflow-")
    try:
        return register(job, scratch)
    except BaseException as e:  # every failure becomes a message for the analyst
        return classify(e)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    from ..sandbox import serve_one_job

    return serve_one_job(_register_once)


if __name__ == "__main__":
    sys.exit(main())
