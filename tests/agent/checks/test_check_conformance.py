"""The conformance kit passes for every built-in check and for the example plugin."""

import importlib.util
import sys
from pathlib import Path

import pytest

from handoff_agent.checks.api import CheckResult
from handoff_agent.checks.drift import DriftCheck
from handoff_agent.checks.explainability import ExplainabilityCheck
from handoff_agent.checks.fairness import FairnessCheck
from handoff_agent.checks.latency import LatencyCheck
from handoff_agent.checks.loads import LoadsCheck
from handoff_agent.checks.performance import PerformanceCheck
from handoff_agent.checks.schema import SchemaCheck
from handoff_agent.checks.smoke import SmokeCheck
from handoff_agent.plugins import PluginRegistry
from handoff_agent.testing import check_check, parametrize_with_checks

EXAMPLE = Path(__file__).parents[3] / "examples" / "handoff_example_check"


def _example_check_class():
    """Import the example plugin from its folder, without installing it."""
    path = EXAMPLE / "handoff_example_check" / "__init__.py"
    spec = importlib.util.spec_from_file_location("handoff_example_check", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("handoff_example_check", module)
    spec.loader.exec_module(module)
    return module.RowCountCheck


BUILT_INS = [
    LoadsCheck(),
    SmokeCheck(),
    SchemaCheck(),
    PerformanceCheck(),
    LatencyCheck(),
    FairnessCheck(),
    ExplainabilityCheck(),
    DriftCheck(),
]


@parametrize_with_checks([*BUILT_INS, _example_check_class()])
def test_conformance(check, conformance_test):
    conformance_test(check)


def test_builtins_are_registered_under_their_names():
    # Given the built-ins as handoff_agent.plugins registers them (not what is installed),
    # every built-in is registered under its own name, pointing at its class.
    reg = PluginRegistry().add_builtins()
    assert set(reg.names("check")) == {c.name for c in BUILT_INS}
    for check in BUILT_INS:
        cls = type(check)
        assert reg.specs("check")[check.name] == f"{cls.__module__}:{cls.__name__}"


def test_example_plugin_declares_its_entry_point():
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points."handoff_agent.checks"]' in text
    assert 'row_count = "handoff_example_check:RowCountCheck"' in text


def test_example_plugin_warns_on_a_small_evaluation_set():
    from handoff_agent.testing import make_context, run_check

    res = run_check(_example_check_class()(), make_context("classification"))
    assert res.status == "warn"
    assert "150 evaluation rows" in res.message


def test_kit_catches_a_non_conforming_check():
    # Given a check that returns numpy floats and mutates the data
    import numpy as np

    class Sloppy:
        name = "sloppy"
        title = "Sloppy"
        needs = ("X",)
        defaults = {}

        def run(self, ctx, **kwargs):
            ctx.X["x0"] = 0.0
            return CheckResult("pass", metrics={"nan": np.float64("nan")})

    # Then the kit names what is wrong
    with pytest.raises(AssertionError, match=r"JSON-serialisable|modified ctx"):
        check_check(Sloppy())
