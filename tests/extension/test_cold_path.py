"""%load_ext jupyter_handoff must stay light: no sklearn, jupyter_server or matplotlib."""

import json
import subprocess
import sys

PROBE = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
before = set(sys.modules)
shell.run_line_magic("load_ext", "jupyter_handoff")
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_load_ext_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = ("sklearn", "jupyter_server", "matplotlib", "pandas", "numpy", "pyarrow", "tornado")
    assert not [m for m in loaded if m.split(".")[0] in heavy]
    # nor the agent's metadata store
    assert not [m for m in loaded if m.split(".")[0] in ("sqlalchemy", "psycopg")]
    assert not [m for m in loaded if m.startswith("handoff_agent.store")]
    assert "jupyter_handoff.magics" in loaded
