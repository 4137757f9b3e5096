"""Compare stored versions side by side: metrics with deltas and CIs, data, schema, verdicts.

Everything comes from results the agent already stored; nothing is re-run. The data model
here is plain Python (no pandas, no ipywidgets); ``widgets/compare.py`` draws it.
"""

from __future__ import annotations

import html
import math
import re

# Metric directions, stage names and colours: the vocabulary the agent and the panel share.
from handoff_agent.vocabulary import FAIRNESS_METRICS as FAIRNESS
from handoff_agent.vocabulary import HIGHER_IS_BETTER, STAGE_ALIASES, is_metric
from handoff_agent.vocabulary import LATENCY_METRICS as LATENCY

from .client import connect
from .errors import HandoffUsageError
from .refs import check_of, checked_name, label, result_of  # noqa: F401  (re-exported)

REF_RE = re.compile(r"^(?P<name>[^:]+)(?::(?P<which>.+))?$")


def is_checking(v: dict) -> bool:
    return v.get("status") in ("checking", "pushed") and bool(v.get("checks"))


# -- resolving what to compare ------------------------------------------------------------


class Resolver:
    """Turns ``churn:3``, ``churn``, ``churn:prod`` or a Version into version dicts."""

    def __init__(self, client=None):
        self.client = client or connect(start=False)
        self._listing: dict[str, list[dict]] = {}
        self._full: dict[tuple[str, int], dict] = {}

    def listing(self, name: str) -> list[dict]:
        if name not in self._listing:
            checked_name(name)
            self._listing[name] = self.client.get(f"/api/v1/models/{name}/versions?limit=1000")[
                "versions"
            ]
        return self._listing[name]

    def full(self, name: str, number: int, fresh: bool = False) -> dict:
        key = (name, int(number))
        if fresh or key not in self._full:
            self._full[key] = self.client.get(f"/api/v1/models/{name}/versions/{number}")
        return self._full[key]

    def champion(self, name: str, before: int | None = None) -> dict | None:
        """The agent's champion (production, else the best earlier version that passed)."""
        query = f"?before={int(before)}" if before is not None else ""
        number = self.client.get(f"/api/v1/models/{name}/champion{query}")["champion"]
        return None if number is None else self.full(name, number)

    def resolve(self, ref) -> list[dict]:
        if hasattr(ref, "_data") and hasattr(ref, "number"):
            return [self.full(ref.name, ref.number)]
        if isinstance(ref, tuple) and len(ref) == 2:
            return [self.full(ref[0], ref[1])]
        if not isinstance(ref, str):
            raise HandoffUsageError(
                f"Cannot compare {ref!r}.",
                "Pass NAME:N strings, e.g. compare('churn:3', 'churn:5').",
            )
        m = REF_RE.match(ref.strip())
        if not m:
            raise HandoffUsageError(f"{ref!r} is not NAME[:N].", "Write e.g. churn:3.")
        name, which = m["name"], m["which"]
        versions = self.listing(name)
        if not versions:
            raise HandoffUsageError(f"Model {name!r} has no versions.", "Push one first.")
        if which is None:  # latest against the champion
            latest = versions[0]["number"]
            champ = self.champion(name, before=latest)
            if champ is None:
                raise HandoffUsageError(
                    f"{name} has no champion to compare {name}:{latest} with: no earlier "
                    "version passed or warned.",
                    f"Compare two versions by number, e.g. %mlops compare {name}:1 {name}:{latest}."
                    if latest > 1
                    else "It has one version: push another to compare it with.",
                )
            return [champ, self.full(name, latest)]
        if which.isdigit():
            return [self.full(name, int(which))]
        stage = STAGE_ALIASES.get(which.lower(), which.lower())
        for row in versions:
            if (row.get("stage") or "").lower() == stage:
                return [self.full(name, row["number"])]
        for row in versions[:100]:  # the listing may not carry the stage; the version does
            if (self.full(name, row["number"]).get("stage") or "").lower() == stage:
                return [self.full(name, row["number"])]
        raise HandoffUsageError(
            f"No version of {name} is in stage {stage!r}.",
            "Stages come from the central pipeline once a version is forwarded and promoted. "
            f"Compare by number instead, e.g. %mlops compare {name}:1 {name}:2, or use "
            f"%mlops compare {name} for the latest against the champion.",
        )


# -- the comparison -----------------------------------------------------------------------


