"""``%mlops dossier NAME:N`` in a real notebook: the local agent fetches the signed dossier from
its central, the file verifies offline, and mistakes show as one ``UsageError:`` line."""

from __future__ import annotations

import json
import urllib.request
import zipfile

import nbformat
import pytest
from nbclient import NotebookClient
from support import churn_at_central

from handoff_agent.dossier_verify import Failed, verify

SECRET = "first-secret-3kT9qLm2VxZp7RwY8nB4"


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts += [out["ename"], out["evalue"], *out["traceback"]]
        else:
            data = out.get("data", {})
            parts.append(str(data.get("text/html", data.get("text/plain", ""))))
    return "".join(parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory, backend):
    """churn:1 validated at central and approved by bob, a reviewer."""
    tmp = tmp_path_factory.mktemp("dossier-nb")
    with churn_at_central(tmp, SECRET) as (central, local):
        bob = central.make_token("bob", "reviewer")
        status, body = central.request(
            "POST",
            "/api/v1/models/churn/versions/1/signoffs",
            {"decision": "approve", "comment": "fine by me"},
            token=bob,
        )
        assert status == 201, body
        yield central, local, tmp


CELLS = {
    "save": "d = %mlops dossier churn:1 --out {out}\nd",
    "no_version": "%mlops dossier churn",
    "unknown": "%mlops dossier nope:1",
    "unwritable": "%mlops dossier churn:1 --out {tmp}/no/such/dir/d.zip",
    "again": "%mlops dossier churn:1 --out {out}",  # a dossier there is replaced
    "not_ours": "%mlops dossier churn:1 --out {tmp}/notes.txt",  # someone's file is not
    "lineage": "%mlops lineage churn:1",  # pushed from no notebook file (a script, nbclient)
}


@pytest.fixture(scope="module")
def notebook(site):
    _, local, tmp = site
    out = tmp / "from-notebook.zip"
    (tmp / "notes.txt").write_text("the analyst's notes\n")
    cells = ["%load_ext jupyter_handoff"] + [
        c.format(out=out, tmp=tmp) for c in CELLS.values()
    ]  # fmt: skip
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {**local.env}
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp)}},
    ).execute(env=env)
    return nb, out, {k: i + 1 for i, k in enumerate(CELLS)}


def test_the_magic_saves_a_dossier_that_verifies_offline(site, notebook):
    central, _, _ = site
    nb, out, index = notebook
    shown = _text(nb.cells[index["save"]].outputs)
    assert "Dossier of churn:1" in shown and "sign-offs: bob (reviewer)" in shown, shown
    assert "jupyter handoff dossier verify" in shown
    with urllib.request.urlopen(f"{central.url}/api/v1/keys", timeout=10) as r:
        key = json.loads(r.read())["keys"][0]["pem"]
    summary = verify(out, key)
    assert summary["subject"] == "churn:1" and summary["pinned"]
    # and only with central's key
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(Failed, match="signed by key"):
        verify(out, other.decode())


@pytest.mark.parametrize(
    "key, says, hint",
    [
        ("no_version", "Say which version's dossier", "%mlops dossier churn:3"),
        ("unknown", "Model 'nope' has no version 1", "%mlops versions nope"),
        ("unwritable", "Cannot write the dossier", "--out"),
        ("not_ours", "notes.txt exists and is not a dossier; nothing was written.",
         "Give --out a new file name"),
    ],
)  # fmt: skip
def test_a_mistake_is_one_usage_error_line(notebook, key, says, hint):
    nb, _, index = notebook
    outputs = nb.cells[index[key]].outputs
    text = _text(outputs)
    assert outputs and {o["name"] for o in outputs if "name" in o} == {"stderr"}, text
    first, *rest = text.strip().splitlines()
    assert first.startswith("UsageError: ") and says in first, text
    assert len(rest) <= 2 and hint in "\n".join(rest), text
    assert "Traceback" not in text


def test_a_dossier_is_saved_again_over_itself_but_never_over_another_file(site, notebook):
    """``--out`` named a file that was not a dossier (``/etc/passwd`` was replaced)."""
    _, _, tmp = site
    nb, out, index = notebook
    assert "Dossier of churn:1" in _text(nb.cells[index["again"]].outputs)
    assert zipfile.is_zipfile(out)
    assert (tmp / "notes.txt").read_text() == "the analyst's notes\n"


def test_lineage_of_a_version_pushed_from_no_notebook_file_says_so(notebook):
    """A version pushed where the kernel knows no notebook path (a script, a headless run):
    lineage says the notebook was not recorded, in both forms, rather than ``None``."""
    nb, _, index = notebook
    (out,) = nb.cells[index["lineage"]].outputs
    for form in ("text/plain", "text/html"):
        shown = out["data"][form]
        assert "notebook: not recorded, cell" in shown and "None" not in shown, shown


def test_a_dossier_central_did_not_judge_says_so_not_none(tmp_path):
    """Central's intake without ``revalidate`` keeps no verdict of its own (null)."""
    from jupyter_handoff.dossier_save import Dossier

    doc = {"subject": "churn:1", "gate": {"verdict": None}, "stages": [{"stage": "validated"}]}
    doc["signer"] = {"key_id": "1f81e09d"}
    shown = Dossier(tmp_path / "d.zip", 10, doc)._repr_html_()
    assert "stage validated, gate verdict none at central," in shown and "None" not in shown
