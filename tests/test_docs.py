"""Docs cannot go stale: every command, magic and setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from handoff_agent.agent import HandoffAgent
from handoff_agent.cli import HandoffApp
from handoff_agent.serving.settings import Serving
from handoff_agent.serving.validation import Validation
from jupyter_handoff.config import Handoff
from jupyter_handoff.magics import PARSERS

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(HandoffApp.subcommands))
def test_cli_command_in_readme(command):
    assert f"`jupyter handoff {command}" in README


@pytest.mark.parametrize("sub", sorted(PARSERS))
def test_magic_in_readme(sub):
    assert f"`%mlops {sub}" in README


@pytest.mark.parametrize("cls", [HandoffAgent, Handoff, Serving, Validation])
def test_every_setting_has_help(cls):
    for name, trait in cls.class_traits(config=True).items():
        assert trait.help and len(trait.help) > 10, f"{cls.__name__}.{name} has no help"


def test_readme_test_command_is_what_ci_runs():
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    command = "python -m pytest -n 2 --dist loadfile --durations=20 --nbval-lax tests examples"
    assert command in README and command in ci


def test_readme_gives_the_model_name_rule_the_agent_applies():
    """The pattern and the ``..`` refusal, as names.py has them, and the refusal says both."""
    from handoff_agent import names

    assert f"`^{names.NAME_PATTERN}$` with no `..` anywhere" in README
    assert names.is_valid("a.b") and not names.is_valid("a..b")
    assert "no '..'" in names.HINT
