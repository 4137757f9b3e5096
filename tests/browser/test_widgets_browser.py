"""The push and comparison widgets rendered by real JupyterLab in Chromium.

Screenshots go to tests/browser/artifacts/, and to docs/ (shown in the README) only with
HANDOFF_UPDATE_SCREENSHOTS=1, so a test run never changes tracked files.

The notebook runs through a real kernel (nbclient, widget state stored), then JupyterLab opens
it and its widget manager draws the stored widgets: no menu clicks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from playwright.sync_api import expect

DOCS = Path(__file__).parents[2] / "docs"
if not os.environ.get("HANDOFF_UPDATE_SCREENSHOTS"):
    DOCS = Path(__file__).parent / "artifacts"

SETUP = """\
%load_ext jupyter_handoff
import numpy as np, pandas as pd
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
X, y = make_classification(n_samples=2000, n_features=6, n_informative=4, random_state=1)
X = pd.DataFrame(X, columns=["tenure", "charges", "calls", "usage", "discount", "late"])
X["gender"] = np.random.default_rng(1).integers(0, 2, len(X))
y = pd.Series(y, name="churned")
logit = LogisticRegression(max_iter=1000).fit(X, y)
forest = RandomForestClassifier(n_estimators=40, random_state=1).fit(X, y)
v1 = %mlops push logit --name retention --data X y --sensitive gender -m "logistic baseline"
v2 = %mlops push forest --name retention --data X y --sensitive gender -m "random forest"
v1.wait(); v2.wait();"""


def run_notebook(lab, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    client = NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(lab.root_dir)}})  # fmt: skip
    client.execute(env=lab.env)
    path = lab.root_dir / "widgets.ipynb"
    nbformat.write(nb, path)
    # Trusted, as a notebook the user ran: JupyterLab renders widgets only in trusted output.
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(path)], env=lab.env, check=True)
    return path


def test_push_and_compare_widgets_render_in_jupyterlab(jupyterlab, lab_page):
    # Given a notebook run in a real kernel: two checked pushes, one shown, and a comparison
    # (of a model of its own: the side panel's tests on this lab count churn's versions)
    nb = run_notebook(
        jupyterlab,
        [SETUP, "v2", "%mlops compare retention:1 retention:2", "%mlops report retention:2"],
    )
    # When JupyterLab opens it
    page = lab_page()
    page.goto(jupyterlab.lab_url(f"lab/tree/{nb.name}"))
    push = page.locator(".handoff-push").first
    push.wait_for(timeout=60_000)
    compare = page.locator(".handoff-compare").first
    compare.wait_for(timeout=60_000)
    # Then the push widget shows a row per check, the verdict and the report button
    expect(push.get_by_text("explainability").first).to_be_visible()
    expect(push.get_by_text("Verdict")).to_have_count(1)
    expect(push.get_by_role("button", name="Open report")).to_be_enabled()
    # And the comparison shows its pickers, metrics with deltas, and charts
    expect(compare.get_by_text("roc_auc").first).to_be_visible()
    expect(compare.locator("select").first).to_be_visible()
    expect(compare.locator("img[alt='metrics']")).to_have_count(1)
    # And the report shows inline, in its sandboxed frame (no script runs in it)
    frame = page.locator("iframe[title^='Handoff report']")
    expect(frame).to_have_attribute("sandbox", "")
    report = page.frame_locator("iframe[title^='Handoff report']")
    expect(report.get_by_text("explainability").first).to_be_visible(timeout=30_000)
    expect(report.get_by_text("random forest").first).to_be_visible()
    DOCS.mkdir(exist_ok=True)
    # The stored widgets have no live kernel behind them: hide ipywidgets' "disconnected"
    # marks, which a live notebook never shows, and make room for the whole comparison.
    page.add_style_tag(content=".jupyter-widgets-disconnected::before{display:none!important}")
    page.set_viewport_size({"width": 1400, "height": 2600})
    push.scroll_into_view_if_needed()
    push.screenshot(path=str(DOCS / "push-widget.png"))
    compare.scroll_into_view_if_needed()
    compare.screenshot(path=str(DOCS / "compare-widget.png"))
