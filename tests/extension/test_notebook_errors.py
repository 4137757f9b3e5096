"""User mistakes as a real notebook shows them: one ``UsageError:`` line plus the hint, no frames.

One kernel (nbclient, ``allow_errors``) runs every mistake; the assertions read the outputs as
nbformat stores them, which is what JupyterLab renders.
"""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

SETUP = """
import numpy as np, pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
X, y = make_classification(n_samples=200, n_features=4, random_state=0)
X = pd.DataFrame(X, columns=list("abcd"))
clf = LogisticRegression().fit(X, y)
unfitted = LogisticRegression()
y_short, y_nan = y[:50], np.where(np.arange(200) == 3, np.nan, y)
not_a_model = {"weights": [1, 2]}
X_renamed, y_words = X.rename(columns={"a": "age"}), np.where(y == 1, "yes", "no")
X_extra, X_mixed, X_reordered = X.assign(gender=0), X.assign(e=[1, "a"] * 100), X[list("dcba")]
band = pd.cut(X["a"] * 10, [-100, -5, 0, 5, 100]).rename("band")  # as the fairness hint says
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
reviews, liked = pd.DataFrame({"review": ["good fast", "slow bad"] * 20}), [1, 0] * 20
texts = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(reviews["review"], liked)
on_array = LogisticRegression().fit(X.to_numpy(), y)
X_wide = np.hstack([X.to_numpy(), X.to_numpy()[:, :1]])
y_scores = clf.predict_proba(X)[:, 1]  # scores passed where labels belong
X_600 = np.tile(X.to_numpy(), 150)  # wide, and without column names
on_wide = LogisticRegression().fit(X_600, y)
X_dup = pd.concat([X, X[["a"]]], axis=1)  # a column joined twice
X_list = X_extra.to_numpy().tolist()  # a DataFrame's rows as lists: no names, one column more
BIG = pd.DataFrame(np.random.default_rng(0).random((30_000, 10)), columns=list("abcdefghij"))


class Wrapper:  # a user's own class around a fitted model (no attribute ending in _)
    def __init__(self, inner):
        self.inner = inner

    def fit(self, X, y):
        self.inner.fit(X, y)
        return self

    def predict(self, X):
        return self.inner.predict(X)


wrapped = Wrapper(LogisticRegression()).fit(X, y)
"""

