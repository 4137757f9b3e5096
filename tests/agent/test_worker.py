"""A warm worker has done, before its job, what every job's first steps need."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd

READ_AFTER_WARMING = """
import io, json, sys
from handoff_agent.worker import _warm_imports, exit_now
_warm_imports()
before = set(sys.modules)
from handoff_agent.parquet_bytes import read_frame
read_frame(open(sys.argv[1], "rb").read())
print(json.dumps(sorted(set(sys.modules) - before)))
exit_now(0)  # as the worker ends
"""


def test_reading_the_pushed_data_imports_nothing_after_the_warm_up(tmp_path):
    path = tmp_path / "X.parquet"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(50, 3)), columns=["a", "b", "c"])
    frame["group"] = pd.Categorical(rng.choice(["x", "y"], 50))
    frame.to_parquet(path, index=False)
    out = subprocess.run(
        [sys.executable, "-c", READ_AFTER_WARMING, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_a_model_needing_a_module_beside_the_notebook_says_to_install_it(tmp_path):
    """A class from ``beside.py`` next to the notebook: the kernel imports it, the worker's
    Python does not. The loads check names the module and says to install it where the
    agent runs (it said the code existed only in the notebook, as for a class in a cell)."""
    import pickle

    from handoff_agent.worker import explain_load_error

    (tmp_path / "beside.py").write_text("class Mine:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import beside

        data = pickle.dumps(beside.Mine())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("beside", None)
    try:
        pickle.loads(data)
    except ModuleNotFoundError as e:
        said = explain_load_error(e)
    assert said.startswith(
        "The model does not load in a clean process: it needs the module "
        "`beside`, which the agent's Python cannot import"
    ), said
    assert "`pip install -e .`" in said and "defined in a cell" not in said
