"""Settings the agent cannot run with stop ``serve`` at start with one line naming them
(serve logs the validator's TraitError as its one critical line and exits 2)."""

import pytest
from traitlets import TraitError
from traitlets.config import Config, LoggingConfigurable

from handoff_agent.agent import HandoffAgent
from handoff_agent.forwarding.central import CentralDestination
from handoff_agent.serving.settings import Serving
from handoff_agent.serving.validation import Validation


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


def test_an_empty_home_is_refused_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty home put the registry
    config = Config()
    config.HandoffAgent.home = ""
    with pytest.raises(TraitError) as e:
        HandoffAgent(config=config)  # refused before it opens anything
    said = str(e.value)
    assert said.startswith("c.HandoffAgent.home (--home) is empty: give the agent's directory")


@pytest.mark.parametrize(
    "cls, name",
    [
        (HandoffAgent, "trust_poll_interval"),
        (HandoffAgent, "watch_tick"),
        (HandoffAgent, "check_timeout"),
        (HandoffAgent, "max_bundle_size"),
        (HandoffAgent, "db_threads"),
        (HandoffAgent, "probe_workers"),
        (HandoffAgent, "forward_backoff"),
        (HandoffAgent, "forward_backoff_cap"),
        (HandoffAgent, "retrain_poll"),
        (HandoffAgent, "check_lease"),
        (HandoffAgent, "spool_stall_timeout"),
        (HandoffAgent, "revalidation_timeout"),
        (HandoffAgent, "sandbox_max_file_size"),
        (Serving, "workers"),
        (Serving, "request_timeout"),
        (Serving, "load_timeout"),
        (Serving, "max_rows"),
        (Serving, "max_body_bytes"),
        (Serving, "log_segment_rows"),
        (Serving, "retention_bytes"),
        (Validation, "convert_timeout"),
        (Validation, "loadtest_timeout"),
        (Validation, "level_seconds"),
        (Validation, "sample_rows"),
        (CentralDestination, "timeout"),
        (Serving, "poll_interval"),
        (Serving, "tick_seconds"),
        (Serving, "log_flush_seconds"),
        (Validation, "poll_interval"),
        (CentralDestination, "status_interval"),
    ],
)
@pytest.mark.parametrize("value", [0, -1])
def test_a_poll_interval_or_size_of_zero_or_less_is_refused_naming_it(cls, name, value):
    """0 made an idle agent spin a core (or refused every push, timed every check out)."""
    said = refused(cls, name, value)
    assert said == f"c.{cls.__name__}.{name} must be more than 0, not {value}."


def test_every_notice_retry_delay_must_be_more_than_0():
    said = refused(HandoffAgent, "notice_retry_seconds", [5.0, 0.0])
    assert said == "c.HandoffAgent.notice_retry_seconds must be more than 0, not 0."
    assert configured(HandoffAgent, "notice_retry_seconds", [0.2]).notice_retry_seconds == [0.2]


@pytest.mark.parametrize(
    "name", ["database_busy_timeout", "min_free_space", "warm_workers", "check_memory_budget"]
)
def test_a_setting_where_0_turns_it_off_refuses_less(name):
    said = refused(HandoffAgent, name, -1)
    assert said == f"c.HandoffAgent.{name} must be at least 0 (0 turns it off), not -1."
    assert getattr(configured(HandoffAgent, name, 0), name) == 0


@pytest.mark.parametrize("name", ["sandbox_max_processes", "workers"])
@pytest.mark.parametrize("value", [0, -1])
def test_a_sandbox_process_limit_of_0_or_less_is_refused(tmp_path, name, value):
    """0 was a pids cgroup no worker starts in (as root), or no room for a thread. traitlets
    validates no value equal to the trait's static default (Integer's 0): the agent checks it
    itself, before it opens anything."""
    config = Config()
    config.HandoffAgent.home = str(tmp_path)
    config.HandoffAgent[name] = value
    with pytest.raises(TraitError) as e:
        HandoffAgent(config=config)
    assert str(e.value) == f"c.HandoffAgent.{name} must be more than 0, not {value}."


@pytest.mark.parametrize(
    "cls, name", [(HandoffAgent, "check_memory_limit"), (Serving, "worker_memory_limit")]
)
def test_a_worker_memory_limit_too_small_to_import_python_is_refused(cls, name):
    said = refused(cls, name, 1 << 20)
    assert said == (
        f"c.{cls.__name__}.{name} must be at least 268435456 (256 MiB; a worker's Python and "
        "NumPy need more), not 1048576."
    )
    assert getattr(configured(cls, name, 256 << 20), name) == 256 << 20


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_a_prediction_log_sample_rate_outside_0_to_1_is_refused(value):
    said = refused(Serving, "sample_rate", value)
    if value != value:
        assert said == "c.Serving.sample_rate must be a finite number, not nan."
    else:
        assert said == f"c.Serving.sample_rate must be from 0 to 1, not {value:g}."
    assert [configured(Serving, "sample_rate", v).sample_rate for v in (0, 1)] == [0, 1]


@pytest.mark.parametrize("value", [0, -1])
def test_max_test_slots_below_1_is_refused(value):
    """0 left every validated version unloaded: every validation's load test failed."""
    said = refused(Serving, "max_test_slots", value)
    assert said == (
        "c.Serving.max_test_slots must be at least 1 (validation load-tests each version in a "
        f"test slot), not {value}."
    )
    assert configured(Serving, "max_test_slots", 1).max_test_slots == 1


@pytest.mark.parametrize("value", [-1, 65536])
def test_a_serving_port_outside_0_to_65535_is_refused(value):
    said = refused(Serving, "port", value)
    assert said == (
        f"c.Serving.port must be a port from 0 to 65535 (0 picks a free one), not {value}."
    )


def test_secret_variables_leave_the_environment_when_configuration_gives_the_values(
    agent_in_process, tmp_path, monkeypatch
):
    """Configuration wins over HANDOFF_TOKEN and HANDOFF_DATABASE_URL; the variables stayed
    for every child of the agent to inherit (test_sandbox sees it from a started agent)."""
    import os

    monkeypatch.setenv("HANDOFF_TOKEN", "e" * 43)
    monkeypatch.setenv("HANDOFF_DATABASE_URL", "postgresql://u:env-password@nowhere/db")
    a = agent_in_process(token="c" * 43, database_url=f"sqlite:///{tmp_path / 'r.db'}")
    assert a.token == "c" * 43 and a.registry.backend == "sqlite"
    assert "HANDOFF_TOKEN" not in os.environ and "HANDOFF_DATABASE_URL" not in os.environ
