"""The comparison view: version pickers, metrics with deltas, charts, data, schema, gate.

Traits (``selected``, ``baseline``, ``deltas``, ``checking``, ``task_message``) hold the state
so tests need no browser. Versions still checking are followed over the event stream and
redrawn when their results land.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import ipywidgets as w
from traitlets import Bool, Dict, List, Unicode

from ..client import START_HINT
from ..refs import label

if TYPE_CHECKING:  # the comparison draws this widget; the widget only reads it
    from ..comparison import Comparison, Resolver
from . import compare_html
from .style import e


class CompareWidget(w.VBox):
    selected = List(help="labels (NAME:N) of the versions compared")
    baseline = Unicode(help="the version the deltas are taken against")
    deltas = Dict(help="metric -> {label: value minus the baseline's}")
    champions = List(help="labels of each model's champion")
    checking = List(help="labels of compared versions whose checks are still running")
    task_message = Unicode(help="why metrics are hidden, when the tasks differ")
    agent_lost = Bool(False)

    def __init__(
        self,
        comparison: Comparison,
        resolver: Resolver | None = None,
        follow: bool = True,
        **kwargs,
    ):
        self._lock = threading.RLock()
        self._follower = None
        self._follow_wanted = follow
        self.comparison = comparison
        self.resolver = resolver or comparison.resolver
        self.title = w.HTML()
        self.picker = w.SelectMultiple(
            description="Versions", rows=5, layout=w.Layout(width="420px")
        )
        self.baseline_picker = w.Dropdown(description="Baseline", layout=w.Layout(width="260px"))
        self.notice = w.HTML()
        self.metrics_html = w.HTML()
        self.charts_html = w.HTML()
        self.data_html = w.HTML()
        self.gate_html = w.HTML()
        super().__init__(
            children=[
                self.title,
                w.HBox([self.picker, self.baseline_picker]),
                self.notice,
                w.HTML("<h4 style='margin:6px 0 0'>Metrics</h4>"),
                self.metrics_html,
                w.HTML("<h4 style='margin:6px 0 0'>Charts</h4>"),
                self.charts_html,
                w.HTML("<h4 style='margin:6px 0 0'>Data and schema</h4>"),
                self.data_html,
                w.HTML("<h4 style='margin:6px 0 0'>Gate</h4>"),
                self.gate_html,
            ],
            **kwargs,
        )
        self.add_class("handoff-compare")
        self._set_options()
        self._updating = True
        self.picker.value = tuple(comparison.labels)
        self.baseline_picker.options = list(comparison.labels)
        self.baseline_picker.value = comparison.baseline
        self._updating = False
        self.picker.observe(self._picked, "value")
        self.baseline_picker.observe(self._picked_baseline, "value")
        self.render()

    # -- pickers --------------------------------------------------------------------------

    def _set_options(self) -> None:
        options = []
        for name in dict.fromkeys(v["model"] for v in self.comparison.versions):
            for row in self.resolver.listing(name):
                lab = f"{name}:{row['number']}"
                msg = (row.get("message") or "")[:40]
                options.append((f"{lab} · {row.get('status')}{' · ' + msg if msg else ''}", lab))
        known = {lab for _, lab in options}
        options += [(lab, lab) for lab in self.comparison.labels if lab not in known]
        self.picker.options = options

    def select(self, labels: list[str], baseline: str | None = None) -> None:
        """Compare these versions (what the pickers do)."""
        with self._lock:
            self._updating = True
            try:
                self.picker.value = tuple(labels)
            finally:
                self._updating = False
            self._rebuild(list(labels), baseline)

    def _picked(self, change) -> None:
        if not self._updating:
            self._rebuild(list(change["new"]), self.baseline)

    def _picked_baseline(self, change) -> None:
        if not self._updating and change["new"]:
            self._rebuild(list(self.selected), change["new"])

    def _rebuild(self, labels: list[str], baseline: str | None) -> None:
        with self._lock:
            if len(labels) < 2:
                self.notice.value = "<i>Pick at least two versions (Ctrl- or Shift-click).</i>"
                return
            versions = []
            for lab in labels:
                name, _, number = lab.rpartition(":")
                versions.append(self.resolver.full(name, int(number)))
            self.comparison = type(self.comparison)(
                versions,
                baseline=baseline if baseline in labels else None,  # unpicked: the first
                champions=self.comparison.champions,
            )
            self._updating = True
            try:
                self.baseline_picker.options = list(self.comparison.labels)
                self.baseline_picker.value = self.comparison.baseline
            finally:
                self._updating = False
            self.render()

    # -- following versions still checking --------------------------------------------------

    def _follow(self) -> None:
        if not self._follow_wanted or (self._follower and not self._follower.stopped):
            return
        from ..sse import EventFollower

        models = {v["model"] for v in self.comparison.versions}
        self._follower = EventFollower(
            self.resolver.client,
            next(iter(models)) if len(models) == 1 else None,
            on_event=self._event,
            on_open=self._refresh_checking,
            on_lost=self._lost,
        ).start()

    def _refresh_checking(self) -> bool:
        self.agent_lost = False
        for lab in list(self.comparison.checking):
            self._refresh(lab)
        self.render()
        return not self.comparison.checking

    def _refresh(self, lab: str) -> None:
        name, _, number = lab.rpartition(":")
        self.comparison.replace(self.resolver.full(name, int(number), fresh=True))

    def _event(self, kind: str, data: dict) -> bool:
        lab = f"{data.get('model')}:{data.get('version')}"
        final = kind in ("verdict", "report") or data.get("status") != "running"
        if lab in self.comparison.labels and final:
            with self._lock:
                self._refresh(lab)
                self.render()
        return not self.comparison.checking

    def _lost(self, exc: BaseException) -> None:
        self.agent_lost = True
        self.notice.value = (
            f"<b style='color:#cf222e'>The agent stopped answering</b> ({e(str(exc))}). "
            f"{e(START_HINT)}"
        )

    def stop(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    # -- drawing --------------------------------------------------------------------------

    def render(self) -> None:
        with self._lock:
            c = self.comparison
            self.selected = list(c.labels)
            self.baseline = c.baseline
            self.champions = sorted(c.champions)
            self.checking = list(c.checking)
            self.task_message = c.task_message
            self.deltas = c.deltas
            self.title.value = f"<b>Comparing {e(', '.join(c.labels))}</b> against {e(c.baseline)}"
            notes = []
            if c.checking:
                notes.append(
                    f"<i>Still checking: {e(', '.join(c.checking))}. This view updates when "
                    "their checks finish.</i>"
                )
            if not self.agent_lost:
                self.notice.value = "<br>".join(notes)
            self.metrics_html.value = compare_html.metrics_table(c)
            self.charts_html.value = compare_html.charts_html(c.charts())
            self.data_html.value = compare_html.data_table(c) + compare_html.schema_list(c)
            self.gate_html.value = compare_html.verdicts_table(c)
        if c.checking:
            self._follow()

    def __repr__(self) -> str:
        return f"CompareWidget({', '.join(self.selected)}; baseline={self.baseline})"


__all__ = ["CompareWidget", "label"]
