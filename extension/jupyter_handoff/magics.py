"""``%mlops``: the notebook's way in. Arguments come from magic_arguments parsers."""

from __future__ import annotations

import math
import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser

from handoff_agent.vocabulary import param_value, table_time

from .errors import HandoffUsageError
from .refs import parse_ref


def _parsers() -> dict[str, MagicArgumentParser]:
    p = {}
    push = p["push"] = MagicArgumentParser(
        prog="mlops push", description="Hand a model to the agent as a new version."
    )
    push.add_argument("model", help="variable holding the fitted model")
    push.add_argument("--name", required=True, help="model name, e.g. churn")
    push.add_argument("--data", nargs=2, metavar=("X", "y"), help="evaluation features and target")
    push.add_argument(
        "--sensitive",
        nargs="+",
        metavar="COL|VAR",
        help="sensitive features: columns of X, or variables (Series/arrays aligned with X)",
    )
    push.add_argument("--reference", metavar="X_REF", help="reference (training) features")
    push.add_argument("--message", "-m", default="", help="what changed in this version")
    push.add_argument("--tag", action="append", default=[], metavar="K=V", help="a tag; repeat")
    push.add_argument("--format", choices=["pickle", "skops"], help="model serialization")
    push.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="CHECK.KEY=VALUE",
        help="override a gate threshold for this push, e.g. fairness.max_dp_diff=0.2; repeat",
    )
    versions = p["versions"] = MagicArgumentParser(
        prog="mlops versions", description="List models, or the versions of one."
    )
    versions.add_argument("name", nargs="?", help="model name")
    show = p["show"] = MagicArgumentParser(
        prog="mlops show", description="Show one version: manifest, lineage, checks."
    )
    show.add_argument("ref", metavar="NAME[:N]", help="model name, optionally :version")
    report = p["report"] = MagicArgumentParser(
        prog="mlops report", description="Show a version's report inline."
    )
    report.add_argument("ref", metavar="NAME[:N]", help="model name, optionally :version")
    report.add_argument("--format", choices=["html", "md", "json"], default="html")
    compare = p["compare"] = MagicArgumentParser(
        prog="mlops compare",
        description="Compare versions side by side from stored results: metrics with deltas "
        "and CIs, charts, data fingerprints, schema and gate verdicts. One NAME alone compares "
        "its latest version with its champion; NAME:prod the version in production.",
    )
    compare.add_argument("refs", nargs="+", metavar="NAME[:N|:STAGE]", help="versions to compare")
    compare.add_argument("--baseline", metavar="NAME:N", help="deltas against this version")
    history = p["history"] = MagicArgumentParser(
        prog="mlops history",
        description="A model's versions, newest first: verdict, who and when, message, "
        "data fingerprints (marking where the data changed) and stage.",
    )
    history.add_argument("name", help="model name")
    history.add_argument("--limit", type=int, default=50, help="most versions shown")
    forward = p["forward"] = MagicArgumentParser(
        prog="mlops forward",
        description="Hand a version to a destination now, whatever its verdict (recorded).",
    )
    forward.add_argument("ref", metavar="NAME:N", help="model name and version")
    forward.add_argument("--to", required=True, metavar="DEST", help="destination, e.g. central")
    prune = p["prune"] = MagicArgumentParser(
        prog="mlops prune",
        description="Free the agent's disk: remove the bundles of a model's older versions "
        "that nothing needs; their records and reports stay.",
    )
    prune.add_argument("name", help="model name")
    prune.add_argument("--keep", type=int, required=True, help="newest versions kept whole")
    prune.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    lineage = p["lineage"] = MagicArgumentParser(
        prog="mlops lineage",
        description="For NAME[:N]: its data, notebook, code, parent and stages. "
        "For a dataset fingerprint: which versions used it and where they are now.",
    )
    lineage.add_argument("ref", metavar="NAME[:N]|FINGERPRINT|SOURCE")
    watch = p["watch"] = MagicArgumentParser(
        prog="mlops watch",
        description="Watch a data source for a model: the agent fingerprints it on schedule "
        "and, on the changes named by --on, alerts, re-runs the production version's checks "
        "on the new rows (--action revalidate --target COL) and runs the --run notebook (never "
        "after a schema change). Without --source: the model's watched sources.",
    )
    watch.add_argument("name", help="model name")
    watch.add_argument(
        "--source", metavar="PATH_OR_URL", help="a file, a glob of Parquet/CSV, or a SQL URL"
    )
    watch.add_argument("--query", metavar="SQL", help="for a SQL URL: the query watched")
    watch.add_argument("--every", default="1h", help="period, e.g. 30s, 15m, 1h, 1d")
    watch.add_argument(
        "--overdue",
        metavar="PERIOD",
        help="expected period between updates, e.g. 26h: longer without new data is overdue "
        "(default: twice --every)",
    )
    watch.add_argument(
        "--on",
        nargs="+",
        default=["change"],
        metavar="change|schema|drift|overdue",
        help="the changes that trigger the actions",
    )
    watch.add_argument("--run", metavar="NOTEBOOK", help="retraining notebook run headless")
    watch.add_argument(
        "--action",
        action="extend",
        nargs="+",
        metavar="ACTION",
        help="alert, revalidate, retrain, pause_canary or rollback_canary; one or more "
        "(default: alert, and retrain with --run)",
    )
    watch.add_argument(
        "--target",
        metavar="COLUMN",
        help="the rows' label column, which --action revalidate scores the model against",
    )
    watch.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="notebook parameter"
    )
    watch.add_argument("--timeout", type=float, default=600, help="seconds the notebook may run")
    watch.add_argument(
        "--remove", type=int, metavar="ID", help="stop watching source ID (as the listing shows)"
    )
    dossier = p["dossier"] = MagicArgumentParser(
        prog="mlops dossier",
        description="Save the signed dossier central made for a version: model card, checks, "
        "gate, sign-offs, stages and audit rows, checkable offline with "
        "`jupyter handoff dossier verify`.",
    )
    dossier.add_argument("ref", metavar="NAME:N", help="model name and version")
    dossier.add_argument(
        "--out", metavar="FILE", help="where to save it (default: dossier-NAME-N.zip here)"
    )
    deployments = p["deployments"] = MagicArgumentParser(
        prog="mlops deployments",
        description="Where each version serves at central, live: slot, traffic %, requests, "
        "error rate, p50/p99, alarms. Without NAME, every model that serves.",
    )
    deployments.add_argument("name", nargs="?", help="model name")
    predict = p["predict"] = MagicArgumentParser(
        prog="mlops predict",
        description="Try the deployed model: send DATA to its endpoint at central and show "
        "the predictions with the version and slot that answered.",
    )
    predict.add_argument("name", help="model name")
    predict.add_argument(
        "data", metavar="DATA", help="variable holding a DataFrame, a 2-D array or texts"
    )
    predict.add_argument("--version", type=int, metavar="N", help="a served version, not routed")
    monitor = p["monitor"] = MagicArgumentParser(
        prog="mlops monitor",
        description="A model's monitoring at central: performance with CIs and the "
        "label-free estimate, drift, traffic and latency against their thresholds, and alerts.",
    )
    monitor.add_argument("name", help="model name")
    monitor.add_argument(
        "--window", choices=["hourly", "daily", "monthly"], default="daily", help="window kind"
    )
    agent = p["agent"] = MagicArgumentParser(
        prog="mlops agent", description="Manage the local agent."
    )
    agent.add_argument("action", choices=["status", "start", "stop"])
    return p


