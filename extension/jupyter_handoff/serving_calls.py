"""Where each version serves (``%mlops deployments``) and a trial prediction (``%mlops
predict``). Both go through the local agent, which asks its central with its own token: the
notebook holds no token for central and never prints one.

The view is read generically: the slot fields central sends (traffic, requests, error rate,
p50/p99, backend, and whatever the server adds later) are shown as they come.
"""

from __future__ import annotations

import html

from handoff_agent.shell import visible

from .client import connect
from .deploy_view import (
    alarms_of,
    columns_of,
    deployment_html,
    extras,
    guardrail_lines,
    model_names,
    serving_line,
    validation_lines,
)
from .deploy_view import fmt as _fmt
from .errors import AgentError, HandoffUsageError
from .refs import checked_name


class Deployment:
    """One model's deployment, as central describes it (``view``)."""

    def __init__(self, name: str, view: dict, client=None):
        self.name, self.view, self._client = name, view, client

    slots = property(lambda self: list(self.view.get("slots") or []))
    alarms = property(lambda self: alarms_of(self.view))

    def extras(self) -> dict:
        return extras(self.view)

    def widget(self, interval: float = 2.0):
        """The live view: refreshed from central while it is shown."""
        from .widgets.deployments import DeploymentWidget

        return DeploymentWidget(self, client=self._client, interval=interval)

    def _ipython_display_(self):
        from .widgets.display import show

        show(self, self.widget)

    def __repr__(self) -> str:
        slots = self.slots
        if not slots:
            return f"Deployment({self.name!r}): no version serves"
        cols = columns_of(slots)
        rows = [cols] + [[_fmt(c, s.get(c)) for c in cols] for s in slots]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [f"Deployment({self.name!r}) {serving_line(self.view)}"]
        lines += [
            "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows
        ]
        lines += [f"  guardrails: {g}" for g in guardrail_lines(self.view)]
        lines += [f"  validation: {v}" for v in validation_lines(self.view)]
        lines += [f"  {k}: {_fmt(k, v)}" for k, v in self.extras().items()]
        lines += [f"  ALARM {a}" for a in self.alarms]
        return "\n".join(visible(x) for x in lines)  # reasons may quote what a model raised

    def _repr_html_(self) -> str:
        return deployment_html(self.name, self.view)


class Deployments(list):
    """Every model's deployment (``%mlops deployments`` without a name)."""

    def __repr__(self) -> str:
        if not self:
            return "No model has a deployment."
        return "\n".join(repr(d) for d in self)

    def _repr_html_(self) -> str:
        if not self:
            return "<i>No model has a deployment.</i>"
        return "".join(d._repr_html_() for d in self)


def model_read(name: str, what: str, client=None) -> dict:
    """Central's ``what`` about ``name`` (deployment, monitor, alerts); a name central does
    not know is one line that says so."""
    client = client or connect(start=False)
    try:
        return client.get(f"/api/v1/models/{name}/{what}")
    except AgentError as e:
        if e.status == 404 and e.code in ("not_found", "model_not_found"):
            raise HandoffUsageError(
                f"Central has no model named {name!r}.",
                f"A model gets there when a version of it is forwarded: `%mlops forward {name}:N`.",
            ) from None
        raise


def deployments(name: str | None = None):
    """Where each version of ``name`` serves (every model's when ``name`` is None)."""
    client = connect(start=False)
    if name is not None:
        checked_name(name)
        return Deployment(name, model_read(name, "deployment", client), client)
    out = Deployments()
    for each in model_names(client.get):
        try:
            view = client.get(f"/api/v1/models/{each}/deployment")
        except AgentError as e:
            if e.status == 404:  # a model central has not heard of serves nowhere
                continue
            raise  # central down, or none set: said, not read as "no model has a deployment"
        if view and view.get("slots"):
            out.append(Deployment(each, view, client))
    return out


# -- a trial prediction ------------------------------------------------------------------


def _texts(data) -> list | None:
    """``data`` as a text pipeline's inputs (a string, or a list, 1-D array or Series of
    them, not a row of X), or None: each text is a row of the model's one column, whatever
    the Series is named."""
    if isinstance(data, str):
        return [data]
    kind = type(data).__name__
    if (kind == "ndarray" and data.ndim == 1) or (kind == "Series" and not _row(data)):
        data = data.tolist()
    if isinstance(data, list | tuple) and any(isinstance(t, str) for t in data):
        odd = next((i for i, t in enumerate(data) if not isinstance(t, str)), None)
        if odd is not None:  # texts with a number or a None among them
            raise HandoffUsageError(
                f"DATA mixes texts with other values: item {odd} is "
                f"{visible(repr(data[odd]))[:40]}.",
                "A text pipeline takes a list of strings: drop or convert that item.",
            )
        return list(data)
    return None


def _row(series) -> bool:
    """A row of X (``X.iloc[0]``: indexed by column names), not a column."""
    return bool(len(series.index)) and all(isinstance(i, str) for i in series.index)


