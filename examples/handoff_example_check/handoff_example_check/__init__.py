"""An example third-party Handoff check: is the evaluation set big enough to trust?"""

from __future__ import annotations

from handoff_agent.checks.api import CheckContext, CheckResult

__version__ = "0.1.0"


class RowCountCheck:
    name = "row_count"
    title = "The evaluation set is large enough to trust the metrics"
    needs = ("X",)
    compares_champion = False  # never reads ctx.champion: its worker need not load it
    defaults = {"min_rows": 500, "min_rows_per_class": 30}

    def run(self, ctx: CheckContext, **kwargs) -> CheckResult:
        if ctx.X is None:
            return CheckResult("skip", "Skipped: no evaluation data was pushed.")
        cfg = {**self.defaults, **ctx.config, **kwargs}
        rows = len(ctx.X)
        metrics = {"rows": rows}
        problems = []
        if rows < cfg["min_rows"]:
            problems.append(f"only {rows} evaluation rows (fewer than {cfg['min_rows']})")
        if ctx.y is not None and ctx.task == "classification":
            counts = ctx.y.value_counts()
            metrics["rows_per_class"] = {str(k): int(v) for k, v in counts.items()}
            rare = [str(k) for k, v in counts.items() if v < cfg["min_rows_per_class"]]
            if rare:
                problems.append(
                    f"class(es) {', '.join(rare)} have fewer than {cfg['min_rows_per_class']} rows"
                )
        if problems:
            return CheckResult(
                "warn",
                "Metrics may be unreliable: " + "; ".join(problems) + ". Push more rows.",
                metrics,
            )
        return CheckResult("pass", f"{rows} evaluation rows.", metrics)