# (cell, what the first line says, a piece of the hint)
MISTAKES = {
    # The Python API first, before %load_ext: importing it is enough.
    "api_no_name": ("jupyter_handoff.push(clf)", "needs a name", "push(clf, 'churn'"),
    "api_double_dot_name": (
        "jupyter_handoff.push(clf, 'a..b')",
        "'a..b' is not a valid model name",
        "with no '..'",
    ),
    "api_bad_option": (
        "jupyter_handoff.push(clf, 'churn', data=(X, y))",
        "has no option 'data'",
        "It takes: model, name, X, y",
    ),
    "api_rows": (
        "jupyter_handoff.push(clf, 'churn', X=X, y=y_short)",
        "X has 200 rows but y has 50",
        "same split",
    ),
    "api_missing_version": (
        "jupyter_handoff.get('churn:99')",
        "has no version 99",
        "%mlops versions churn",
    ),
    "api_ragged_x": (
        "jupyter_handoff.push(clf, 'churn', X=[[1, 2], [3]], y=[0, 1])",
        "X cannot be used as a table",
        "DataFrame or 2-D array",
    ),
    # A big model goes ahead of its data into the agent's spool: a mistake in the data found
    # meanwhile (the reference is read last) still shows as the one line, and nothing is kept.
    "api_late_data_mistake": (
        "big = LogisticRegression().fit(X, y); big.ballast_ = np.zeros(1 << 20)\n"
        "jupyter_handoff.push(big, 'churn', X=X, y=y, reference=[[1, 2], [3]])",
        "reference cannot be used as a table",
        "DataFrame or 2-D array",
    ),
    "api_sparse_x": (
        "from scipy.sparse import csr_matrix\n"
        "jupyter_handoff.push(clf, 'churn', X=csr_matrix(X.to_numpy()), y=y)",
        "X is a sparse matrix; the evaluation data is stored as a table.",
        "the pipeline with its vectorizer",
    ),
    "api_gate_not_dict": (
        "jupyter_handoff.push(clf, 'churn', X=X, y=y, gate='strict')",
        "gate must be a dict",
        "fairness.max_dp_diff",
    ),
    "load": ("%load_ext jupyter_handoff", None, None),
    "rows": ("%mlops push clf --name churn --data X y_short", "X has 200 rows", "same split"),
    "versions_of_a_version": (
        "%mlops versions churn:1",
        "versions takes a model's name, not one version: 'churn:1'.",
        "`%mlops versions churn` lists them; `%mlops show churn:1` shows that one.",
    ),
    "unknown_model": ("%mlops show nope", "No model named 'nope'", "%mlops versions"),
    "bad_gate": (
        "%mlops push clf --name churn --data X y --gate nope",
        "is not CHECK.KEY=VALUE",
        "--gate fairness.max_dp_diff=0.2",
    ),
    "gate_unknown_check": (
        "%mlops push clf --name churn --data X y --gate fairnes.max_dp_diff=0.2",
        "name a check this agent does not run: fairnes.",
        "Its checks: loads, smoke",
    ),
    # refused at push from what the checks declare, not left to fail the check later
    "gate_unknown_setting": (
        "%mlops push clf --name churn --data X y --gate performance.min_accuracy=0.9",
        "performance has no setting 'min_accuracy' (from --gate). Its settings: "
        "primary_metric, max_regression, min_score,",
        "Fix that --gate override",
    ),
    "gate_wrong_type": (
        "%mlops push clf --name churn --data X y --gate fairness.max_dp_diff=lenient",
        "fairness.max_dp_diff must be a number, not 'lenient' (from --gate).",
        "Fix that --gate override",
    ),
    "compare_unknown": ("%mlops compare nope", "No model named 'nope'", "%mlops versions"),
    "compare_twice": (
        "%mlops compare churn:1 churn:1",
        "churn:1 is named twice; a comparison needs two different versions.",
        "%mlops compare churn:3 churn:5",
    ),
    "forward_nowhere": (
        "%mlops forward churn:1 --to nowhere",
        "No destination named 'nowhere'",
        "forward_to",
    ),
    "unfitted": ("%mlops push unfitted --name churn --data X y", "is not fitted", ".fit(X, y)"),
    "not_a_model": ("%mlops push not_a_model --name churn", "is not a model", "fitted estimator"),
    "a_class": (
        "%mlops push LogisticRegression --name churn",
        "LogisticRegression is a class, not a fitted model",
        "clf = LogisticRegression().fit(X, y)",
    ),
    "nan_y": ("%mlops push clf --name churn --data X y_nan", "missing values", "Drop those rows"),
    "renamed_column": (
        "%mlops push clf --name churn --data X_renamed y",
        "X lacks 1 column the model was fitted on: 'a'",
        "training columns",
    ),
    "gate_nan": (
        "%mlops push clf --name churn --data X y --gate fairness.max_dp_diff=nan",
        "fairness.max_dp_diff must be a number, not 'nan' (from --gate).",
        "Fix that --gate override",
    ),
    "extra_column": (
        "%mlops push clf --name churn --data X_extra y",
        "X has 1 column the model was not fitted on: 'gender'.",
        "name a group column with --sensitive",
    ),
    "text_as_frame": (
        "%mlops push texts --name reviews --data reviews liked",
        "The model starts with TfidfVectorizer, which takes texts, but X is a DataFrame of "
        "1 column.",
        "X['review'], not X[['review']]",
    ),
    "array_width": (
        "%mlops push on_array --name arr --data X_wide y",
        "X has 5 columns; the model was fitted on 4.",
        "the columns it was fitted on",
    ),
    "mixed_column": (
        "%mlops push wrapped --name wrapped --data X_mixed y",
        "X column 'e' mixes numeric and text values: it cannot be stored as evaluation data.",
        "Give 'e' one type, e.g. .astype(str).",
    ),
    # pd.cut's bins as the sensitive groups, and X's columns in another order: pushed
    "bins_as_groups": (
        "%mlops push clf --name churn --data X_reordered y --sensitive band",
        None,
        None,
    ),
    "labels_as_words": (
        "%mlops push clf --name churn --data X y_words",
        "y holds none of the labels the model predicts: y has 'no', 'yes'; the model 0, 1",
        "Encode y as it was for training",
    ),
    # a fitted wrapper is fitted: it is pushed (the cell's output is its widget), no error
    "wrapper": (
        "%mlops push wrapped --name wrapped --data X y  # a comment, as after code",
        None,
        None,
    ),
    "compare_baseline_elsewhere": (
        "%mlops compare churn:1 churn:2 --baseline wrapped:1",
        "The baseline wrapped:1 is not among the versions compared: churn:1, churn:2.",
        "Name one of them with --baseline",
    ),
    "missing_var": (
        "%mlops push clf --name churn --data X_typo y",
        "No variable named 'X_typo' for the evaluation data.",
        "spelling",
    ),
    "data_expression": (
        "%mlops push clf --name churn --data X.values y",
        "The evaluation data is named by a variable, not an expression: 'X.values'.",
        "`few = X.values`",
    ),
    "unclosed_quote": (
        "%mlops push clf --name churn -m 'new data",
        "No closing quotation",
        "Close the quote",
    ),
    "unknown_subcommand": ("%mlops pushh clf", "Unknown subcommand 'pushh'", "%mlops?"),
    # a typo in an option is named, not the required option it left out
    "typo_option": (
        "%mlops push clf --nmae churn",
        "%mlops push has no option '--nmae'.",
        "`%mlops push --help` shows its options.",
    ),
    "agent_no_action": (
        "%mlops agent",
        "%mlops agent: the following arguments are required: action.",
        "Usage: %mlops agent {status,start,stop}",
    ),
    "expression_for_a_variable": (
        "%mlops predict churn X.head()",
        "The data is named by a variable, not an expression: 'X.head()'.",
        "Assign it first, e.g. `few = X.head()`",
    ),
    "literal_texts": (
        '%mlops predict reviews ["so good and fast", "awful slow"]',
        "%mlops predict takes variables, not a literal list or expression.",
        "Assign it first, e.g. `few = [...]`, then name `few`.",
    ),
    "columns_expression": (
        '%mlops push clf --name churn --data X[["a", "b"]] y',
        "%mlops push takes variables, not a literal list or expression.",
        "`few = [...]`",
    ),
    "predict_too_big": (
        "%mlops predict churn BIG",
        "one prediction request takes at most 1.0 MiB.",
        "Send fewer rows: about",
    ),
    "sensitive_not_in_wide_x": (
        "%mlops push on_wide --name wide --data X_600 y --sensitive gender",
        "Sensitive column 'gender' is not a column of X, nor a variable.",
        "X has: x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15, x16, x17, "
        "x18, x19 … (600 columns). Or pass a Series aligned with X.",
    ),
    "sensitive_twice": (
        "%mlops push clf --name churn --data X_extra y --sensitive gender gender",
        "Two sensitive features are named 'gender'.",
        "Name each once",
    ),
    "scores_as_labels": (
        "%mlops push clf --name churn --data X y_scores",
        "y holds 200 distinct numbers (e.g. ",
        "Pass the class labels as y (y_test), not probabilities or scores.",
    ),
    "duplicate_column": (
        "%mlops push clf --name churn --data X_dup y",
        "X has more than one column named 'a'.",
        "X.loc[:, ~X.columns.duplicated()]",
    ),
    "list_width": (
        "%mlops push clf --name churn --data X_list y",
        "X has 5 columns; the model was fitted on 4 (a, b, c, d).",
        "the columns it was fitted on",
    ),
    "reference_columns": (
        "%mlops push clf --name churn --data X y --reference X_renamed",
        "The reference lacks 1 column the model was fitted on: 'a'.",
        "with X's columns as the reference",
    ),
    "reference_is_y": (
        "%mlops push clf --name churn --data X y --reference y",
        "The reference lacks 4 columns the model was fitted on: 'a', 'b', 'c', 'd'.",
        "with X's columns as the reference",
    ),
    # this agent hands models to no central: said, not "No model has a deployment."
    "deployments_no_central": (
        "%mlops deployments",
        "Deployments and monitoring live at central, and this agent hands models to no "
        "running central.",
        "jupyter handoff serve --role central",
    ),
    "help": ("%mlops help", None, None),
    "help_push": ("%mlops push clf --help", None, None),
    "agent_down": (
        "import os; os.environ['JUPYTER_RUNTIME_DIR'] = EMPTY\n%mlops versions",
        "No Handoff agent is running",
        "%mlops agent start",
    ),
    # a read starts no agent (there would be nothing in it to read)
    "agent_down_monitor": ("%mlops monitor churn", "No Handoff agent is running", "agent start"),
}


