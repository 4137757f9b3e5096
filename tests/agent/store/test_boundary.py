"""All SQL lives behind the metadata store: no module outside ``handoff_agent/store/`` imports
a database driver or SQLAlchemy, or carries an SQL statement."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import handoff_agent

PACKAGE = Path(handoff_agent.__file__).parent
DRIVERS = {"sqlite3", "sqlite_utils", "sqlalchemy", "psycopg", "psycopg2", "alembic"}
SQL = re.compile(
    r"^\s*(select\b.+\bfrom\b|insert\s+into\b|update\s+\w+\s+set\b|delete\s+from\b"
    r"|create\s+(table|index)\b|alter\s+table\b|pragma\b|begin\b)",
    re.IGNORECASE | re.DOTALL,
)


def outside_store() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "store" not in p.relative_to(PACKAGE).parts[:1]]


def test_the_scan_sees_the_store_and_the_rest():
    inside = [p for p in PACKAGE.rglob("*.py") if p not in outside_store()]
    assert any(p.name == "metadata.py" for p in inside)
    assert any(p.name == "agent.py" for p in outside_store())
    assert SQL.match("select seq from audit") and not SQL.match("Select a model to push")


def test_no_driver_or_sql_outside_the_store():
    problems = []
    for path in outside_store():
        rel = path.relative_to(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(rel))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            problems += [f"{rel}: imports {n}" for n in names if n.split(".")[0] in DRIVERS]
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and SQL.match(text):
                problems.append(f"{rel}:{node.lineno}: SQL {node.value[:40]!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("atomic", "executemany"):
                problems.append(f"{rel}:{node.lineno}: .{node.attr}")
    assert not problems, "\n".join(problems)
