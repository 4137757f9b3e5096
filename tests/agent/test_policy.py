"""Central's policy.toml: a misspelt table or key, or a quoted boolean, stops central with one
line naming the setting, instead of silently keeping (or flipping) a default."""

import pytest

from handoff_agent.policy import Policy

INTAKE = '[intake]\nsecrets = ["6JfrmvIwbIjtfGCGsyGbcr0_WyE_hVBcLEF75RPNVXE"]\n'


def load(tmp_path, text):
    path = tmp_path / "policy.toml"
    path.write_text(INTAKE + text)
    return Policy.load(path)


@pytest.mark.parametrize(
    "text, line",
    [
        ("[sandbox]\nrequir = true\n", "[sandbox]: unknown key 'requir'; the keys are require."),
        ("[monitr]\ndaily = true\n", "unknown table or key 'monitr'; the tables are [intake],"),
        ("[stagess.production]\nadmin = 1\n", "unknown table or key 'stagess'"),
        (
            '[[watch]]\nmodel = "m"\nsource = "s.csv"\nevry = "1h"\n',
            "[[watch]] #1: unknown key 'evry'; the keys are model, source, query, every,",
        ),
    ],
)
def test_an_unknown_table_or_key_is_refused_naming_it(tmp_path, text, line):
    with pytest.raises(ValueError) as e:
        load(tmp_path, text)
    assert line in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_intake_key_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(INTAKE + "gate_overide = true\n")
    with pytest.raises(ValueError) as e:
        Policy.load(path)
    assert "[intake]: unknown key 'gate_overide'; the keys are secrets," in str(e.value)
    assert "gate_overrides" in str(e.value)


@pytest.mark.parametrize(
    "table, key, value",
    [
        ("intake", "gate_overrides", '"false"'),
        ("intake", "revalidate", '"no"'),
        ("intake", "revalidate", "0"),
        ("sandbox", "require", '"no"'),
    ],
)
def test_a_boolean_takes_only_true_or_false(tmp_path, table, key, value):
    path = tmp_path / "policy.toml"
    body = f"{key} = {value}\n"
    path.write_text(INTAKE + body if table == "intake" else INTAKE + f"[{table}]\n{body}")
    with pytest.raises(ValueError) as e:
        Policy.load(path)
    assert f"[{table}] {key} must be true or false (unquoted), not " in str(e.value)


def test_real_booleans_and_the_documented_keys_load(tmp_path):
    p = load(
        tmp_path,
        "gate_overrides = true\nrevalidate = false\nmax_skew_seconds = 60\naccept_pickle = false\n"
        "[sandbox]\nrequire = true\n[stages.approved]\nreviewer = 2\n"
        "[deploy]\nshadow = false\n[monitor]\ndaily = true\n"
        '[[watch]]\nmodel = "m"\nsource = "s.csv"\n',
    )
    assert (p.gate_overrides, p.revalidate, p.sandbox_require, p.max_skew) == (
        True,
        False,
        True,
        60,
    )
    assert p.stages["approved"] == {"reviewer": 2} and len(p.watches) == 1


@pytest.mark.parametrize(
    "value, line",
    [
        ('"forever"', '[tokens] max_age must be a period such as "90d"'),
        ("0", "[tokens] max_age must be a period"),
        ("90", "[tokens] max_age must be a period"),  # 90 what? seconds to the agent
        ('"10"', "[tokens] max_age must be a period"),
        ("true", "[tokens] max_age must be a period"),
    ],
)
def test_tokens_max_age_is_a_period(tmp_path, value, line):
    with pytest.raises(ValueError) as e:
        load(tmp_path, f"[tokens]\nmax_age = {value}\n")
    assert line in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError) as e:
        load(tmp_path, '[tokens]\nmax_ages = "90d"\n')
    assert "[tokens]: unknown key 'max_ages'; the keys are max_age." in str(e.value)
    assert load(tmp_path, '[tokens]\nmax_age = "90d"\n').token_max_age == "90d"
    assert load(tmp_path, "").token_max_age == ""