class Comparison:
    """Two or more versions, the first the baseline unless ``baseline`` names another."""

    def __init__(self, versions: list[dict], baseline: str | None = None, champions=None):
        seen, unique = set(), []
        for v in versions:
            if label(v) not in seen:
                seen.add(label(v))
                unique.append(v)
        if len(unique) < 2:
            raise HandoffUsageError(
                f"{label(versions[0])} is named twice; a comparison needs two different versions."
                if versions
                else "A comparison needs at least two versions.",
                "Name two, e.g. %mlops compare churn:3 churn:5, or one model for its latest "
                "against its champion: %mlops compare churn.",
            )
        self.versions = unique
        self.labels = [label(v) for v in unique]
        if baseline is not None and baseline not in self.labels:
            raise HandoffUsageError(
                f"The baseline {baseline} is not among the versions compared: "
                f"{', '.join(self.labels)}.",
                "Name one of them with --baseline, or add it to the versions.",
            )
        self.baseline = baseline or self.labels[0]
        self.champions = set(champions or ())  # labels of each model's champion
        self._charts: tuple | None = None
        self._resolver: Resolver | None = None

    @property
    def resolver(self) -> Resolver:
        """What turns refs into versions for this comparison (made on first use)."""
        if self._resolver is None:
            self._resolver = Resolver()
        return self._resolver

    @resolver.setter
    def resolver(self, value: Resolver) -> None:
        self._resolver = value

    @property
    def base(self) -> dict:
        return self.versions[self.labels.index(self.baseline)]

    @property
    def tasks(self) -> dict[str, str | None]:
        return {
            label(v): v.get("task") or (v.get("manifest") or {}).get("task") for v in self.versions
        }

    @property
    def task_message(self) -> str:
        """Empty when the versions solve the same task; otherwise why metrics are hidden."""
        known = {t for t in self.tasks.values() if t}
        if len(known) <= 1:
            return ""
        parts = ", ".join(f"{lab} is {t or 'of unknown task'}" for lab, t in self.tasks.items())
        return (
            f"These versions solve different tasks ({parts}): their metrics are not comparable, "
            "so only verdicts, schema and data are compared."
        )

    @property
    def checking(self) -> list[str]:
        return [label(v) for v in self.versions if is_checking(v)]

    def replace(self, version: dict) -> None:
        """Swap in a fresher copy of one version (after its checks finished)."""
        lab = label(version)
        if lab in self.labels:
            self.versions[self.labels.index(lab)] = version
            self._charts = None

    # -- metrics --------------------------------------------------------------------------

    def metric_values(self, v: dict) -> dict[str, tuple[float, list | None, str]]:
        """metric -> (value, CI or None, group) from the stored check results."""
        out: dict[str, tuple[float, list | None, str]] = {}
        perf = result_of(v, "performance").get("metrics") or v.get("metrics") or {}
        for k, val in perf.items():
            if not is_metric(k) or isinstance(val, bool):
                continue
            if isinstance(val, (int, float)):
                out[k] = (float(val), _interval(perf.get(f"{k}_ci")), "performance")
        lat = result_of(v, "latency").get("metrics") or {}
        for k in LATENCY:
            if isinstance(lat.get(k), (int, float)):
                out[k] = (float(lat[k]), None, "latency")
        fair = result_of(v, "fairness").get("metrics") or {}
        for k in FAIRNESS:
            if isinstance(fair.get(k), (int, float)):
                out[k] = (float(fair[k]), None, "fairness")
        return out

    def metrics(self) -> list[dict]:
        """One row per metric: values, CIs, deltas against the baseline and better/worse."""
        if self.task_message:
            return []
        values = {
            lab: self.metric_values(v) for lab, v in zip(self.labels, self.versions, strict=True)
        }
        names: list[str] = []
        primary = (result_of(self.base, "performance").get("metrics") or {}).get("primary_metric")
        for vals in values.values():
            for k in vals:
                if k not in names:
                    names.append(k)
        group_order = {"performance": 0, "latency": 1, "fairness": 2}
        names.sort(
            key=lambda k: (
                group_order[next(vals[k][2] for vals in values.values() if k in vals)],
                k != primary,
            )
        )
        rows = []
        base_vals = values[self.baseline]
        for k in names:
            row = {
                "metric": k,
                "primary": k == primary,
                "higher_is_better": HIGHER_IS_BETTER.get(k),
                "values": {},
                "ci": {},
                "deltas": {},
                "better": {},
            }
            for lab in self.labels:
                if k not in values[lab]:
                    continue
                val, ci, row["group"] = values[lab][k]
                row["values"][lab], row["ci"][lab] = val, ci
                if lab == self.baseline or k not in base_vals:
                    continue
                delta = val - base_vals[k][0]
                row["deltas"][lab] = delta
                hib = HIGHER_IS_BETTER.get(k)
                row["better"][lab] = (
                    None if hib is None or abs(delta) < 1e-12 else (delta > 0) == hib
                )
            rows.append(row)
        return rows

    @property
    def deltas(self) -> dict[str, dict[str, float]]:
        """Per metric the baseline has, each other version's delta (none for the others)."""
        return {r["metric"]: dict(r["deltas"]) for r in self.metrics() if r["deltas"]}

    # -- data, schema, verdicts -----------------------------------------------------------

    def fingerprints(self) -> list[dict]:
        """Per data role, each version's fingerprint and whether it differs from the baseline."""
        roles: list[str] = []
        for v in self.versions:
            for role in (v.get("manifest") or {}).get("data") or {}:
                if role not in roles:
                    roles.append(role)
        base = (self.base.get("manifest") or {}).get("data") or {}
        rows = []
        for role in roles:
            base_fp = (base.get(role) or {}).get("fingerprint")
            row = {"role": role, "values": {}, "changed": {}}
            for lab, v in zip(self.labels, self.versions, strict=True):
                fp = ((v.get("manifest") or {}).get("data") or {}).get(role) or {}
                row["values"][lab] = {"fingerprint": fp.get("fingerprint"), "rows": fp.get("rows")}
                row["changed"][lab] = fp.get("fingerprint") != base_fp
            rows.append(row)
        return rows

    def schema_changes(self) -> dict[str, dict[str, list]]:
        """Per version, the input columns added, removed and retyped against the baseline."""

        def cols(v):
            sig = v.get("signature") or (v.get("manifest") or {}).get("signature") or {}
            return {c["name"]: c.get("dtype") for c in sig.get("columns") or []}

        base = cols(self.base)
        out = {}
        for lab, v in zip(self.labels, self.versions, strict=True):
            if lab == self.baseline:
                continue
            mine = cols(v)
            out[lab] = {
                "added": [c for c in mine if c not in base],
                "removed": [c for c in base if c not in mine],
                "retyped": [
                    f"{c}: {base[c]} → {t}" for c, t in mine.items() if c in base and base[c] != t
                ],
            }
        return out

    def verdicts(self) -> dict[str, dict]:
        out = {}
        for lab, v in zip(self.labels, self.versions, strict=True):
            verdict = v.get("verdict") or {}
            out[lab] = {
                "status": v.get("status"),
                "verdict": verdict.get("verdict"),
                "reasons": list(verdict.get("reasons") or []),
                "checks": {c["name"]: c.get("status") for c in v.get("checks") or []},
            }
        return out

    # -- charts (matplotlib, only when asked) ----------------------------------------------

    def charts(self) -> dict[str, str]:
        """Chart name -> PNG as base64, drawn once per state of the versions."""
        key = tuple(
            (lab, v.get("status")) for lab, v in zip(self.labels, self.versions, strict=True)
        )
        if self._charts is None or self._charts[0] != key:
            from .widgets.charts import draw

            self._charts = (key, draw(self))
        return self._charts[1]

    # -- display --------------------------------------------------------------------------

    def widget(self, follow: bool = True, resolver=None):
        from .widgets.compare import CompareWidget

        return CompareWidget(self, resolver=resolver, follow=follow)

    def _ipython_display_(self):
        from .widgets.display import show

        show(self, self.widget)

    def __repr__(self) -> str:
        """The text form: a row per metric, each version's value and its change from the
        baseline, with better or worse by the metric's direction."""
        lines = [f"Comparison({', '.join(self.labels)}; baseline={self.baseline})"]
        if self.task_message:
            return "\n".join([*lines, f"  {self.task_message}"])
        rows = self.metrics()
        width = max((len(r["metric"]) for r in rows), default=0)
        for r in rows:
            cells = []
            for lab in self.labels:
                if lab not in r["values"]:
                    cells.append(f"{'n/a':>10}")
                    continue
                cell = f"{r['values'][lab]:>10.4g}"
                if lab in r["deltas"] and r["deltas"][lab]:
                    word = {True: " better", False: " worse"}.get(r["better"].get(lab), "")
                    cell += f" ({r['deltas'][lab]:+.3g}{word})"
                cells.append(cell)
            lines.append(f"  {r['metric']:<{width}}  {'  '.join(cells)}".rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from .widgets import compare_html

        return compare_html.page(self)


def compare(*refs, baseline: str | None = None, client=None) -> Comparison:
    """Compare versions: ``compare("churn:3", "churn:5")``, ``compare("churn")`` (latest
    against the champion), ``compare("churn:prod")`` or Version objects. Stored results only."""
    if not refs:
        raise HandoffUsageError(
            "Name the versions to compare.",
            "e.g. compare('churn:3', 'churn:5'), or compare('churn') for latest vs champion.",
        )
    resolver = Resolver(client)
    versions: list[dict] = []
    for ref in refs:
        versions += resolver.resolve(ref)
    if len(refs) == 1 and len(versions) == 1:
        raise HandoffUsageError(
            f"{refs[0]} is one version; a comparison needs two.",
            "Add another, e.g. %mlops compare churn:3 churn:5, or name just the model "
            "(%mlops compare churn) for the latest against the champion.",
        )
    if baseline is not None:  # any way a version is named (churn:prod), as one label
        found = resolver.resolve(baseline)
        if len(found) != 1:
            raise HandoffUsageError(
                f"--baseline {baseline} is not one version.", "Name one, e.g. churn:3."
            )
        baseline = label(found[0])
    champions = set()
    for name in dict.fromkeys(v["model"] for v in versions):
        champ = resolver.champion(name)
        if champ is not None:
            champions.add(label(champ))
    comparison = Comparison(versions, baseline=baseline, champions=champions)
    comparison.resolver = resolver
    return comparison


def esc(x) -> str:
    return html.escape(str(x))


def _interval(ci) -> list | None:
    """A stored CI as two finite bounds, or None: a bootstrap with no finite value stores
    ``[null, null]`` (a constant target), which no table or chart can draw."""
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2
    if not ok or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in ci):
        return None
    return [float(ci[0]), float(ci[1])] if all(math.isfinite(b) for b in ci) else None
