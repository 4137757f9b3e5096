"""A config file that does not load stops the command with one line naming the file and the
line: it was logged with a traceback quoting the line (a password, say) and the agent started
on defaults (a central as a local agent on SQLite)."""

import os
import subprocess
import sys

import pytest

from handoff_agent.cli import ServeApp

PASSWORD = "pw-7c1e93d4a5b2f608"
CASES = [
    (
        "jupyter_handoff_serve_config.py",
        'c.HandoffAgent.role = "central"\n'
        f'c.HandoffAgent.database_url = "postgresql://h:{PASSWORD}@db/h\n',
        "line 2: SyntaxError: unterminated string literal (detected at line 2).",
    ),
    (
        "jupyter_handoff_serve_config.json",
        '{"HandoffAgent": {"port": 18781,,\n "token": "' + PASSWORD + '"}}',
        "line 1: JSONDecodeError: Expecting property name enclosed in double quotes.",
    ),
    (
        "jupyter_handoff_serve_config.py",
        f'c.HandoffAgent.token = "{PASSWORD}"\n\nc.HandoffAgent.home = hom\n',
        "line 3: NameError: name 'hom' is not defined.",
    ),
]


@pytest.mark.parametrize("name, text, said", CASES)
def test_a_config_file_that_does_not_load_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, name, text, said
):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    (tmp_path / name).write_text(text)
    with pytest.raises(SystemExit) as e:
        ServeApp().initialize([])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"Config file {tmp_path / name}, {said} Fix it: Handoff does not run on a config file "
        "it cannot read.\n"
    )


def test_serve_with_a_broken_config_file_does_not_start_on_defaults(tmp_path):
    name, text, said = CASES[0]
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / name).write_text(text)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
    }
    p = subprocess.run(
        [sys.executable, "-m", "handoff_agent", "serve", "--home", str(tmp_path / "home")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(p.stderr.splitlines()) == 1 and said in p.stderr, p.stderr
    assert PASSWORD not in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "home").exists() and not (tmp_path / "rt").exists()


@pytest.mark.parametrize(
    "option, said",
    [
        ("--HandofAgent.port=18793", "--HandofAgent.…: no settings are named HandofAgent; did "
         "you mean --HandoffAgent.…?"),
        ("--Serving.wrokers=2", "--Serving.wrokers: Serving has no setting 'wrokers'; did you "
         "mean --Serving.workers?"),
    ],
)  # fmt: skip
def test_a_misspelt_setting_on_the_command_line_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, option, said
):
    """traitlets ignored a misspelt class and only warned of a misspelt setting, and the
    agent ran without it (on another port, with other workers)."""
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        ServeApp().initialize(["--home", str(tmp_path / "home"), option])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == said
