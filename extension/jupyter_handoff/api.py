"""The Python API. The magics are a thin layer over these functions."""

from __future__ import annotations

import html
import os

from handoff_agent.shell import visible
from handoff_agent.vocabulary import BETTER_COLOUR, MAX_KEEP, VERDICT_STATUS, WORSE_COLOUR

from .client import connect
from .errors import HandoffUsageError, install
from .refs import checked_name as _checked_name
from .refs import parse_ref, trust_wait
from .refs import version_number as _version_number
from .report_doc import Report
from .widgets.style import stage_text

STATUS_COLOURS = {
    VERDICT_STATUS["pass"]: BETTER_COLOUR,
    VERDICT_STATUS["fail"]: WORSE_COLOUR,
    "checking": "#9a6700",
}


class Version:
    """One pushed version, as the agent knows it. ``refresh()`` asks again."""

    def __init__(self, data: dict, client=None):
        self._data = data
        self._client = client
        # what central waits for before it moves on (``review_view.waiting_for``), read by
        # ``get`` and ``refresh``: the text and HTML say it where no widget runs
        self.waiting = ""

    name = property(lambda self: self._data.get("model") or self._data.get("name"))
    number = property(lambda self: self._data.get("number") or self._data.get("version"))
    digest = property(lambda self: self._data.get("digest"))
    status = property(lambda self: self._data.get("status"))
    checks = property(lambda self: self._data.get("checks", []))
    manifest = property(lambda self: self._data.get("manifest", {}))
    lineage = property(lambda self: self._data.get("lineage", []))
    verdict = property(lambda self: self._data.get("verdict") or {})
    stage = property(lambda self: self._data.get("stage"))

    def widget(self, follow: bool = True):
        """The live view (ipywidgets): a row per check, progress, verdict and report."""
        from .widgets.push import PushWidget

        return PushWidget(self, client=self._client, follow=follow)

    def _ipython_display_(self):
        from .widgets.display import show

        show(self, self.widget)

    def refresh(self) -> Version:
        client = self._client or connect(start=False)
        self._data = client.get(f"/api/v1/models/{self.name}/versions/{self.number}")
        return self._read_waiting(client)

    def _read_waiting(self, client) -> Version:
        from .review_view import waiting_for

        self.waiting = waiting_for(self.name, self._data, client)
        return self

    def wait(self, timeout: float = 300.0) -> Version:
        """Block until every check has finished and the report is written (or ``timeout``)."""
        import time

        deadline = time.monotonic() + timeout
        while self.refresh().status in ("checking", "pushed") or not self._data.get("reports"):
            if self.status == "pushed" and not self.checks:
                break
            if time.monotonic() > deadline:
                raise HandoffUsageError(
                    f"{self.name}:{self.number} is still {self.status} after {timeout:.0f} s.",
                    "Its checks may be slow; the push widget shows which one is running.",
                )
            time.sleep(0.25)
        from .widgets.display import rewrite_settled

        rewrite_settled(self.name, self.number)  # before a headless run stops the kernel
        return self

    def __repr__(self) -> str:
        """The text form (a terminal, a notebook converted to text): the status and each
        check's result, as the HTML shows them."""
        lines = [f"Version({self.name!r}, {self.number}, status={self.status!r})"]
        if self.stage:
            lines[0] += f" at stage {stage_text(self._data)}"
        if trust_wait(self._data):
            lines.append(f"  {trust_wait(self._data)}")
        if self.waiting:
            lines.append(f"  {visible(self.waiting)}")
        width = max((len(str(c["name"])) for c in self.checks), default=0)
        for c in self.checks:
            message = (c.get("message") or "").splitlines()[:1]
            lines.append(f"  {c['name']:<{width}}  {c['status']:<5}  {''.join(message)}".rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        colour = STATUS_COLOURS.get(self.status, "#57606a")
        rows = "".join(
            f"<tr><td>{e(c['name'])}</td><td>{e(str(c['status']))}</td>"
            f"<td>{e(c.get('message') or '')}</td></tr>"
            for c in self.checks
        )
        checks = (
            f"<table><tr><th>check</th><th>status</th><th>result</th></tr>{rows}</table>"
            if rows
            else ""
        )
        return (
            f"<div><b>{e(str(self.name))}</b> version <b>{e(str(self.number))}</b> "
            f"<span style='color:{colour}'>{e(str(self.status))}</span>"
            f"<br><code>sha256:{e(str(self.digest))[:16]}…</code>"
            f"{'<br>' + e(trust_wait(self._data)) if trust_wait(self._data) else ''}"
            f"{'<br>' + e(visible(self.waiting)) if self.waiting else ''}{checks}</div>"
        )


def _shell():
    try:
        from IPython import get_ipython

        return get_ipython()
    except ImportError:  # pragma: no cover
        return None


install(_shell())  # used from a cell without %load_ext: errors still print as one line


def _provenance_inputs() -> tuple[str | None, str | None]:
    ip = _shell()
    notebook = os.environ.get("JPY_SESSION_NAME")
    cell = None
    if ip is not None:
        notebook = ip.user_ns.get("__session__") or notebook
        history = ip.user_ns.get("_ih") or []
        cell = history[-1] if history else None
    return notebook, cell


def push(
    model,
    name: str | None = None,
    X=None,
    y=None,
    sensitive=None,
    reference=None,
    message: str = "",
    tags: dict | None = None,
    format: str | None = None,
    gate: dict | None = None,
    **unknown,
) -> Version:
    """Hand ``model`` to the agent as the next version of ``name``, like ``%mlops push``:
    ``push(clf, "churn", X=X_test, y=y_test, sensitive=["gender"])``. ``sensitive`` takes
    column names of X, or a Series or array aligned with X. Returns at once; the checks go on
    in the agent."""
    from handoff_agent import manifest as shape

    from . import bundle_writer as bw
    from .config import settings

    if unknown:
        raise HandoffUsageError(
            f"push() has no option {sorted(unknown)[0]!r}.",
            "It takes: model, name, X, y, sensitive, reference, message, tags, format, gate. "
            "e.g. push(clf, 'churn', X=X_test, y=y_test).",
        )
    if name is None:
        raise HandoffUsageError(
            "push() needs a name for the model.", "e.g. push(clf, 'churn', X=X_test, y=y_test)."
        )
    for option, value, example in (
        ("tags", tags, "tags={'team': 'risk'}"),
        ("gate", gate, "gate={'fairness.max_dp_diff': 0.2}"),
    ):
        if value is not None and not isinstance(value, dict):
            raise HandoffUsageError(
                f"{option} must be a dict, not a {type(value).__name__}.", f"e.g. {example}."
            )
    cfg = settings()
    _checked_name(name)
    fmt = format or cfg.format
    if fmt not in ("pickle", "skops"):
        raise HandoffUsageError(f"Unknown format {fmt!r}.", "Use --format pickle or skops.")
    bw.check_model(model)
    notebook, cell = _provenance_inputs()
    fields = dict(
        name=name,
        serialization=fmt,
        flavor=type(model).__module__.split(".")[0],
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        task=_task(model),
        params=bw.json_safe_params(model),
        message=message,
        tags=tags,
        gate=gate,
        provenance=bw.provenance(notebook, cell),
    )

    def checked(signature: dict, fps: dict) -> dict:
        """The manifest, held to the agent's own rules before it is sent."""
        manifest = shape.build(**fields, signature=signature, data=fps)
        try:
            shape.check_fields(manifest)
        except shape.ManifestError as e:
            raise HandoffUsageError(
                e.message, "Check the message and tags given to push."
            ) from None
        return manifest

    checked({}, {})  # the user's fields, before anything is serialized or sent
    with _DataBeside(model, X, y, sensitive, reference, cfg) as data:
        member, blob = data.serialize(fmt)
        client = connect()

        def the_rest():  # called while the model's bytes are hashed
            members, fps, signature = data.result()
            return members, checked(signature, fps)

        _, body = client.push_written(
            name, lambda sink: bw.assemble({member: blob}, the_rest, sink=sink)
        )
    return Version(
        {
            "model": body["name"],
            "number": body["version"],
            "digest": body["digest"],
            "status": body.get("status"),
            "created": body.get("created"),
        },
        client,
    )


class _DataBeside:
    """The push's data, sampled and written as parquet on a thread while the model is
    serialized and then hashed: pyarrow and hashlib let go of the GIL, so a push with data
    costs little more than one without. The model goes into the bundle first; the data joins
    it when ready. A mistake in the data is the error the user sees, whatever else fails."""

    def __init__(self, model, X, y, sensitive, reference, cfg):
        from . import bundle_writer as bw
        from .data import fits, prepare

        self.model = model
        self._pool = self._future = None
        if X is not None:
            fits(X, model, bw.feature_names(model))
        if any(a is not None for a in (X, y, sensitive, reference)):
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="handoff-data")
            self._future = self._pool.submit(
                prepare,
                X,
                y,
                sensitive,
                reference,
                cfg.max_rows,
                cfg.reference_rows,
                bw.feature_names(model),
                _classes(model),
            )

    def serialize(self, fmt: str):
        from . import bundle_writer as bw

        try:
            found = bw.serialize_model(self.model, fmt)
        except BaseException:
            self._mistake(wait=True)
            raise
        # A small model gains nothing from going ahead of its data: the data is checked
        # before the agent is asked for anything. A big one goes ahead; a mistake in its
        # data found meanwhile ends the push before the agent keeps anything.
        self._mistake(wait=len(found[1]) < bw.PARALLEL_HASH)
        return found

    def result(self) -> tuple[dict, dict, dict]:
        """The data members, fingerprints and signature (all empty without data)."""
        return ({}, {}, {}) if self._future is None else self._future.result()

    def _mistake(self, wait: bool) -> None:
        future = self._future
        if future is not None and (wait or future.done()) and (e := future.exception()):
            raise e from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _classes(model):
    """A fitted classifier's labels, when it says (``classes_``); None otherwise."""
    try:
        return getattr(model, "classes_", None)
    except Exception:  # a property that raises on an unfitted or odd model
        return None


