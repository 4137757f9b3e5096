"""Settings the agent cannot run with stop ``serve`` at start with one line naming them
(serve logs the validator's TraitError as its one critical line and exits 2)."""

import pytest
from traitlets import TraitError
from traitlets.config import Config, LoggingConfigurable

from handoff_agent.agent import HandoffAgent
from handoff_agent.serving.settings import Serving


def configured(cls, name, value):
    """An instance with ``c.<cls>.<name> = value`` validated, without building an agent
    (HandoffAgent's own __init__ opens its home and database)."""
    config = Config()
    config[cls.__name__][name] = value
    if cls is HandoffAgent:
        agent = HandoffAgent.__new__(HandoffAgent)
        LoggingConfigurable.__init__(agent, config=config)
        return agent
    return cls(config=config)


def refused(cls, name, value) -> str:
    with pytest.raises(TraitError) as e:
        configured(cls, name, value)
    return str(e.value)


@pytest.mark.parametrize("cls", [HandoffAgent, Serving])
@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_ip_is_refused_naming_the_setting(cls, value):
    said = refused(cls, "ip", value)
    assert said.startswith(f"c.{cls.__name__}.ip is empty: give the interface to listen on")


@pytest.mark.parametrize("cls", [HandoffAgent, Serving])
def test_a_given_ip_is_kept(cls):
    assert configured(cls, "ip", "0.0.0.0").ip == "0.0.0.0"


def test_a_relative_home_is_made_absolute_where_it_is_set(tmp_path, monkeypatch):
    """The runtime file and the home lock name it: commands run elsewhere find the same home."""
    from handoff_agent.cli import _home

    monkeypatch.chdir(tmp_path)
    assert configured(HandoffAgent, "home", "relhome").home == str(tmp_path / "relhome")
    config = Config()
    config.HandoffAgent.home = "relhome"
    assert _home(config) == tmp_path / "relhome"


def test_an_empty_home_is_refused_naming_the_setting():
    config = Config()
    config.HandoffAgent.home = ""
    with pytest.raises(TraitError) as e:
        HandoffAgent(config=config)  # refused before it opens anything
    said = str(e.value)
    assert said.startswith("c.HandoffAgent.home (--home) is empty: give the agent's directory")
