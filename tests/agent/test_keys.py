"""Central's signing key from a file the operator gives (``--signing-key-file``): replicas
given one file sign alike and verify with one key; a bad file refuses the start in one line.
A rotation (``dossier key rotate``) keeps the old public key listed as retired, so a dossier
signed before it still verifies."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import RunningAgent, handoff_cli
from test_pipeline_central import POLICY
from test_pipeline_delivery import deliver, envelope

from handoff_agent import keys


def key_file(path: Path, key=None, mode: int = 0o600) -> Path:
    key = key or Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(mode)
    return path


def cli(agent: RunningAgent, *args: str) -> subprocess.CompletedProcess:
    return handoff_cli(agent.env, *args)


def dossier(agent: RunningAgent, ref: str, out: Path) -> Path:
    p = cli(agent, "dossier", ref, "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def verify(env: dict, path: Path, key) -> subprocess.CompletedProcess:
    return handoff_cli(env, "dossier", "verify", str(path), "--key", str(key), timeout=60)


def delivered(agent: RunningAgent, name: str) -> int:
    status, body = deliver(agent, envelope(name, b"model bytes"))
    assert status == 201, body
    return body["version"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend):
    """Two central replicas on one database (a SQLite file, or PostgreSQL), each with its
    own home, given one key file."""
    tmp = tmp_path_factory.mktemp("keys")
    (tmp / "policy.toml").write_text(POLICY.format(revalidate="false"))
    (tmp / "secrets").mkdir()
    shared = key_file(tmp / "secrets" / "dossier.pem")
    url = backend.database_url() if backend.postgres else f"sqlite:///{tmp / 'shared.db'}"
    started = []
    for name in ("a", "b"):
        r = RunningAgent(
            tmp / name,
            tmp / f"rt-{name}",
            ["--role", "central", "--policy", str(tmp / "policy.toml"),
             "--signing-key-file", str(shared)],
            database_url=url,
        )  # fmt: skip
        r.start()
        started.append(r)
    yield {"a": started[0], "b": started[1], "tmp": tmp, "key": shared}
    for r in started:
        r.stop()


def test_replicas_given_one_key_file_sign_alike(site):
    a, b, tmp = site["a"], site["b"], site["tmp"]
    # Given: one version delivered through each replica
    na, nb = delivered(a, "via-a"), delivered(b, "via-b")
    # When: each signs the dossier of the version it took, and the key is saved from one
    da = dossier(a, f"via-a:{na}", tmp / "a.zip")
    db = dossier(b, f"via-b:{nb}", tmp / "b.zip")
    out = cli(b, "dossier", "key", "--out", str(tmp / "central.pub"))
    assert out.returncode == 0, out.stdout + out.stderr
    # Then: both verify against that one key, the file's
    ours = keys.key_id(keys.load_file(site["key"]).public_key())
    offline = {**a.env, "JUPYTER_RUNTIME_DIR": str(tmp / "nowhere")}
    for path in (da, db):
        p = verify(offline, path, tmp / "central.pub")
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"ed25519 signature of key {ours}" in p.stdout
    for r in (a, b):
        listed = r.request("GET", "/api/v1/keys", token=False)[1]["keys"]
        assert [k["key_id"] for k in listed] == [ours]
        log = r.read_log()
        assert "signed dossiers with key(s)" not in log and "made a new signing key" not in log
        assert "PRIVATE KEY" not in log
        assert not (r.home / "signing-key.pem").exists()  # never made in the home


def test_rotation_is_refused_when_the_key_is_a_file(site):
    a = site["a"]
    for args in (["--home", str(a.home)], [f"--HandoffAgent.signing_key_file={site['key']}"]):
        p = cli(a, "dossier", "key", "rotate", *args)
        assert p.returncode == 2, p.stdout + p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "c.HandoffAgent.signing_key_file" in lines[0], p.stderr
        assert "rotating is the operator's" in lines[0]


@pytest.mark.parametrize("bad", ["missing", "rsa", "mode 0644"])
def test_a_bad_key_file_refuses_the_start_in_one_line(tmp_path, bad, backend):
    path = tmp_path / "key.pem"
    if bad == "rsa":
        key_file(path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif bad == "mode 0644":
        key_file(path, mode=0o644)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    p = handoff_cli(
        env, "serve", "--role", "central", "--home", str(tmp_path / "home"), "--port", "0",
        "--signing-key-file", str(path), timeout=60,
    )  # fmt: skip
    assert p.returncode == 2, p.stdout + p.stderr
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert f"c.HandoffAgent.signing_key_file {path}" in lines[0]
    why = {"missing": "cannot be read", "rsa": "not an ed25519", "mode 0644": "mode 0644"}
    assert why[bad] in lines[0] and "Traceback" not in lines[0]
    if path.exists():
        assert "PRIVATE" not in lines[0] and path.read_text().splitlines()[1] not in lines[0]
    assert not (tmp_path / "home" / "signing-key.pem").exists()


def test_a_rotated_key_still_verifies_the_dossiers_it_signed(tmp_path, backend):
    (tmp_path / "policy.toml").write_text(POLICY.format(revalidate="false"))
    central = RunningAgent(
        tmp_path / "central",
        tmp_path / "rt",
        ["--role", "central", "--policy", str(tmp_path / "policy.toml")],
    )
    central.start()
    try:
        old_id = central.request("GET", "/api/v1/keys", token=False)[1]["keys"][0]["key_id"]
        before = dossier(central, f"m1:{delivered(central, 'm1')}", tmp_path / "before.zip")
        # a running central keeps the key it has: rotation waits for it to stop
        p = cli(central, "dossier", "key", "rotate", "--home", str(central.home))
        assert p.returncode == 2, p.stdout + p.stderr
        assert p.stderr.strip().splitlines() == [
            f"The central agent at {central.url} (pid {central.proc.pid}) runs on "
            f"{central.home}: stop it first (`jupyter handoff stop --role central`), then "
            "rotate and start it again, so it signs with the new key."
        ], p.stderr
        central.stop()
        p = cli(central, "dossier", "key", "rotate", "--home", str(central.home))
        assert p.returncode == 0, p.stdout + p.stderr
        central.start()
        after = dossier(central, f"m2:{delivered(central, 'm2')}", tmp_path / "after.zip")
        listed = central.request("GET", "/api/v1/keys", token=False)[1]["keys"]
        new_id = listed[0]["key_id"]
        assert new_id != old_id and "retired" not in listed[0]
        assert [k["key_id"] for k in listed[1:]] == [old_id] and listed[1]["retired"]
        rotations = central.sql("SELECT payload FROM audit WHERE action = 'key.rotate'")
        assert [json.loads(r["payload"]) for r in rotations] == [{"old": [old_id], "new": new_id}]
        out = cli(central, "dossier", "key", "--out", str(tmp_path / "central.pub"))
        assert out.returncode == 0 and "(and 1 retired)" in out.stdout, out.stdout + out.stderr
        (tmp_path / "keys.json").write_text(json.dumps({"keys": listed}))
    finally:
        central.stop()
    offline = {**central.env, "JUPYTER_RUNTIME_DIR": str(tmp_path / "nowhere")}
    # Then: with central's keys (PEM or the JSON of GET /api/v1/keys), both verify, each
    # against its own signer
    for keyring in (tmp_path / "central.pub", tmp_path / "keys.json"):
        for path, signer in ((before, old_id), (after, new_id)):
            p = verify(offline, path, keyring)
            assert p.returncode == 0, p.stdout + p.stderr
            assert f"key {signer}" in p.stdout
    # and pinned to the new key alone, the old dossier names its signer
    p = verify(offline, before, listed[0]["public_key"])
    assert p.returncode == 1 and f"signed by key {old_id}" in p.stdout, p.stdout


def test_a_new_key_file_retires_the_one_before(site):
    """The operator's rotation: a replica restarted on another file signs with it, and the
    old key stays listed as retired."""
    b, tmp = site["b"], site["tmp"]
    old = keys.key_id(keys.load_file(site["key"]).public_key())
    b.stop()
    b.args[b.args.index("--signing-key-file") + 1] = str(key_file(tmp / "secrets" / "new.pem"))
    b.start()
    listed = b.request("GET", "/api/v1/keys", token=False)[1]["keys"]
    assert listed[0]["key_id"] != old and [k["key_id"] for k in listed[1:]] == [old]
    assert listed[1]["retired"]
    rows = b.sql("SELECT payload FROM audit WHERE action = 'key.rotate'")
    assert json.loads(rows[-1]["payload"]) == {
        "old": [old],
        "new": listed[0]["key_id"],
        "at": "start",
    }