PARSERS = _parsers()
HELP = ("-h", "--help")  # what people type for help, after a subcommand or alone


def _usage() -> str:
    return "\n\n".join(p.format_help() for p in PARSERS.values())


def _overview() -> str:
    """What ``%mlops help`` prints: a line per subcommand."""
    width = max(map(len, PARSERS))
    lines = [f"  %mlops {sub:<{width}}  {p.description}" for sub, p in PARSERS.items()]
    return "\n".join(["Subcommands:", *lines, "`%mlops SUBCOMMAND --help` shows its options."])


def _parse(parser: MagicArgumentParser, words: list[str]):
    """argparse's reading of ``words``, its complaint one line with the usage as the hint. An
    option the subcommand lacks is named first: argparse would name the required one that
    a typo (``--nmae``) left out instead."""
    sub = parser.prog.removeprefix("mlops ")
    usage = " ".join(parser.format_usage().removeprefix("::").split())
    hint = f"Usage: {usage}" if len(usage) < 100 else f"`%mlops {sub} --help` shows its options."
    options = parser._option_string_actions
    for word in words:
        opt = word.split("=", 1)[0]
        if opt.startswith("--") and len(opt) > 2 and not any(o.startswith(opt) for o in options):
            raise HandoffUsageError(f"%mlops {sub} has no option {opt!r}.", hint)
    try:
        return parser.parse_args(words)
    except UsageError as e:  # MagicArgumentParser.error's
        if "unrecognized arguments" in str(e) and any(set(w) & set("[({") for w in words):
            # split at its spaces: `%mlops predict reviews ["so good", "bad"]`, `X[["a", "b"]]`
            raise HandoffUsageError(
                f"%mlops {sub} takes variables, not a literal list or expression.",
                "Assign it first, e.g. `few = [...]`, then name `few`.",
            ) from None
        raise HandoffUsageError(f"%mlops {sub}: {e}.", hint) from None


