"""Print a pip constraints file pinning every runtime dependency to its declared floor.

`python .ci/min_constraints.py > min.txt; pip install -c min.txt -e ".[test]"` installs the
oldest versions pyproject says work, so CI can check that they do. A dependency without a
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


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print("\n".join(floors(root / "pyproject.toml")))
