"""One module owns the bundle manifest's shape: the notebook builds with it, the agent checks
with it, and no other module spells its fields or members."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from handoff_agent import bundle, manifest
from handoff_agent.errors import InvalidBundle

ROOT = Path(__file__).parents[2]


def test_what_the_notebook_builds_the_agent_accepts(tmp_path):
    from jupyter_handoff.bundle_writer import assemble

    # Given a manifest built by manifest.build and laid out by the notebook's writer
    m = manifest.build(
        name="churn",
        serialization="pickle",
        task="classification",
        tags={"team": "risk"},
        signature={"columns": [{"name": "a", "dtype": "float64"}]},
    )
    members = {manifest.model_member("pickle"): b"model bytes", manifest.data_member("X"): b"x"}
    b = assemble(members, m)
    path = tmp_path / "b.tar"
    path.write_bytes(b"".join(bytes(p) for p in b.parts))
    # Then the agent's validation accepts it, with every field there
    got = bundle.validate(path, "churn")
    assert got["format_version"] == manifest.FORMAT_VERSION
    assert set(got) == {*manifest.build(name="x", serialization="pickle"), "files_hash", "files"}
    assert set(got["files"]) == {"model.pkl", "data/X.parquet"}
    # The manifest comes last: it lists the digests of the members before it
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
        assert tar.getnames() == ["data/X.parquet", "model.pkl", manifest.MANIFEST]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"tags": {"team": 1}}, "Tags must map short strings to strings."),
        ({"task": "ranking"}, "Unknown task 'ranking'"),
        ({"message": 3}, "manifest field 'message' must be a string"),
        ({"data": {"Z": {}}}, "data.Z must be a fingerprint object"),
    ],
)
def test_notebook_and_agent_refuse_a_field_with_the_same_words(bad, message):
    m = {**manifest.build(name="m", serialization="pickle"), **bad}
    with pytest.raises(manifest.ManifestError, match=re.escape(message)):
        manifest.check_fields(m)
    with pytest.raises(InvalidBundle, match=re.escape(message)):
        bundle.check_fields(m)


def test_no_other_module_spells_the_manifest():
    # The member names and the format_version key appear in manifest.py only.
    spelled = re.compile(r"""["'](format_version|data/\w+\.parquet|model\.(pkl|skops))["']""")
    found = []
    for path in [*(ROOT / "agent").rglob("*.py"), *(ROOT / "extension").rglob("*.py")]:
        if path.name == "manifest.py" or "labextension" in path.parts:
            continue
        for m in spelled.finditer(path.read_text()):
            found.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert not found, "Use handoff_agent.manifest:\n" + "\n".join(found)