def _task(model) -> str | None:
    tags = getattr(model, "__sklearn_tags__", None)
    kind = None
    if callable(tags):
        try:
            kind = tags().estimator_type
        except Exception:
            kind = None
    kind = kind or getattr(model, "_estimator_type", None)
    return {"classifier": "classification", "regressor": "regression"}.get(kind)


def versions(name: str | None = None) -> list:
    """Models, or the versions of one model, newest first."""
    client = connect(start=False)
    if name is None:
        return client.get("/api/v1/models")["models"]
    if isinstance(name, str) and ":" in name:  # `%mlops versions churn:2`, meaning one
        raise HandoffUsageError(
            f"versions takes a model's name, not one version: {name!r}.",
            f"`%mlops versions {name.split(':')[0]}` lists them; `%mlops show {name}` shows "
            "that one.",
        )
    _checked_name(name)
    return [Version(v, client) for v in client.get(f"/api/v1/models/{name}/versions")["versions"]]


def get(name: str, number: int | None = None) -> Version:
    """One version with its manifest, lineage and checks: ``get("churn:2")`` or
    ``get("churn", 2)``, like ``%mlops show churn:2``; the latest when no number is given."""
    if isinstance(name, str) and ":" in name:
        if number is not None:
            raise HandoffUsageError(
                f"{name!r} already names a version; do not pass a number as well.",
                "Write get('churn:2') or get('churn', 2).",
            )
        name, number = parse_ref(name)
    number = None if number is None else _version_number(number, "e.g. get('churn', 2).")
    _checked_name(name)
    client = connect(start=False)
    if number is None:
        latest = client.get(f"/api/v1/models/{name}/versions?limit=1")["versions"]
        if not latest:
            raise HandoffUsageError(f"Model {name!r} has no versions.")
        number = latest[0]["number"]
    version = Version(client.get(f"/api/v1/models/{name}/versions/{number}"), client)
    return version._read_waiting(client)


