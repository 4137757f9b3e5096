"""bench/serve.py --quick, on the LogisticRegression only, with its Handoff slot pointed at a
real V2 server started here: it runs, measures every column it was given, and writes its
results file. No wall-clock thresholds: the targets are the benchmark's business."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import tornado.web

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "serve.py"


class Infer(tornado.web.RequestHandler):
    """A stand-in for Handoff's V2 endpoint: answers every row with class 0."""

    def post(self, name):
        rows = json.loads(self.request.body)["inputs"][0]["shape"][0]
        out = {"name": "predict", "shape": [rows], "datatype": "INT64", "data": [0] * rows}
        self.finish({"model_name": name, "outputs": [out]})


def test_quick_run_measures_each_given_column(tmp_path):
    # Given a real V2 server on loopback, in a thread of this process
    ready, holder = threading.Event(), {}

    def serve():
        async def main():
            app = tornado.web.Application([(r"/v2/models/([^/]+)/infer", Infer)])
            server = app.listen(0, address="127.0.0.1")
            holder["port"] = next(iter(server._sockets.values())).getsockname()[1]
            holder["loop"], holder["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            await holder["stop"].wait()
            server.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    url = f"http://127.0.0.1:{holder['port']}/v2/models/bench-{{model}}/infer"
    out = tmp_path / "serve.json"
    try:
        # When the benchmark runs with that URL in its skops slot
        run = subprocess.run(
            [sys.executable, str(BENCH), "--quick", "--skip-mlflow", "--skip-handoff",
             "--models", "logreg", "--handoff-skops-url", url,
             "--out", str(out), "--dir", str(tmp_path)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
    # Then it measured direct predict, onnxruntime and the slot, and not what it was not given
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads(out.read_text())["models"]["logreg"]
    for key in ("direct", "onnxruntime", "handoff_skops"):
        assert data[key]["p50"] > 0 and data[key]["throughput"] > 0, key
    assert data["onnxruntime"]["labels_equal"] is True
    assert data["handoff_skops"]["errors"] == 0
    assert data["handoff_onnx"] is None and data["mlflow"] is None
    assert "Handoff V2, ONNX backend" in run.stdout and "not measured" in run.stdout
    assert not list(tmp_path.glob("handoff-bench-serve-*")), "temp dir left behind"
