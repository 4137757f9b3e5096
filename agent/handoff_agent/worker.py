"""The check worker: a clean subprocess that loads a bundle's model and runs checks on it.

It is the only place a model is unpickled. It reads one JSON job (and the job's open files: the
bundles, which the agent's blob store verified against their digests) on
stdin, a socket, and writes one JSON line per event on its protocol channel, the original
stdout. It never sends pickles back. Started by ``sandbox.Sandbox.spawn`` as
``python -I -m handoff_agent.worker``, sandboxed, with a scrubbed environment.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import sys
import tarfile
import time
import traceback

from .parquet_bytes import read_frame

_protocol = sys.stdout


def claim_stdout():
    """Keep stdout for our JSON lines; whatever the model prints goes to stderr."""
    global _protocol
    _protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return _protocol


def exit_now(code: int) -> None:
    """End without the interpreter's teardown: pyarrow's thread pools can abort a process at
    exit ("terminate called without an active exception", apache/arrow#34314) after its
    results were sent, and a killed-looking worker is not what happened."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _emit(event: dict) -> None:
    _protocol.write(json.dumps(event, default=str) + "\n")
    _protocol.flush()


def _load_model(tar: tarfile.TarFile, manifest: dict, trusted: list[str] | None):
    from .manifest import model_member

    if manifest["serialization"] == "skops":
        from .trust import load_skops

        # Only the agent's list (default plus added), never what the file asks for.
        return load_skops(tar.extractfile(model_member("skops")).read(), trusted or ())
    import pickle

    return pickle.loads(tar.extractfile(model_member("pickle")).read())


def _load_data(tar: tarfile.TarFile) -> dict:
    """The pushed data as pandas. Text input (the manifest's ``signature.input``) comes back
    as a Series of strings, as a text pipeline takes it; checks feed models ``ctx.as_input``."""
    from .bundle import DATA_MEMBERS

    names = set(tar.getnames())
    manifest = json.loads(tar.extractfile("manifest.json").read())
    text = ((manifest.get("signature") or {}).get("input")) == "text"
    out = {}
    for member, field in DATA_MEMBERS.items():
        if member in names:
            frame = read_frame(tar.extractfile(member).read())
            one_column = field.endswith("y") or (text and field in ("X", "reference_X"))
            out[field] = frame.iloc[:, 0] if one_column else frame
    return out


def _revalidation_data(spec: dict, data: dict) -> dict:
    """A revalidation's rows (``job["data"]``: a Parquet file and its target column) in place
    of the pushed evaluation X and y; the pushed reference stays what drift compares to.
    The features are the pushed X's columns when the rows have them all."""
    import pandas as pd

    frame = pd.read_parquet(spec["file"])
    y = frame[spec["target"]]
    X = frame.drop(columns=[spec["target"]])
    pushed = data.get("X")
    if isinstance(pushed, pd.DataFrame) and set(pushed.columns) <= set(X.columns):
        X = X[list(pushed.columns)]
    return {**data, "X": X, "y": y}


def explain_load_error(exc: BaseException) -> str:
    """Say why a model that worked in the notebook cannot load elsewhere."""
    text = f"{type(exc).__name__}: {exc}"
    missing = re.search(r"Can't get attribute '([^']+)'", text)
    if missing:
        return (
            f"The model does not load in a clean process: it uses `{missing.group(1)}`, which "
            "was defined in the notebook, not in an importable module. Move that class or "
            "function into a .py module installed in the environment, then push again."
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        # a module the kernel imports (a .py file beside the notebook, a package installed
        # only where the kernel runs) that the agent's Python does not have
        return (
            f"The model does not load in a clean process: it needs the module "
            f"`{exc.name}`, which the agent's Python cannot import (a .py file beside the "
            "notebook, or a package installed only where the kernel runs). Install it where "
            "the agent runs (your own code: make it a package and `pip install -e .`), then "
            "push again."
        )
    if isinstance(exc, (AttributeError, ModuleNotFoundError)):
        return (
            f"The model does not load in a clean process ({text}). It depends on code that "
            "exists only in the notebook, such as a class or function defined in a cell. "
            "Move that code into an importable module (a .py file installed in the "
            "environment), then push again."
        )
    return f"The model does not load in a clean process ({text})."


def _warm_imports() -> None:
    """Import what nearly every check needs before the job arrives (see CheckRunner.warm)."""
    import matplotlib
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.base
    import sklearn.ensemble
    import sklearn.inspection
    import sklearn.metrics  # noqa: F401

    matplotlib.use("Agg")
    import matplotlib.pyplot

    _warm_parquet()


def _warm_parquet() -> None:
    """Read a one-row Parquet file as ``_load_data`` reads the pushed data: the first read
    imports pyarrow's dataset and pandas modules (about 25 ms), which then no longer delay
    a version's first check."""
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame({"x": [0.0]}).to_parquet(buf, index=False)
    read_frame(buf.getvalue())


def _load_champion(spec: dict | None, trusted) -> tuple[object, dict | None, str | None]:
    if not spec:
        return None, None, None
    if spec.get("error"):  # the agent could not hand its bundle over
        return None, None, f"champion version {spec.get('number')} did not load: {spec['error']}"
    try:
        with tarfile.open(spec["bundle"], mode="r:") as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())
            return _load_model(tar, manifest, trusted), manifest, None
    except BaseException as e:
        return None, None, f"champion version {spec.get('number')} did not load: {e}"


def _settings(check, given: dict) -> dict:
    """Defaults, then the agent's settings."""
    from .check_settings import setting_key

    defaults = getattr(check, "defaults", {}) or {}
    return {**defaults, **{setting_key(defaults, k): v for k, v in given.items()}}


class _Misconfigured(Exception):
    """The check's settings do not fit it: it does not run, and says why."""


def settings_problem(name: str, check, given: dict) -> str | None:
    """Why ``given`` (the agent's thresholds, then the push's --gate) does not fit the
    check's declared ``defaults`` (``check_settings``). A push's --gate is refused before
    this, when the agent could learn the settings; a typo in the agent's thresholds must
    not pass as if it were applied either."""
    from .check_settings import settings_problem as problem

    where = "from --gate or the agent's thresholds"
    return problem(name, getattr(check, "defaults", None), given, where)


def main() -> int:
    with contextlib.suppress(ImportError):
        _warm_imports()
    from .sandbox import confine, receive_job

    job = receive_job()
    claim_stdout()
    from .plugins import CheckContext, CheckResult, compares_champion

    confine(job.get("limits"))  # after our imports, before any model code

    # The champion is loaded for the first check that compares with it, not before: a worker
    # whose checks never read it (explainability's, beside a comparison) starts sooner and
    # holds one model in its memory limit, not two.
    champion_loaded: tuple | None = None

    with tarfile.open(job["bundle"], mode="r:") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        t0 = time.perf_counter()
        try:
            model = _load_model(tar, manifest, job.get("trusted_types"))
            load_error = None
        except BaseException as e:
            model, load_error = None, explain_load_error(e)
        load_time = time.perf_counter() - t0
        data = _load_data(tar) if load_error is None else {}
        if load_error is None and job.get("data"):
            data = _revalidation_data(job["data"], data)

    for spec in job["checks"]:
        _emit({"event": "start", "id": spec["id"]})
        t0 = time.perf_counter()
        try:
            if load_error is not None:
                result = CheckResult(
                    "fail" if spec["name"] == "loads" else "skip",
                    load_error if spec["name"] == "loads" else "Skipped: the model did not load.",
                )
            else:
                module, _, attr = spec["entry_point"].partition(":")
                check = getattr(importlib.import_module(module), attr)
                check = check() if isinstance(check, type) else check
                problem = settings_problem(spec["name"], check, spec.get("config", {}))
                if problem:
                    raise _Misconfigured(problem)
                champion = champion_manifest = champion_note = None
                if compares_champion(check):
                    if champion_loaded is None:
                        champion_loaded = _load_champion(
                            job.get("champion"), job.get("trusted_types")
                        )
                    champion, champion_manifest, champion_note = champion_loaded
                ctx = CheckContext(
                    model=model,
                    manifest=manifest,
                    config=_settings(check, spec.get("config", {})),
                    task=manifest.get("task"),
                    champion=champion,
                    champion_manifest=champion_manifest,
                    previous_manifest=job.get("previous_manifest"),
                    **data,
                )
                missing = [n for n in getattr(check, "needs", ()) if getattr(ctx, n) is None]
                if missing:
                    result = CheckResult("skip", f"Skipped: no {', '.join(missing)} was pushed.")
                else:
                    result = check.run(ctx)
                    if spec["name"] == "loads":
                        result.metrics.setdefault("load_seconds", round(load_time, 4))
                    if champion_note and spec["name"] == "performance":
                        result.message = f"{result.message} (Note: {champion_note}.)"
                        if result.status == "pass":  # judged without the comparison it gates
                            result.status = "warn"
        except _Misconfigured as e:
            result = CheckResult("error", str(e))
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            result = CheckResult("error", f"The check raised {type(e).__name__}: {first}")
            result.tables["traceback"] = [
                {"line": ln} for ln in traceback.format_exc().splitlines()
            ]
        out = result.to_json() if hasattr(result, "to_json") else dict(result)
        _emit({"event": "result", "id": spec["id"], **out, "duration": time.perf_counter() - t0})
    return 0


if __name__ == "__main__":
    os.environ.pop("HANDOFF_TOKEN", None)
    exit_now(main())
