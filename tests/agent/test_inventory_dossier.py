"""A central with several models: the inventory answers risk questions, and a version's signed
dossier verifies offline, while any tampering fails with a line naming what changed."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from agent_support import assert_error
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from support import (
    RunningAgent,
    bundle_bytes,
    forwarding_args,
    handoff_cli,
    push_model,
    until,
    wait_checked,
)

sys.path.insert(0, str(Path(__file__).parent / "serving"))
from serving_support import run_on_a_drifted_day

SECRET = "first-secret-3kT9qLm2VxZp7RwY8nB4"
CHECKS = "--HandoffAgent.checks=['loads', 'fairness', 'drift']"
POLICY = f"""
[intake]
trusted_types = []
revalidate = true
[intake.senders]
alice = "{SECRET}"
[stages.approved]
reviewer = 1
[stages.canary]
reviewer = 1
[stages.production]
reviewer = 1
admin = 1

[monitor]  # daily windows judged on 50 rows: one imported day closes a window that can alert
daily = true
monthly = false
rolling_minutes = 0
min_samples = 50
every_seconds = 86400
"""


def cli(agent: RunningAgent, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """``jupyter handoff ARGS`` as a user runs it, finding agents through the runtime dir."""
    return handoff_cli(agent.env, *args, cwd=cwd)


def data(seed: int, n: int = 400, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)) + shift, columns=["tenure", "spend", "visits"])
    y = pd.Series((X["tenure"] + X["spend"] > 2 * shift).astype(int), name="churned")
    return X, y


def central_version(local: RunningAgent, name: str, number: int) -> dict | None:
    v = local.request("GET", f"/api/v1/models/{name}/versions/{number}")[1]
    return next((f["remote"] for f in v.get("forwards", []) if f.get("remote")), None)


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend):
    """Central with four models: churn (in production, then a v2 on new data), credit,
    fraud (fairness could not be judged: a warning) and nb (needed a type trusted by hand)."""
    tmp = tmp_path_factory.mktemp("site")
    (tmp / "policy.toml").write_text(POLICY)
    central = RunningAgent(
        tmp / "central",
        tmp / "rt-central",
        ["--role", "central", "--policy", str(tmp / "policy.toml"), CHECKS],
    )
    central.start()
    local = RunningAgent(
        tmp / "local",
        tmp / "rt-local",
        [
            *forwarding_args(central, SECRET, backoff_cap=0.5),
            "--HandoffAgent.checks=[]",  # central checks every version again (revalidate)
        ],
    )
    local.start()
    bob = central.make_token("bob", "reviewer")
    carol = central.make_token("carol", "admin")
    X, y = data(0)
    gender = pd.Series(np.where(np.arange(len(X)) % 2, "f", "m"), name="gender")
    region = pd.Series(["north"] * len(X), name="region")
    pushes = {
        "churn": push_model(
            local, LogisticRegression().fit(X, y), "churn", X=X, y=y, sensitive=[gender],
            reference=X, message="first churn model", tags={"team": "retention"},
        ),
        "fraud": push_model(
            local, LogisticRegression(C=0.5).fit(X, y), "fraud", X=X, y=y, sensitive=[region]
        ),
        "credit": push_model(local, LogisticRegression().fit(*data(1)), "credit", X=data(1)[0],
                             y=data(1)[1]),
        "nb": push_model(local, GaussianNB().fit(*data(2)), "nb", X=data(2)[0], y=data(2)[1]),
    }  # fmt: skip
    for name, v in pushes.items():
        wait_checked(local, name, v.number)
    # nb waits at central for a type no list trusts; carol, an admin, trusts it
    until(lambda: central_version(local, "nb", 1), what="nb at central")
    until(
        lambda: central.request("GET", "/api/v1/models/nb/versions/1")[1]["stage"] == "needs_trust",
        what="nb in needs_trust",
    )
    status, body = central.request(
        "POST", "/api/v1/trust", {"types": ["sklearn.naive_bayes.GaussianNB"]}, token=carol
    )
    assert status == 201, body
    stage = lambda n: central.request("GET", f"/api/v1/models/{n}/versions/1")[1].get("stage")  # noqa: E731
    for name in pushes:
        until(lambda n=name: stage(n) == "validated", timeout=180, what=f"{name} validated")
    # churn:1 goes to production with four sign-offs
    path = "/api/v1/models/churn/versions/1/signoffs"
    for token, note in [(bob, "looks right"), (bob, "canary"), (bob, "ship"), (carol, "risk ok")]:
        status, body = central.request(
            "POST", path, {"decision": "approve", "comment": note}, token=token
        )
        assert status == 201, body
    assert stage("churn") == "production"
    # churn:2 comes on other data, and is validated but not promoted
    X2, y2 = data(5, shift=0.7)
    v2 = push_model(local, LogisticRegression().fit(X2, y2), "churn", X=X2, y=y2,
                    sensitive=[gender], reference=X)  # fmt: skip
    wait_checked(local, "churn", v2.number)
    until(
        lambda: (
            central.request("GET", "/api/v1/models/churn/versions/2")[1].get("stage") == "validated"
        ),
        timeout=180,
        what="churn:2 validated",
    )
    yield {"central": central, "local": local, "bob": bob, "carol": carol, "tmp": tmp}
    local.stop()
    central.stop()


def inventory(agent, query: str = "") -> dict:
    status, body = agent.request("GET", f"/api/v1/inventory{query}")
    assert status == 200, body
    return body


def by_name(doc: dict) -> dict:
    return {m["name"]: m for m in doc["models"]}


# -- the inventory --------------------------------------------------------------------------


def test_inventory_lists_every_model_with_what_a_risk_team_asks(site):
    doc = inventory(site["central"])
    rows = by_name(doc)
    assert set(rows) == {"churn", "credit", "fraud", "nb"}
    churn = rows["churn"]
    # Then the production version is described, beside the newest
    assert (churn["version"], churn["latest_version"], churn["stage"]) == (1, 2, "production")
    assert churn["owner"] == "alice"
    # where it serves: central's model server took churn:1 into production
    assert churn["serving"]["deployed"] is True
    assert churn["serving"]["where"] == "production v1 (100 %)"
    assert {"slot": "production", "version": 1, "traffic": 100.0} in churn["serving"]["slots"]
    assert rows["credit"]["serving"]["where"] is None  # validated: its test slot takes no traffic
    assert rows["credit"]["serving"]["note"] == "not deployed: no version of it serves"
    assert sorted(d["role"] for d in churn["data"]) == ["X", "reference_X", "sensitive", "y"]
    assert all(len(d["fingerprint"]) == 64 and d["source"] is None for d in churn["data"])
    assert churn["sensitive_attributes"] == ["gender"]
    assert (
        churn["fairness"]["status"] == "pass" and "gender.dp_diff" in churn["fairness"]["metrics"]
    )
    assert churn["drift"]["status"] in ("pass", "warn")
    assert churn["alerts"] == [] and doc["monitoring"]["configured"] is True
    assert (churn["last_signoff"]["user"], churn["last_signoff"]["role"]) == ("carol", "admin")
    assert churn["tags"] == {"team": "retention"}
    # what was in production, and since when (mlflow#2169)
    assert [(p["version"], p["by"], p["until"]) for p in churn["production_history"]] == [
        (1, "carol", None)
    ]
    assert doc["data_sources"]["tracked"] is False
    # Risk tags, each with why
    assert churn["risk_tags"] == ["data_changed_since_validation", "uses_sensitive_attributes"]
    changed = churn["risk"]["data_changed_since_validation"]
    assert {c["role"] for c in changed} >= {"X"} and all(c["version"] == 2 for c in changed)
    assert rows["fraud"]["risk_tags"] == ["fairness_failed_or_warned", "uses_sensitive_attributes"]
    assert rows["fraud"]["fairness"]["status"] == "warn"
    assert rows["credit"]["risk_tags"] == [] and rows["credit"]["sensitive_attributes"] == []
    assert rows["nb"]["risk_tags"] == ["trusted_types_added_by_hand"]
    trusted = rows["nb"]["risk"]["trusted_types_added_by_hand"]
    assert [(t["type"], t["trusted_by"]) for t in trusted] == [
        ("sklearn.naive_bayes.GaussianNB", "carol")
    ]
    assert trusted[0]["audit_seq"] >= 1  # from the trust list's audit


def test_a_local_agent_lists_its_own_models_with_the_stages_central_gave(site):
    rows = by_name(inventory(site["local"]))
    assert set(rows) == {"churn", "credit", "fraud", "nb"}
    assert (rows["churn"]["version"], rows["churn"]["stage"]) == (1, "production")
    assert rows["churn"]["sensitive_attributes"] == ["gender"]
    # serving lives at central, and the local inventory says where to ask
    assert rows["churn"]["serving"]["where"] is None
    assert "--agent central" in rows["churn"]["serving"]["note"]


def test_which_production_models_use_dataset_x_in_one_call(site):
    central = site["central"]
    rows = by_name(inventory(central))
    fp = next(d["fingerprint"] for d in rows["churn"]["data"] if d["role"] == "X")
    # fraud used the same data, but is not in production
    assert fp in [d["fingerprint"] for d in rows["fraud"]["data"]]
    found = inventory(central, f"?stage=production&dataset={fp}")
    assert [m["name"] for m in found["models"]] == ["churn"]
    assert [m["name"] for m in inventory(central, f"?dataset={fp[:12]}")["models"]] == [
        "churn",
        "fraud",
    ]
    assert inventory(central, "?stage=production&dataset=" + "0" * 64)["models"] == []


def test_which_models_touch_gender_in_one_call(site):
    central = site["central"]
    assert [m["name"] for m in inventory(central, "?sensitive=gender")["models"]] == ["churn"]
    tagged = inventory(central, "?tag=uses_sensitive_attributes")["models"]
    assert [m["name"] for m in tagged] == ["churn", "fraud"]
    assert [m["name"] for m in inventory(central, "?tag=team%3Dretention")["models"]] == ["churn"]
    assert [m["name"] for m in inventory(central, "?owner=alice")["models"]] == [
        "churn",
        "credit",
        "fraud",
        "nb",
    ]


@pytest.mark.parametrize(
    "query, code",
    [
        ("?tag=risky", "unknown_tag"),
        ("?dataset=xyz", "bad_filter"),
        ("?dataset=abc", "bad_filter"),
        ("?stage=Prod%20uction", "bad_filter"),
        ("?owner=..%2Fx", "bad_filter"),
    ],
)
def test_a_bad_filter_is_a_400_that_says_what_is_accepted(site, query, code):
    status, body = site["central"].request("GET", f"/api/v1/inventory{query}")
    assert_error(status, body, 400, code)


def test_inventory_command_prints_table_json_and_csv(site):
    central = site["central"]
    out = cli(central, "inventory", "--sensitive", "gender", "--format", "csv")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("name,owner,latest_version,version,stage,serving")
    assert len(lines) == 2 and lines[1].startswith("churn,alice,2,1,production,production v1")
    out = cli(central, "inventory", "--format", "json", "--tag", "fairness_failed_or_warned")
    assert [m["name"] for m in json.loads(out.stdout)["models"]] == ["fraud"]
    out = cli(central, "inventory")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "churn" in out.stdout and "alerts: those firing at central's monitor" in out.stdout
    out = cli(central, "inventory", "--tag", "nope")
    assert out.returncode == 1 and "Unknown tag 'nope'" in out.stderr and not out.stdout


# -- the signed dossier ---------------------------------------------------------------------


def test_central_made_a_signing_key_at_first_start_and_publishes_it(site):
    central = site["central"]
    key_file = central.home / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    status, body = central.request("GET", "/api/v1/keys", token=False)
    assert status == 200 and body["keys"][0]["algorithm"] == "ed25519"
    private = serialization.load_pem_private_key(key_file.read_bytes(), None)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.b64decode(body["keys"][0]["public_key"]) == raw
    secret = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    log = central.read_log()
    assert base64.b64encode(secret).decode() not in log and "PRIVATE KEY" not in log
    # each start names the key it signs with, so a key made anew shows in the audit log
    starts = central.sql("SELECT payload FROM audit WHERE action = 'agent.start'")
    assert json.loads(starts[-1]["payload"])["signing_key"] == body["keys"][0]["key_id"]
    # a local agent signs nothing
    status, body = site["local"].request("GET", "/api/v1/keys", token=False)
    assert_error(status, body, 404, "not_central")


def test_a_refusal_in_a_shell_names_the_command_that_helps_not_a_route(site):
    """The agent's hints name HTTP routes (written for any client); a command prints the
    command that does the same instead, and running it does what the hint says. One line
    of what is wrong, one of what to do, exit 1 (a refusal)."""
    central, local = site["central"], site["local"]

    def refused(agent, *args) -> list[str]:
        out = cli(agent, *args)
        assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
        assert "Traceback" not in out.stderr and "/api/" not in out.stderr, out.stderr
        return out.stderr.splitlines()

    # a version central does not have: its audit log lists the versions it has
    assert refused(central, "dossier", "churn:99") == [
        "Model 'churn' has no version 99.",
        "`jupyter handoff audit log churn --action version.create --agent-role central` lists "
        "its versions.",
    ]
    args = ("audit", "log", "churn", "--action", "version.create", "--agent-role", "central")
    listed = cli(central, *args)
    assert listed.returncode == 0, listed.stderr
    subjects = {line.split()[4] for line in listed.stdout.splitlines()[:-1]}
    assert subjects == {"churn:1", "churn:2"}, listed.stdout
    # a model the local agent does not have (report): its inventory lists those it has
    assert refused(local, "report", "nope") == [
        "No model named 'nope'.",
        "`jupyter handoff inventory --agent local` lists the models.",
    ]
    inventory = cli(local, "inventory", "--agent", "local")
    assert inventory.returncode == 0 and "churn" in inventory.stdout, inventory.stderr
    # central's public key asked of the local agent
    assert refused(local, "dossier", "key", "--agent", "local") == [
        "Only a central agent signs dossiers, so this agent publishes no key.",
        "Ask central: leave out --agent local, or give central's URL with --url.",
    ]


def test_a_token_with_a_line_break_or_a_pasted_character_is_one_line_that_hides_it(site):
    """HANDOFF_TOKEN read from a file with its line break, or with a character pasted in,
    failed every command that asks an agent with a traceback printing the token. One line
    (exit 2), the token nowhere in it; the running agent and --url alike."""
    central = site["central"]
    real = central.token
    bad_tokens = (real + "\n", real + "\r", "€" + real, real[:10] + " " + real[10:])
    commands = (
        ("reviews",),
        ("inventory",),
        ("monitor", "run", "churn"),
        ("deployment", "churn", "--url", central.url),
    )
    for bad, args in zip(bad_tokens, commands, strict=True):
        out = handoff_cli({**central.env, "HANDOFF_TOKEN": bad}, *args)
        assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
        assert out.stderr.startswith("HANDOFF_TOKEN holds a character no token has"), out.stderr
        assert real[:10] not in out.stderr and len(out.stderr.splitlines()) == 1


@pytest.fixture(scope="module")
def signed(site):
    """churn:1's dossier as `jupyter handoff dossier` saves it, and central's public key."""
    central, tmp = site["central"], site["tmp"]
    out = cli(central, "dossier", "churn:1", "--out", str(tmp / "churn-1.zip"))
    assert out.returncode == 0, out.stdout + out.stderr
    key = cli(central, "dossier", "key", "--out", str(tmp / "central.pub"))
    assert key.returncode == 0, key.stdout + key.stderr
    return tmp / "churn-1.zip", tmp / "central.pub"


def verify(site, path, key=None) -> subprocess.CompletedProcess:
    """Offline: no runtime file, no agent to ask."""
    env = {**site["central"].env, "JUPYTER_RUNTIME_DIR": str(site["tmp"] / "nowhere")}
    args = ["dossier", "verify", str(path)] + (["--key", str(key)] if key else [])
    return handoff_cli(env, *args, timeout=60)


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_dossier_out_replaces_a_dossier_but_never_another_file(site, signed):
    """``--out`` naming a file that is not a dossier (``/etc/passwd`` was replaced): one
    line and its hint, exit 2, the file unchanged; fetching over a dossier replaces it."""
    central, tmp = site["central"], site["tmp"]
    notes = tmp / "notes.txt"
    notes.write_text("mine\n")
    out = cli(central, "dossier", "churn:1", "--out", str(notes))
    assert (out.returncode, out.stdout) == (2, ""), out.stdout + out.stderr
    assert out.stderr.splitlines() == [
        f"{notes} exists and is not a dossier; nothing was written.",
        "Give --out a new file name (a dossier there is replaced).",
    ], out.stderr
    assert notes.read_text() == "mine\n"
    path, key = signed
    again = cli(central, "dossier", "churn:1", "--out", str(path))
    assert again.returncode == 0 and zipfile.is_zipfile(path), again.stderr
    # and central's public keys the same way: over saved keys, never over another file
    out = cli(central, "dossier", "key", "--out", str(notes))
    assert (out.returncode, out.stdout) == (2, ""), out.stdout + out.stderr
    assert out.stderr.splitlines()[0] == (
        f"{notes} exists and is not a public key; nothing was written."
    ), out.stderr
    assert notes.read_text() == "mine\n"
    again = cli(central, "dossier", "key", "--out", str(key))
    assert again.returncode == 0 and key.read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_the_full_path_yields_a_dossier_that_verifies(site, signed):
    path, key = signed
    out = verify(site, path, key)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK churn:1: ed25519 signature of key")
    files = members(path)
    assert {"dossier.json", "signature.json", "dossier.html", "audit.json", "report.html",
            "model_card.md", "checks/fairness.json", "checks/drift.json"} <= set(files)  # fmt: skip
    doc = json.loads(files["dossier.json"])
    assert doc["bundle"]["digest"] and doc["provenance"]["pushed_by"] == "alice"
    assert doc["provenance"]["origin"]["claimed_by"] == "alice"
    assert "environment" in doc["provenance"] and doc["model_card"].startswith("#")
    assert {f["role"] for f in doc["data"]["fingerprints"]} >= {"X", "y", "sensitive"}
    assert doc["data"]["lineage"] and doc["data"]["sensitive_attributes"] == ["gender"]
    fairness = json.loads(files["checks/fairness.json"])
    assert fairness["status"] == "pass" and fairness["result"]["tables"]["groups"]
    assert doc["gate"]["verdict"] == "pass" and doc["gate"]["overrides"] == {}
    assert [(s["user"], s["role"], s["stage"], s["comment"]) for s in doc["signoffs"]] == [
        ("bob", "reviewer", "approved", "looks right"),
        ("bob", "reviewer", "canary", "canary"),
        ("bob", "reviewer", "production", "ship"),
        ("carol", "admin", "production", "risk ok"),
    ]
    assert all(s["time"] for s in doc["signoffs"])
    assert [s["stage"] for s in doc["stages"]] == [
        "received", "validated", "approved", "canary", "production",
    ]  # fmt: skip
    # each move with the sign-offs the policy needed then, as its audit entry recorded
    assert [s["signoffs_needed"] for s in doc["stages"]] == [
        None, None, {"reviewer": 1}, {"reviewer": 1}, {"reviewer": 1, "admin": 1},
    ]  # fmt: skip
    assert [p["version"] for p in doc["production_history"]] == [1]
    assert {"slot": "production", "version": 1, "traffic": 100.0} in doc["serving"]["slots"]
    assert doc["monitoring"] == {"configured": True, "alerts": []}
    assert doc["audit"]["version_entries"] and doc["audit"]["source_anchor"]["seq"] >= 1
    # Other models' entries keep only their links: the chain verifies, they say nothing.
    rows = json.loads(files["audit.json"])["rows"]
    shown = [r for r in rows if not r.get("redacted")]
    assert {r["subject"] for r in shown if not r["action"].startswith("trust.")} == {"churn:1"}
    hidden = [r for r in rows if r.get("redacted")]
    assert hidden and all(set(r) == {"seq", "prev_hash", "hash", "redacted"} for r in hidden)
    assert doc["audit"]["entries_redacted"] == len(hidden)
    html = files["dossier.html"].decode()
    assert "Promotion dossier: churn" in html and "risk ok" in html
    assert "<td>production</td><td>churn:1</td><td>100.0 %</td>" in html
    assert "no alert is firing for churn" in html
    assert "<script" not in html


def get_bytes(agent: RunningAgent, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=120)
    try:
        conn.request("GET", path, headers={"Authorization": f"token {agent.token}"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_a_local_agent_fetches_the_dossier_from_central(site, signed):
    # The analyst's agent asks its central for the dossier of its own churn:1
    status, headers, body = get_bytes(site["local"], "/api/v1/models/churn/versions/1/dossier")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert 'filename="dossier-churn-1.zip"' in headers["Content-Disposition"]
    path = site["tmp"] / "via-local.zip"
    path.write_bytes(body)
    out = verify(site, path, signed[1])
    assert out.returncode == 0, out.stdout


def rewrite(src, dst, change) -> None:
    """Copy the zip, passing each member through ``change(name, data) -> data | None``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = change(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def edit_json(data: bytes, fn) -> bytes:
    doc = json.loads(data)
    fn(doc)
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def flip_byte(data: bytes, needle: bytes) -> bytes:
    i = data.index(needle)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _audit(fn):
    return lambda n, d: edit_json(d, fn) if n == "audit.json" else d


TAMPERING = {
    # one byte of dossier.json: a sign-off comment
    "json_byte": (
        lambda n, d: flip_byte(d, b"risk ok") if n == "dossier.json" else d,
        "FAILED signature: dossier.json does not match the ed25519 signature",
    ),
    # one byte of a report
    "report_byte": (
        lambda n, d: flip_byte(d, b'"status"') if n == "checks/fairness.json" else d,
        "FAILED checks/fairness.json: its sha256 differs from the digest central signed",
    ),
    "html_byte": (
        lambda n, d: flip_byte(d, b"<h1>") if n == "dossier.html" else d,
        "FAILED dossier.html: its sha256 differs",
    ),
    "report_dropped": (
        lambda n, d: None if n == "report.html" else d,
        "FAILED report.html: is listed in dossier.json but missing from the archive",
    ),
    "file_added": (
        lambda n, d: d,  # see below: an extra member is added
        "FAILED extra.txt: is in the archive but not in the signed list of files",
    ),
    # one audit row: its payload edited
    "audit_row_edited": (
        _audit(lambda a: a["rows"][1].update(actor="mallory")),
        "FAILED audit entry",
    ),
    "audit_row_dropped": (
        _audit(lambda a: a["rows"].pop(2)),
        "do not link: an entry was dropped, reordered or replaced",
    ),
    "audit_rows_reordered": (
        _audit(lambda a: a["rows"].insert(1, a["rows"].pop(2))),
        "do not link: an entry was dropped, reordered or replaced",
    ),
    "audit_tail_cut": (
        _audit(lambda a: a["rows"].pop()),
        "not at central's signed chain head",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_with_any_part_fails_with_a_line_naming_it(site, signed, case, tmp_path):
    path, key = signed
    change, expected = TAMPERING[case]
    bad = tmp_path / f"{case}.zip"
    rewrite(path, bad, change)
    if case == "file_added":
        with zipfile.ZipFile(bad, "a") as z:
            z.writestr("extra.txt", b"trust me")
    out = verify(site, bad, key)
    assert out.returncode == 1, out.stdout + out.stderr
    assert len(out.stdout.strip().splitlines()) == 1, out.stdout
    assert expected in out.stdout, out.stdout


def test_a_sign_off_edited_in_the_database_fails_verification(site, tmp_path):
    """Someone holding central's database rewrites carol's admin sign-off as ravi's, a
    reviewer's, with another reason. The chain is untouched and verifies; the dossier
    central then signs lists what the tables say, and its verification names the entry."""
    central = site["central"]
    edit = 'UPDATE signoffs SET "user" = :u, role = :r, comment = :c WHERE comment = :was'
    central.sql(edit, u="ravi", r="reviewer", c="CHG-9999 emergency", was="risk ok")
    try:
        out = cli(central, "dossier", "churn:1", "--out", str(tmp_path / "edited.zip"))
        assert out.returncode == 0, out.stdout + out.stderr
        checked = verify(site, tmp_path / "edited.zip", site["tmp"] / "central.pub")
    finally:
        central.sql(edit, u="carol", r="admin", c="risk ok", was="CHG-9999 emergency")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert re.fullmatch(
        r"FAILED signoffs entry 4: its role 'reviewer' is not the 'admin' audit entry \d+ "
        r"recorded: it was edited\n",
        checked.stdout,
    ), checked.stdout


def test_the_key_may_be_pem_the_keys_json_or_base64(site, signed, tmp_path):
    path, _ = signed
    body = site["central"].request("GET", "/api/v1/keys", token=False)[1]
    (tmp_path / "keys.json").write_text(json.dumps(body))
    assert verify(site, path, tmp_path / "keys.json").returncode == 0
    assert verify(site, path, body["keys"][0]["public_key"]).returncode == 0
    (tmp_path / "junk.pub").write_text("not a key")
    out = verify(site, path, tmp_path / "junk.pub")
    assert out.returncode == 1 and out.stdout.startswith("FAILED key: the given key cannot be read")
    out = verify(site, path, tmp_path / "missing.pub")
    assert out.returncode == 1 and out.stdout == (
        f"FAILED key: no file at {tmp_path / 'missing.pub'} (nor is it a base64 public key)\n"
    )


def test_another_key_fails_verification(site, signed, tmp_path):
    path, _ = signed
    other = Ed25519PrivateKey.generate()
    pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "other.pub").write_bytes(pem)
    out = verify(site, path, tmp_path / "other.pub")
    assert out.returncode == 1 and out.stdout.startswith("FAILED key: the dossier is signed by")
    # A forger who re-signs a changed dossier with their own key is caught by the pinned key
    from handoff_agent import keys

    def forge(name, data):
        if name == "dossier.json":
            return flip_byte(data, b"risk ok")
        return data

    forged = tmp_path / "forged.zip"
    rewrite(path, forged, forge)
    files = members(forged)
    sig = json.loads(files["signature.json"])
    sig.update(
        public_key=keys.describe(other.public_key())["public_key"],
        key_id=keys.key_id(other.public_key()),
        signature=keys.sign(other, files["dossier.json"]),
    )
    rewrite(forged, tmp_path / "forged2.zip",
            lambda n, d: json.dumps(sig).encode() if n == "signature.json" else d)  # fmt: skip
    out = verify(site, tmp_path / "forged2.zip", signed[1])
    assert out.returncode == 1 and out.stdout.startswith("FAILED key: the dossier is signed by")
    # Unpinned, the comment still disagrees with the audit entry that recorded it
    out = verify(site, tmp_path / "forged2.zip")
    assert out.returncode == 1 and "FAILED signoffs entry 4: its comment" in out.stdout
    # A change nothing else records is only self-consistent unpinned, and it says so
    doc = json.loads(members(path)["dossier.json"])
    doc["provenance"]["message"] = "forged"
    body = json.dumps(doc, indent=1, sort_keys=True).encode()
    sig.update(signature=keys.sign(other, body))
    rewrite(path, tmp_path / "forged3.zip", lambda n, d: {"dossier.json": body,
            "signature.json": json.dumps(sig).encode()}.get(n, d))  # fmt: skip
    out = verify(site, tmp_path / "forged3.zip")
    assert out.returncode == 0 and "pass --key to pin central's" in out.stdout, out.stdout


def test_a_dossier_names_the_types_an_admin_trusted_for_it(site, tmp_path):
    status, _, body = get_bytes(site["central"], "/api/v1/models/nb/versions/1/dossier")
    assert status == 200
    (tmp_path / "nb.zip").write_bytes(body)
    doc = json.loads(members(tmp_path / "nb.zip")["dossier.json"])
    trusted = doc["trust"]["types_added_by_hand"]
    assert [(t["type"], t["trusted_by"]) for t in trusted] == [
        ("sklearn.naive_bayes.GaussianNB", "carol")
    ]
    assert [s["stage"] for s in doc["trust"]["decisions"]] == ["needs_trust", "received"]
    assert verify(site, tmp_path / "nb.zip").returncode == 0


def test_a_dossier_of_an_unknown_version_is_a_clear_error(site):
    local = site["local"]
    status, body = local.request("GET", "/api/v1/models/nope/versions/1/dossier")
    assert_error(status, body, 404)
    status, body = site["central"].request("GET", "/api/v1/models/churn/versions/9/dossier")
    assert_error(status, body, 404)
    out = cli(site["central"], "dossier", "churn")
    assert out.returncode == 2 and "Usage: jupyter handoff dossier" in out.stderr
    # An --out that cannot be written: where, and why, in one line
    for args in (["churn:1"], ["key"]):
        out = cli(site["central"], "dossier", *args, "--out", "/no-such-dir/d.zip")
        assert out.returncode == 1, out.stderr
        assert out.stderr.strip() == "/no-such-dir/d.zip: No such file or directory.", out.stderr


def test_audit_verify_still_passes_at_central(site):
    assert site["central"].cli("audit", "verify").returncode == 0


def test_a_version_that_has_not_reached_central_has_no_dossier_yet(agent_factory):
    # A local agent whose central is not running: the version waits in its outbox
    local = agent_factory("--HandoffAgent.checks=[]")
    status, body = local.push_bytes("solo", bundle_bytes("solo"))
    assert status == 201, body
    status, body = local.request("GET", "/api/v1/models/solo/versions/1/dossier")
    err = assert_error(status, body, 409, "not_at_central")
    assert "only central signs dossiers" in err["message"]


def test_a_production_model_with_a_firing_alert_is_tagged(site, tmp_path):
    """Run last: churn:1's traffic drifts, central's monitor fires, and the risk team's
    inventory and the dossier say so."""
    central = site["central"]
    X, y = data(0)
    body = run_on_a_drifted_day(central, LogisticRegression().fit(X, y), X, y, tmp_path)
    assert body["alerts"], body

    churn = by_name(inventory(central, "?tag=production_with_open_alert"))["churn"]
    kinds = sorted({a["kind"] for a in churn["alerts"]})
    assert kinds and churn["risk"]["production_with_open_alert"] == kinds
    status, _, raw = get_bytes(central, "/api/v1/models/churn/versions/1/dossier")
    assert status == 200
    doc = json.loads(zipfile.ZipFile(io.BytesIO(raw)).read("dossier.json"))
    assert sorted({a["kind"] for a in doc["monitoring"]["alerts"]}) == kinds


def test_a_model_monitored_from_an_imported_log_is_listed_as_imported(site, tmp_path):
    """Run after the firing one: a model served elsewhere, known here only from `monitor
    import`, is in central's models list and inventory, marked imported, with its alerts."""
    central = site["central"]
    X, y = data(3)
    # Given a model served elsewhere whose log (drifted yesterday) and reference are imported
    body = run_on_a_drifted_day(
        central, LogisticRegression().fit(X, y), X, y, tmp_path, name="acme-scorer"
    )
    assert body["alerts"], body
    kinds = {a["kind"] for a in body["alerts"]}
    # then GET /api/v1/models lists it among the pushed ones, marked imported, with alerts
    status, page = central.request("GET", "/api/v1/models")
    assert status == 200, page
    rows = by_name(page)
    assert set(rows) == {"acme-scorer", "churn", "credit", "fraud", "nb"}, rows
    acme = rows["acme-scorer"]
    assert (acme["imported"], acme["versions"], acme["latest_status"]) == (True, 0, None)
    assert acme["open_alerts"] == len(kinds) and {a["kind"] for a in acme["firing"]} == kinds
    assert rows["churn"]["imported"] is False
    # and paging by name meets every model once, in order
    names, after = [], ""
    while True:
        page = central.request("GET", f"/api/v1/models?limit=2{after}")[1]
        names += [m["name"] for m in page["models"]]
        if "next" not in page:
            break
        after = f"&after={page['next']}"
    assert names == sorted(rows), names
    # and the inventory has its row: imported, served elsewhere, its firing alerts
    acme = by_name(inventory(central))["acme-scorer"]
    assert acme["imported"] is True and acme["version"] is None
    assert "imported prediction log" in acme["serving"]["note"]
    assert {a["kind"] for a in acme["alerts"]} == kinds
    assert "acme-scorer" not in by_name(inventory(central, "?stage=production"))
    # and the inventory command's table shows it
    p = cli(central, "inventory")
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("acme-scorer "))
    assert " imported " in line and "elsewhere (imported log)" in line, line