def _to_the_second(table, column: str):
    """ISO times as ``%mlops history`` shows them (``vocabulary.table_time``), not to the
    microsecond with an offset: the table is read, the API keeps the full time."""
    if column in table:
        table[column] = table[column].map(lambda t: table_time(t) if isinstance(t, str) else t)
    return table


@magics_class
class MlopsMagics(Magics):
    @line_magic
    def mlops(self, line: str):
        try:
            words = shlex.split(line, comments=True)  # `# why` after a magic, as after code
        except ValueError as e:  # an unclosed quote
            raise HandoffUsageError(
                f"Cannot split the line into words: {e}.", "Close the quote, e.g. -m 'new data'."
            ) from None
        if words and words[0] in ("help", *HELP):
            print(_overview())
            return None
        if not words or words[0] not in PARSERS:
            raise HandoffUsageError(
                f"Unknown subcommand {words[0]!r}." if words else "Missing subcommand.",
                f"Use one of: {', '.join(PARSERS)}. `%mlops?` shows the options.",
            )
        parser = PARSERS[words[0]]
        if any(w in HELP for w in words[1:]):
            print(parser.format_help().removeprefix("::\n\n  ").rstrip())
            return None
        return getattr(self, f"_{words[0]}")(_parse(parser, words[1:]))

    def _var(self, name: str, what: str):
        ns = self.shell.user_ns
        if name not in ns and not name.isidentifier():  # X_test.head(), X[cols]
            code = any(c in name for c in "([.") and " " not in name  # else: text, say
            example = name if code else "X_test.head()"
            raise HandoffUsageError(
                f"The {what} is named by a variable, not an expression: {name!r}.",
                f"Assign it first, e.g. `few = {example}`, then name `few`.",
            )
        if name not in ns:
            raise HandoffUsageError(
                f"No variable named {name!r} for the {what}.",
                "Check the spelling, and run the cell that defines it first.",
            )
        return ns[name]

    def _push(self, args):
        from .api import push

        model = self._var(args.model, "model")
        X = y = None
        if args.data:
            X, y = self._var(args.data[0], "evaluation data"), self._var(args.data[1], "target")
        tags = {}
        for t in args.tag:
            k, eq, v = t.partition("=")
            if not eq or not k:
                raise HandoffUsageError(f"Tag {t!r} is not K=V.", "Write --tag team=risk.")
            tags[k] = v
        reference = self._var(args.reference, "reference data") if args.reference else None
        gate = {}
        for g in args.gate:
            k, eq, v = g.partition("=")
            if not eq or "." not in k:
                raise HandoffUsageError(
                    f"Gate override {g!r} is not CHECK.KEY=VALUE.",
                    "Write e.g. --gate fairness.max_dp_diff=0.2",
                )
            gate[k] = param_value(v)
        version = push(
            model,
            args.name,
            X=X,
            y=y,
            sensitive=self._sensitive(args.sensitive, X),
            reference=reference,
            message=args.message,
            tags=tags,
            format=args.format,
            gate=gate,
        )
        return version

    def _sensitive(self, words, X):
        """Each word names a column of X or, failing that, a variable holding the values."""
        if not words:
            return None
        columns = set(map(str, getattr(X, "columns", ())))
        out = []
        for word in words:
            if word in columns or word not in self.shell.user_ns:
                out.append(word)  # a column, or a name the data checks will report as missing
                continue
            import numpy as np
            import pandas as pd

            value = self.shell.user_ns[word]
            if isinstance(value, pd.Series) and value.name is None:
                value = value.rename(word)
            elif not isinstance(value, (pd.Series, pd.DataFrame)) and np.ndim(value) == 1:
                value = pd.Series(np.asarray(value), name=word)
            out.append(value)
        return out

    def _versions(self, args):
        import pandas as pd

        from .api import versions

        found = versions(args.name)
        if args.name is None:
            table = pd.DataFrame(found)
            if "imported" in table and not table["imported"].any():
                table = table.drop(columns="imported")  # only a monitored import says True
            return _to_the_second(table, "created")
        cols = ["number", "status", "pushed_by", "pushed_at", "message", "digest"]
        return _to_the_second(pd.DataFrame([v._data for v in found], columns=cols), "pushed_at")

    def _show(self, args):
        from .api import get

        return get(*parse_ref(args.ref))

    def _report(self, args):
        from .api import report

        return report(*parse_ref(args.ref), format=args.format)

    def _compare(self, args):
        from .api import compare

        return compare(*args.refs, baseline=args.baseline)

    def _history(self, args):
        from .api import history

        if args.limit < 1:
            raise HandoffUsageError("--limit must be at least 1.", "e.g. --limit 20")
        return history(args.name, limit=args.limit)

    def _forward(self, args):
        from .api import forward

        name, number = parse_ref(args.ref)
        if number is None:
            raise HandoffUsageError("Say which version to forward.", "Write NAME:N, e.g. churn:3.")
        answer = forward(name, number, to=args.to)
        ref = f"{name}:{number}"
        if answer.get("queued"):
            print(f"{ref} is queued for {args.to}; `%mlops show {ref}` follows its delivery.")
        else:
            print(
                f"{ref} already goes to {args.to} (queued or delivered); "
                f"`%mlops show {ref}` follows its delivery."
            )

    def _prune(self, args):
        from handoff_agent.vocabulary import MAX_KEEP, prune_line

        from .api import prune

        if not 1 <= args.keep <= MAX_KEEP:
            raise HandoffUsageError(f"--keep must be from 1 to {MAX_KEEP:,}.", "e.g. --keep 5")
        print(prune_line(prune(args.name, args.keep, dry_run=args.dry_run)))

    def _lineage(self, args):
        from .api import lineage

        return lineage(args.ref)

    def _watch(self, args):
        from .watching import unwatch, watch

        if args.remove is not None:
            if args.source is not None:
                raise HandoffUsageError(
                    "--remove stops a watch; it takes no --source.",
                    f"e.g. %mlops watch {args.name} --remove {args.remove}",
                )
            return unwatch(args.name, args.remove)
        if args.source is None and (
            args.run or args.query or args.action or args.param or args.overdue or args.target
        ):
            raise HandoffUsageError(
                "--run, --query, --action, --param, --overdue and --target need a --source.",
                f"e.g. %mlops watch {args.name} --source data/*.parquet --run retrain.ipynb",
            )
        params = {}
        for p in args.param:
            k, eq, v = p.partition("=")
            if not eq or not k.isidentifier():
                raise HandoffUsageError(f"Parameter {p!r} is not K=V.", "e.g. --param epochs=3")
            params[k] = param_value(v)
        if not math.isfinite(args.timeout) or args.timeout <= 0:
            raise HandoffUsageError("--timeout must be positive.", "e.g. --timeout 600")
        return watch(
            args.name,
            args.source,
            query=args.query,
            every=args.every,
            overdue=args.overdue,
            on=args.on,
            run=args.run,
            actions=args.action,
            params=params or None,
            timeout=args.timeout,
            target=args.target,
        )

    def _dossier(self, args):
        from .dossier_save import dossier

        return dossier(args.ref, out=args.out)

    def _deployments(self, args):
        from .serving_calls import deployments

        return deployments(args.name)

    def _predict(self, args):
        from .serving_calls import predict

        return predict(args.name, self._var(args.data, "data"), version=args.version)

    def _monitor(self, args):
        from .monitor_view import monitor

        return monitor(args.name, window=args.window)

    def _agent(self, args):
        from handoff_agent import runtime

        info = runtime.read()
        if args.action == "status":
            answer = runtime.health(info["url"]) if info else None
            if answer is not None:
                print(f"Agent running at {info['url']} (pid {info['pid']}, home {info['home']}).")
                if disk := runtime.disk_line(answer):
                    print(disk)
                if deliveries := runtime.outbox_line(runtime.outbox_state(info)):
                    print(deliveries)
            elif info:
                print(f"The agent at {info['url']} (pid {info['pid']}) runs but does not answer.")
            else:
                print("No agent is running. `%mlops agent start` starts one.")
        elif args.action == "start":
            if info and runtime.healthy(info["url"]):
                print(f"An agent is already running at {info['url']}.")
            else:
                from .client import connect

                connect(start=True)
        else:
            if not info:
                print("No agent is running.")
                return
            if runtime.stop(info):
                print(f"Stopped the agent (pid {info['pid']}).")
            else:
                print(
                    f"The agent (pid {info['pid']}) is still finishing 30 s after it was "
                    "asked to stop; `%mlops agent status` says when it has."
                )


MlopsMagics.mlops.__doc__ = (
    "Hand models from this notebook to IT through the local Handoff agent.\n\n" + _usage()
)