def report(name: str, number: int | None = None, format: str = "html") -> Report:
    """The report of a version (the latest when ``number`` is None)."""
    version = get(name, number)  # "churn:2" is parsed there: its name is version.name
    client = connect(start=False)
    path = f"/api/v1/models/{version.name}/versions/{version.number}/report?format={format}"
    return Report(version.name, version.number, format, client.get_raw(path))


def compare(*refs, baseline: str | None = None):
    """Compare versions side by side from stored results: ``compare("churn:3", "churn:5")``,
    ``compare("churn")`` (latest against the champion) or ``compare("churn:prod")``."""
    from .comparison import compare as _compare

    return _compare(*refs, baseline=baseline)


def history(name: str, limit: int = 50):
    """The versions of ``name``, newest first: verdict, who and when, message, data, stage."""
    from .timeline import history as _history

    return _history(name, limit=limit)


def deployments(name: str | None = None):
    """Where each version of ``name`` serves at central, like ``%mlops deployments``; shown
    as a live widget. Every model that serves when ``name`` is None."""
    from .serving_calls import deployments as _deployments

    return _deployments(name)


def predict(name: str, data, version: int | None = None):
    """Try the deployed model, like ``%mlops predict``: ``predict("churn", X_test.head())``.
    Returns the predictions with the version and slot that answered."""
    from .serving_calls import predict as _predict

    return _predict(name, data, version=version)