@pytest.fixture(scope="module")
def notebook(shared_agent, tmp_path_factory):
    empty = tmp_path_factory.mktemp("no-agent")
    cells = [
        f"import os\nos.environ['JUPYTER_RUNTIME_DIR'] = {str(shared_agent.runtime_dir)!r}\n"
        f"EMPTY, RUNTIME = {str(empty)!r}, os.environ['JUPYTER_RUNTIME_DIR']\n{SETUP}\n"
        "import jupyter_handoff\n"
        "print(jupyter_handoff.push(clf, 'churn', X=X, y=y).number)"
    ]
    index = {}
    for key, (source, _, _) in MISTAKES.items():
        index[key] = len(cells)
        cells.append(source)
    cells.append(
        "os.environ['JUPYTER_RUNTIME_DIR'] = RUNTIME\n"
        "from IPython.core.error import UsageError\n"
        "try:\n    jupyter_handoff.get('churn:99')\n"
        "except UsageError as e:\n    print('caught', type(e).__name__)"
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    return nb, index


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts += [out["ename"], out["evalue"], *out["traceback"]]
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def test_setup_ran(notebook):
    nb, _ = notebook
    assert _text(nb.cells[0].outputs).strip() == "1"


@pytest.mark.parametrize("key", [k for k, v in MISTAKES.items() if v[1]])
def test_mistake_shows_one_line_and_a_hint(notebook, key):
    nb, index = notebook
    _, says, hint = MISTAKES[key]
    outputs = nb.cells[index[key]].outputs
    text = _text(outputs)
    # No error output with frames: the cell shows IPython's short form on stderr (the kernel
    # may flush it in more than one chunk; the notebook shows them as one block).
    assert outputs and all(o["output_type"] == "stream" for o in outputs), text
    assert {o["name"] for o in outputs} == {"stderr"}, text
    first, *rest = text.strip().splitlines()
    assert first.startswith("UsageError: ") and says in first, text
    assert len(rest) <= 2 and hint in "\n".join(rest), text
    for frame in ("Traceback", 'File "', "---->", "/api/", "\x1b["):
        assert frame not in text, text


def test_extension_loads_quietly(notebook):
    nb, index = notebook
    assert nb.cells[index["load"]].outputs == []


def test_help_where_people_ask_for_it(notebook):
    """`%mlops help` lists the subcommands; --help after one shows its options, not an error."""
    nb, index = notebook
    overview = _text(nb.cells[index["help"]].outputs)
    assert overview.startswith("Subcommands:\n  %mlops push ") and "%mlops monitor " in overview
    push = nb.cells[index["help_push"]].outputs
    assert [o["name"] for o in push] == ["stdout"], push
    text = push[0]["text"]
    assert text.startswith("%mlops push --name NAME") and "--sensitive" in text


def test_python_callers_still_catch_usage_error(notebook):
    nb, _ = notebook
    assert _text(nb.cells[-1].outputs).strip() == "caught AgentError"


@pytest.mark.parametrize("key", ["wrapper", "bins_as_groups"])
def test_what_is_not_a_mistake_is_pushed(notebook, key):
    """A fitted wrapper of the user's own (fitted is judged by the model it holds, not only by
    attributes ending in ``_``); pd.cut's bins as groups, with X's columns reordered."""
    nb, index = notebook
    outputs = nb.cells[index[key]].outputs
    text = _text(outputs)
    assert outputs and "UsageError" not in text and "Error" not in text, text