def _body(data) -> dict:
    """``data`` as MLflow's scoring body: a DataFrame keeps its columns; an array or a list
    of rows goes in the model's column order; texts are rows of one column."""
    texts = _texts(data)
    if texts is not None:
        return {"instances": [[t] for t in texts]}
    if isinstance(data, list | tuple) and not data:
        raise HandoffUsageError("DATA has no rows.", "Pass a few rows (or texts) to predict.")
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(data, pd.Series):
        data = data.to_frame().T if _row(data) else data.to_frame()  # a row, or a column
    if pd is not None and isinstance(data, pd.DataFrame):
        if data.empty:
            raise HandoffUsageError("DATA has no rows.", "Pass a DataFrame with a few rows.")
        import json

        import numpy as np

        numeric = data.select_dtypes("number")
        infinite = [c for c in numeric.columns if np.isinf(numeric[c].to_numpy()).any()]
        if infinite:  # JSON has no infinity: it would arrive as a missing value
            raise HandoffUsageError(
                f"DATA holds infinite values in {', '.join(map(repr, infinite[:5]))}.",
                "A model takes finite numbers: replace them (e.g. clip the column) first.",
            )

        frame = json.loads(data.to_json(orient="split", index=False, date_format="iso"))
        return {"dataframe_split": {"columns": frame["columns"], "data": frame["data"]}}
    if type(data).__module__ == "numpy" and type(data).__name__ == "ndarray":
        if data.ndim != 2 or not data.size:
            raise HandoffUsageError(
                f"DATA is an array of shape {data.shape}; it must be 2-D (rows by columns).",
                "e.g. X_test.to_numpy()[:5], or pass the DataFrame itself.",
            )
        return {"instances": data.tolist()}
    if isinstance(data, list) and data and all(isinstance(r, (list, dict)) for r in data):
        return {"instances": data}
    raise HandoffUsageError(
        f"DATA must be a DataFrame, a 2-D array or texts, not a {type(data).__name__}.",
        "e.g. few = X_test.head(), then %mlops predict churn few",
    )


class Prediction:
    """What the deployed model answered, and which version and slot answered it."""

    def __init__(self, answer: dict):
        self.answer = answer
        self.model = answer.get("model")
        self.version = answer.get("version")
        self.slot = answer.get("slot")
        self.request_id = answer.get("request_id")
        self.predictions = answer.get("predictions")
        self.probabilities = answer.get("probabilities")

    def to_dataframe(self):
        import pandas as pd

        frame = pd.DataFrame({"prediction": self.predictions})
        if self.probabilities:
            probs = pd.DataFrame(self.probabilities)
            classes = self.answer.get("classes") or []
            if len(classes) != probs.shape[1]:  # named by the classes they are of, if known
                classes = list(probs.columns)
            probs.columns = [f"proba_{c}" for c in classes]
            frame = pd.concat([frame, probs], axis=1)
        return frame

    def _head(self) -> str:
        return f"{self.model}:{self.version} ({self.slot}) answered request {self.request_id}"

    def _limits(self) -> tuple[int | None, int | None, str]:
        """Rows as pandas shows a long DataFrame (its first and last few, per its display
        options), so predicting on a whole test set does not flood the notebook, and a note
        saying where all of them are."""
        import pandas as pd

        most, fewest = pd.get_option("display.max_rows"), pd.get_option("display.min_rows")
        rows = len(self.predictions or [])
        cut = bool(most) and rows > most
        return most, fewest, f"{rows:,} rows; the result's .to_dataframe() has them all" * cut

    def __repr__(self) -> str:
        most, fewest, note = self._limits()
        text = self.to_dataframe().to_string(max_rows=most, min_rows=fewest)
        lines = [self._head(), *text.split("\n"), *filter(None, [note])]
        return "\n".join(visible(x) for x in lines)  # labels are the training data's values

    def _repr_html_(self) -> str:
        most, _, note = self._limits()
        return (
            f"<div class='handoff-prediction'><b>{html.escape(self._head())}</b>"
            f"{self.to_dataframe().to_html(max_rows=most)}"
            f"{f'<p>{html.escape(note)}</p>' if note else ''}</div>"
        )


USER_CODES = {
    "not_found",
    "model_not_found",
    "model_not_served",
    "no_default_version",
    "version_not_served",
}


def _fits_one_request(body: dict) -> None:
    """A trial prediction is one request, answered by one version: more rows than a JSON
    body may hold are said here (the agent would refuse them before reading)."""
    import json

    from handoff_agent.vocabulary import JSON_BODY_LIMIT, size_text

    size = len(json.dumps(body))
    if size > JSON_BODY_LIMIT:
        rows = len(body["instances"] if "instances" in body else body["dataframe_split"]["data"])
        fit = max(1, int(rows * JSON_BODY_LIMIT / size * 0.9))
        raise HandoffUsageError(
            f"DATA is {size_text(size)} as JSON; one prediction request takes at most "
            f"{size_text(JSON_BODY_LIMIT)}.",
            f"Send fewer rows: about {fit:,} of its {rows:,} fit, e.g. DATA[:{fit}].",
        )


def predict(name: str, data, version: int | None = None) -> Prediction:
    """Call the deployed model with ``data`` (routed like any request, or to ``version``)."""
    checked_name(name)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise HandoffUsageError("version must be a number.", "e.g. --version 2")
    body = _body(data)
    _fits_one_request(body)
    if version is not None:
        body["version"] = int(version)
    client = connect(start=False)
    try:
        return Prediction(client.post(f"/api/v1/models/{name}/predict", body))
    except AgentError as e:
        if e.code in USER_CODES or e.status in (400, 404, 422):
            hint = e.hint or "`%mlops deployments NAME` shows what serves."
            if e.code == "no_default_version":  # the server's hint names its HTTP route
                hint = f"Name one: %mlops predict {name} DATA --version N"
            raise HandoffUsageError(e.detail.removeprefix("Central: "), hint) from None
        raise
