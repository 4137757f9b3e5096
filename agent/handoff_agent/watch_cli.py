"""``jupyter handoff watch`` and ``jupyter handoff lineage``: watched data sources and the
lineage graph, from a shell. They ask a running agent (local by default: where the analyst's
watches and retraining notebooks live; ``--agent central`` for central's)."""

from __future__ import annotations

import json
import os
import sys
import urllib.parse

from traitlets import Dict, Enum, Float, Integer, List, Unicode

from ._version import __version__
from .command import Command
from .inventory_cli import Unreachable, _get, _request
from .shell import complain, visible
from .vocabulary import param_value, watch_line

AGENT_HELP = "Which running agent to ask: local (default) or central."
URL_HELP = "Agent URL instead of the runtime file; token in HANDOFF_TOKEN."


def _post(role: str, url: str, path: str, body: dict) -> dict:
    return json.loads(_request(role, url, path, body, timeout=600)[0])


class Params(Dict):
    """``--params epochs=3``: the value read as ``%mlops watch --param`` reads it (3 an int),
    not the text traitlets gives any K=V, which made the retrain fail on ``range("3")``."""

    def item_from_string(self, s: str) -> dict:
        key, value = next(iter(super().item_from_string(s).items()))
        return {key: param_value(value)}


class WatchApp(Command):
    name = "jupyter-handoff-watch"
    description = (
        "watch NAME --source PATH_OR_URL [--query SQL] [--every 1h] [--overdue 26h] [--on change "
        "schema …] [--run NOTEBOOK] [--action alert revalidate … --target COL]: watch a "
        "data source for a model (the same as %mlops watch). watch NAME: the model's watched "
        "sources. watch NAME --remove ID: stop watching one."
    )
    version = __version__
    source = Unicode("", help="A file, a glob of Parquet/CSV files, or a SQLAlchemy URL.").tag(
        config=True
    )
    query = Unicode("", help="For a SQL source: the query whose rows are watched.").tag(config=True)
    every = Unicode("1h", help="Period between fingerprints: 30s, 15m, 1h, 1d.").tag(config=True)
    overdue = Unicode(
        "",
        help="Expected period between updates, e.g. 26h: a source with no new data for "
        "longer is overdue (default: twice --every).",
    ).tag(config=True)
    on = List(
        Unicode(),
        ["change"],
        help="Changes that trigger: change, schema, drift, overdue (--on change drift, or "
        "--on repeated).",
    ).tag(config=True, multiplicity="+")
    run = Unicode("", help="Retraining notebook run headless on a trigger (local agent).").tag(
        config=True
    )
    actions = List(
        Unicode(),
        help="alert, revalidate, retrain, pause_canary, rollback_canary (default: alert, and "
        "retrain with --run); several after one --action, or --action repeated.",
    ).tag(config=True, multiplicity="+")
    target = Unicode(
        "", help="The source's target column, which the revalidate action scores against."
    ).tag(config=True)
    params = Params(
        help="Parameters injected into the notebook: K=V, repeated (--params epochs=3 "
        "--params lr=0.1; a number is a number, as %mlops watch --param reads it), or JSON."
    ).tag(config=True)
    timeout = Float(600.0, help="Seconds the notebook may run.").tag(config=True)
    agent = Enum(["local", "central"], "local", help=AGENT_HELP).tag(config=True)
    url = Unicode("", help=URL_HELP).tag(config=True)
    remove = Integer(0, help="Stop watching source ID (the [ID] the listing shows).").tag(
        config=True
    )
    aliases = {
        **{
            k: f"WatchApp.{k}"
            for k in (
                *("source", "query", "every", "overdue", "on", "run", "timeout", "target"),
                "remove",
            )
        },
        "action": "WatchApp.actions",
        "params": "WatchApp.params",
        "agent": "WatchApp.agent",
        "url": "WatchApp.url",
    }
    flags = {}

    def start(self):
        if len(self.extra_args) != 1:
            complain("Usage: jupyter handoff watch NAME [--source PATH_OR_URL ...]")
            self.exit(2)
        model = self.extra_args[0]
        try:
            if self.remove:
                self._remove(model)
                return
            if not self.source:
                doc = json.loads(_get(self.agent, self.url, f"/api/v1/watches?model={model}")[0])
                rows = doc["watches"]
            else:
                rows = [_post(self.agent, self.url, "/api/v1/watches", self.body(model))]
        except Unreachable as e:
            complain(e)
            self.exit(1)
        for w in rows:
            line = watch_line(w)
            print(visible(line))  # a source is a path or URL someone else typed
            if w.get("replaced"):
                print(f"Replaced the earlier settings of [{w['id']}]: one watch per source.")
        if not rows:
            print(f"{model} watches no data source.")

    def _remove(self, model: str) -> None:
        query = f"/api/v1/watches?model={urllib.parse.quote(model)}"
        rows = json.loads(_get(self.agent, self.url, query)[0])["watches"]
        row = next((w for w in rows if w["id"] == self.remove), None)
        if row is None:
            raise Unreachable(
                f"{model} watches no source [{self.remove}]. `jupyter handoff watch {model}` "
                "lists its sources."
            )
        _request(self.agent, self.url, f"/api/v1/watches/{self.remove}", method="DELETE")
        print(visible(f"Stopped watching [{row['id']}] {model} <- {row['source']}."))

    def body(self, model: str) -> dict:
        source = self.source
        if "://" not in source or source.startswith("file://"):
            source = os.path.abspath(os.path.expanduser(source.removeprefix("file://")))
        body = {
            "model": model,
            "source": source,
            "every": self.every,
            "on": list(self.on),
            "timeout": self.timeout,
        }
        if self.query:
            body["query"] = self.query
        if self.overdue:
            body["overdue"] = self.overdue
        if self.run:
            body["run"] = os.path.abspath(self.run)
        if self.actions:
            body["actions"] = list(self.actions)
        if self.target:
            body["target"] = self.target
        if self.params:
            body["params"] = dict(self.params)
        return body


class LineageApp(Command):
    name = "jupyter-handoff-lineage"
    description = (
        "lineage [REF] [--format json|dot]: which models use which data (watched sources and "
        "pushed datasets), where each version serves now, and which change triggered which "
        "retrain. REF: a source, a fingerprint or a model; none: the whole graph."
    )
    version = __version__
    fmt = Enum(["json", "dot"], "json", help="Output: json or dot (Graphviz).").tag(config=True)
    agent = Enum(["local", "central"], "local", help=AGENT_HELP).tag(config=True)
    url = Unicode("", help=URL_HELP).tag(config=True)
    aliases = {"format": "LineageApp.fmt", "agent": "LineageApp.agent", "url": "LineageApp.url"}
    flags = {}

    def start(self):
        query = {"format": self.fmt}
        if self.extra_args:
            ref = self.extra_args[0]
            if ("/" in ref or "*" in ref) and "://" not in ref:
                ref = os.path.abspath(ref)
            query["ref"] = ref
        try:
            raw = _get(
                self.agent, self.url, "/api/v1/lineage/graph?" + urllib.parse.urlencode(query)
            )
        except Unreachable as e:
            complain(e)
            self.exit(1)
        sys.stdout.write(raw[0].decode() + ("\n" if self.fmt == "json" else ""))
