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
