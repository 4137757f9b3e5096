"""Mistakes with ``%mlops watch`` and ``%mlops lineage``, as a real notebook shows them: one
``UsageError:`` line plus the hint, no frames (the kernel run by nbclient, like JupyterLab)."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebook_errors import _text

from handoff_agent.watch import retrain

MISTAKES = {
    "load": ("%load_ext jupyter_handoff", None, None),
    "bad_on": (
        "%mlops watch churn --source data.csv --on sometimes",
        "--on 'sometimes' is not a change",
        "change, schema, drift, overdue",
    ),
    "no_notebook": (
        "%mlops watch churn --source data.csv --run nope.ipynb",
        "No notebook at 'nope.ipynb'",
        "existing .ipynb",
    ),
    "run_without_source": (
        "%mlops watch churn --run retrain.ipynb",
        "need a --source",
        "%mlops watch churn --source",
    ),
    "sql_without_query": (
        "%mlops watch churn --source postgresql://u@localhost/db",
        "A SQL source needs a query",
        "--query",
    ),
    # a web file is no database: the agent says so, not that it needs a query
    "web_source": (
        "%mlops watch churn --source https://example.com/events.csv",
        "A https:// source is neither a file here nor a database",
        "(a SQLAlchemy URL) or a file path",
    ),
    "bad_every": (
        "%mlops watch churn --source data.csv --every often",
        "--every 'often' is not a period",
        "30s, 15m, 1h or 1d",
    ),
    "bad_overdue": (
        "%mlops watch churn --source data.csv --on overdue --overdue soon",
        "--overdue 'soon' is not a period",
        "30s, 15m, 1h or 1d",
    ),
    "overdue_shorter_than_every": (
        "%mlops watch churn --source data.csv --on overdue --every 1h --overdue 30m",
        "--overdue 30m is shorter than --every 1h: the source would be overdue at every check.",
        "--every 1h --overdue 26h",
    ),
    "overdue_without_source": (
        "%mlops watch churn --overdue 26h",
        "need a --source",
        "%mlops watch churn --source",
    ),
    "bad_action": (
        "%mlops watch churn --source data.csv --action email",
        "Unknown action 'email'",
        "alert, revalidate, retrain",
    ),
    "revalidate_without_target": (
        "%mlops watch churn --source data.csv --action revalidate",
        "A revalidation needs the target column",
        "--target COLUMN",
    ),
    # the source is read at once: a --target it lacks is said now, not at its first change
    "target_not_a_column": (
        "%mlops watch churn --source data.csv --action revalidate --target zzz",
        "The source has no column 'zzz' (--target); its columns are a.",
        "the label the checks score the model against",
    ),
    "remove_unknown": (
        "%mlops watch churn --remove 999",
        "churn watches no source [999].",
        "churn watches no data source.",
    ),
    "target_without_source": (
        "%mlops watch churn --target y",
        "need a --source",
        "%mlops watch churn --source",
    ),
    "missing_file": (
        "%mlops watch churn --source missing/*.parquet",
        "No file matches",
        "Check the path",
    ),
    "bad_param": (
        "%mlops watch churn --source data.csv --param 2x",
        "Parameter '2x' is not K=V",
        "--param epochs=3",
    ),
    "bad_timeout": (
        "%mlops watch churn --source data.csv --timeout nan",
        "--timeout must be positive",
        "--timeout 600",
    ),
    "query_on_a_file": (
        "%mlops watch churn --source data.csv --query 'select 1'",
        "--query is for a database source; files are read whole.",
        "Drop --query",
    ),
    "lineage_unknown": (
        "%mlops lineage /no/such/source.parquet",
        "Nothing in the lineage matches",
        "%mlops watch",
    ),
    "lineage_unknown_fingerprint": (
        "%mlops lineage deadbeefdeadbeef",
        "Nothing in the lineage matches",
        "fingerprint",
    ),
}


@pytest.fixture(scope="module")
def notebook(shared_agent, tmp_path_factory):
    work = tmp_path_factory.mktemp("watch-nb")
    cells = [
        f"import os\nos.environ['JUPYTER_RUNTIME_DIR'] = {str(shared_agent.runtime_dir)!r}\n"
        f"os.chdir({str(work)!r})\n"
        "import pandas as pd\npd.DataFrame({'a': [1.0, 2.0]}).to_csv('data.csv', index=False)"
    ]
    index = {}
    for key, (source, _, _) in MISTAKES.items():
        index[key] = len(cells)
        cells.append(source)
    index["unreadable"] = len(cells)
    cells.append(
        "open('broken.parquet', 'wb').write(b'PAR1 half an export')\n"
        "%mlops watch unreadable --source broken.parquet"
    )
    index["params"] = len(cells)
    cells.append(
        "%mlops watch retrained --source data.csv --param epochs=3 --param lr=0.5 --param x=nan"
    )
    cells.append("w = %mlops watch churn --source data.csv --every 1h\nprint(w)")
    cells.append("g = %mlops lineage data.csv\nprint(g)")
    index["remove"] = len(cells)
    cells.append("left = %mlops watch churn --remove {w[0]['id']}\nprint(len(left))")
    cells.append("%mlops watch churn")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    return nb, index


@pytest.mark.parametrize("key", [k for k, v in MISTAKES.items() if v[1]])
def test_watch_mistake_shows_one_line_and_a_hint(notebook, key):
    nb, index = notebook
    _, says, hint = MISTAKES[key]
    outputs = nb.cells[index[key]].outputs
    text = _text(outputs)
    assert outputs and all(o["output_type"] == "stream" for o in outputs), text
    assert {o["name"] for o in outputs} == {"stderr"}, text
    first, *rest = text.strip().splitlines()
    assert first.startswith("UsageError: ") and says in first, text
    assert len(rest) <= 2 and hint in "\n".join(rest), text
    for frame in ("Traceback", 'File "', "---->", "/api/", "\x1b["):
        assert frame not in text, text


def test_a_good_watch_prints_its_baseline_and_its_lineage(notebook):
    nb, index = notebook
    text = _text(nb.cells[index["remove"] - 2].outputs)
    assert "churn <- " in text and "data.csv every 1h on change -> alert: first" in text, text
    # the refused --target stored nothing: the source is watched once, as asked after
    assert text.count("data.csv every") == 1 and "revalidate" not in text, text
    text = _text(nb.cells[index["remove"] - 1].outputs)
    assert "data.csv -[watched_by]-> model churn" in text, text


def test_a_watch_is_removed_by_its_id(notebook):
    nb, index = notebook
    assert _text(nb.cells[index["remove"]].outputs).strip() == "0"
    assert "churn <- " not in _text(nb.cells[index["remove"] + 1].outputs)


def test_watch_params_reach_the_retraining_notebook_as_the_analyst_wrote_them(
    notebook, shared_agent
):
    # --param epochs=3 is the int 3, so the retraining notebook's range(epochs) runs
    nb, index = notebook
    assert not [o for o in nb.cells[index["params"]].outputs if o.get("name") == "stderr"]
    [watch] = shared_agent.request("GET", "/api/v1/watches?model=retrained")[1]["watches"]
    params = watch["params"]
    assert params == {"epochs": 3, "lr": 0.5, "x": "nan"}
    assert isinstance(params["epochs"], int)
    cell = retrain.inject(nbformat.v4.new_notebook(), params).cells[0]
    scope: dict = {}
    exec(cell.source, scope)  # the injected parameters cell, as the kernel runs it
    assert list(range(scope["epochs"])) == [0, 1, 2] and scope["x"] == "nan"


def test_a_watch_whose_first_read_fails_says_why(notebook):
    nb, index = notebook
    text = _text(nb.cells[index["unreadable"]].outputs)
    assert (
        "unreadable <- " in text and "broken.parquet every 1h on change -> alert: error: " in text
    )
    assert "broken.parquet cannot be read as Parquet: " in text, text