class Lineage(dict):
    """Where data and versions came from and went. A dict, shown as a small table."""

    def __repr__(self) -> str:
        """The text form: what the HTML table lists, a line each."""
        if "dataset" in self:
            fp, n = self["dataset"]["fingerprint"][:12], len(self["versions"])
            lines = [f"Lineage(dataset {fp}…, {n} versions)"]
            lines += [
                f"  {v['model']}:{v['number']}  {v['role']}  {v['status']}  {v['stage'] or ''}"
                for v in self["versions"]
            ]
            return "\n".join(line.rstrip() for line in lines)
        parent = self.get("parent")
        lines = [f"Lineage({self['name']!r}, {self['version']}, stage={self.get('stage')!r})"]
        lines += [
            f"  {d['role']}: {d['dataset'][:16]} ({d.get('rows')} rows)" for d in self["data"]
        ]
        lines.append(
            f"  notebook: {self.get('notebook') or 'not recorded'}, "
            f"cell {(self.get('cell_hash') or '')[:12]}"
        )
        lines.append(
            f"  parent: {parent['name']}:{parent['version']}" if parent else "  parent: none"
        )
        stages = " → ".join(s["stage"] for s in self["stages"]) or "not forwarded"
        lines.append(f"  stages: {stages}")
        if trust_wait(self):
            lines.append(f"  {trust_wait(self)}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        if "dataset" in self:
            rows = "".join(
                f"<tr><td>{e(v['model'])}:{v['number']}</td><td>{e(v['role'])}</td>"
                f"<td>{e(str(v['status']))}</td><td>{e(str(v['stage'] or ''))}</td></tr>"
                for v in self["versions"]
            )
            head = "<tr><th>version</th><th>role</th><th>verdict</th><th>stage</th></tr>"
            fp = self["dataset"]["fingerprint"]
            return f"<b>dataset {e(fp[:16])}…</b><table>{head}{rows}</table>"
        data = "".join(
            f"<li>{e(d['role'])}: <code>{e(d['dataset'][:16])}</code> ({d.get('rows')} rows)</li>"
            for d in self["data"]
        )
        stages = " → ".join(e(s["stage"]) for s in self["stages"]) or "not forwarded"
        parent = self.get("parent")
        parent = f"{parent['name']}:{parent['version']}" if parent else "none"
        git = self.get("git") or {}
        return (
            f"<b>{e(self['name'])}:{self['version']}</b><ul>{data}"
            f"<li>notebook: {e(str(self.get('notebook') or 'not recorded'))}, cell "
            f"<code>{e(str(self.get('cell_hash') or '')[:12])}</code>"
            f"{', git ' + e(str(git.get('commit', ''))[:12]) if git else ''}</li>"
            f"<li>parent: {e(parent)}</li>"
            f"<li>stages: {stages}</li>"
            f"{'<li>' + e(trust_wait(self)) + '</li>' if trust_wait(self) else ''}</ul>"
        )


def forward(name: str, number: int | None = None, to: str = "central") -> dict:
    """Hand a version to a destination now, whatever its verdict, like ``%mlops forward``:
    ``forward("churn:3", to="central")`` or ``forward("churn", 3)``. The agent records who did
    it in the audit log. Returns the agent's answer (whether it was queued)."""
    if isinstance(name, str) and ":" in name and number is None:
        name, number = parse_ref(name)
    if number is None:
        raise HandoffUsageError(
            "Say which version to forward.", "e.g. forward('churn:3', to='central')."
        )
    number = _version_number(number, "e.g. forward('churn:3', to='central').")
    _checked_name(name)
    return connect(start=False).post(
        f"/api/v1/models/{name}/versions/{int(number)}/forward", {"to": to}
    )


def prune(name: str, keep: int, dry_run: bool = False) -> dict:
    """Free the local agent's disk, like ``%mlops prune``: remove the bundles of ``name``'s
    versions older than its newest ``keep`` that nothing needs (their records, reports and
    audit rows stay). Returns the agent's answer: the versions pruned and the bytes freed."""
    _checked_name(name)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise HandoffUsageError(
            f"keep must be a whole number of versions, from 1 to {MAX_KEEP:,}, not {keep!r}.",
            "e.g. prune('churn', keep=5).",
        )
    body = {"keep": keep, "dry_run": bool(dry_run)}
    return connect(start=False).post(f"/api/v1/models/{name}/prune", body)


def lineage(ref: str) -> Lineage:
    """Where things came from, like ``%mlops lineage``. ``lineage("churn:3")``: that version's
    data, notebook, code, parent and stages (the latest for ``"churn"``). A dataset's 64-hex
    fingerprint: the versions that used it and where they are now. A watched source (path,
    glob, URL or id) or a source's fingerprint: the lineage graph around it (models, where
    they serve, which change triggered which retrain)."""
    if not isinstance(ref, str):
        raise HandoffUsageError(
            f"lineage() takes a string, not a {type(ref).__name__}.", "e.g. lineage('churn:3')."
        )
    from .errors import AgentError
    from .watching import is_source_ref, lineage_graph, source_ref

    client = connect(start=False)
    hexy = all(c in "0123456789abcdef" for c in ref) and len(ref) >= 8
    if is_source_ref(ref) or ref.isdigit() or (hexy and len(ref) != 64):
        return lineage_graph(source_ref(ref))
    if hexy:
        try:
            return Lineage(client.get(f"/api/v1/lineage?dataset={ref}"))
        except AgentError as e:  # not a pushed dataset: perhaps a source's fingerprint
            if e.status != 404:
                raise
            return lineage_graph(ref)
    version = get(ref)
    name = version.name
    return Lineage(client.get(f"/api/v1/lineage?model={name}&version={version.number}"))
