"""Print a pip constraints file pinning every runtime dependency to its declared floor.

`python .ci/min_constraints.py > min.txt; pip install -c min.txt -e .` installs the oldest
versions pyproject says work, so CI can check that they do (`--test NAME…` prints the test
extra's requirements of the test tools that run needs). A dependency without a
`>=` floor is an error: the floor is the promise being tested.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def floors(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        m = REQ.match(dep)
        spec = m and re.search(r">=\s*([0-9][^,\s]*)", m.group(3))
        if not spec:
            raise SystemExit(f"{dep!r} has no >= floor; declare the oldest version that works.")
        out.append(f"{m.group(1)}=={spec.group(1)}")
    return out


def test_requirements(pyproject: Path, names: list[str]) -> list[str]:
    """The ``test`` extra's requirements of ``names``, as declared: the minimum-versions run
    installs only the test tools its tests use (not the browser, ONNX or S3 server ones)."""
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["test"]
    by_name = {REQ.match(r).group(1).lower(): r for r in extra}
    missing = [n for n in names if n.lower() not in by_name]
    if missing:
        raise SystemExit(f"not in the test extra: {', '.join(missing)}")
    return [by_name[n.lower()] for n in names]


if __name__ == "__main__":
    import sys

    root = Path(__file__).resolve().parents[1]
    if sys.argv[1:2] == ["--test"]:  # `--test pytest …`: those test requirements, one a line
        print("\n".join(test_requirements(root / "pyproject.toml", sys.argv[2:])))
    else:
        print("\n".join(floors(root / "pyproject.toml")))
