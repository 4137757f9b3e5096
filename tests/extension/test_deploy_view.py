"""How a deployment's guardrails and validations read. The validations are built with
central's own summary(), so a change of their shape there shows here."""

from __future__ import annotations

from handoff_agent.serving.validation import summary
from jupyter_handoff.deploy_view import deployment_html, guardrail_lines, validation_lines
from jupyter_handoff.serving_calls import Deployment

BAKING = {
    "state": "baking",
    "percent": 30.0,
    "step": 0,
    "reason": "Baking at 30%: 20 more requests before a decision.",
    "alarm": None,
    "alarms": [],
    "missing": {"requests": 20},
    "metrics": {"requests": 0, "errors": 0, "error_rate": None},
}


def row(**kw) -> dict:
    base = {"state": "done", "backend": "onnx", "verdict": None, "reason": None, "onnx": "ab" * 32}
    base |= {"queued": "2026-12-05T01:00:00", "finished": None, "conversion": {}, "loadtest": {}}
    return base | kw


VIEW = {
    "model": "churn",
    "slots": [
        {"slot": "production", "version": 1, "traffic": 70.0, "requests": 5},
        {"slot": "canary", "version": 2, "traffic": 30.0, "requests": 0},
    ],
    "guardrails": {"canary": BAKING, "shadow": None, "tick": 7},
    "validations": {
        "1": summary(
            row(
                conversion={
                    "converted": True,
                    "max_abs_diff": 9.115e-8,
                    "label_agreement": 1.0,
                    "rows": 400,
                },
                verdict="pass",
                loadtest={"gate": {"verdict": "pass", "reasons": []}},
            )
        ),
        "2": summary(
            row(
                state="failed",
                backend="skops",
                conversion={"converted": False, "reason": "no converter for this model"},
                verdict="fail",
                loadtest={"gate": {"reasons": ["p99 2.5x production's, over max_p99_ratio 1.5"]}},
                reason="the load test failed its gate",
            )
        ),
    },
    "serving_url": "http://127.0.0.1:1",
    "policy": {"canary_percent": 30},
}


def test_guardrails_and_validations_read_as_a_line_each():
    assert guardrail_lines(VIEW) == [
        "canary baking at 30%: Baking at 30%: 20 more requests before a decision."
    ]
    assert validation_lines(VIEW) == [
        "v1 done: onnx backend; ONNX parity: max abs diff 9.1e-08, labels agree 100% on 400 "
        "rows; load test pass",
        "v2 failed: skops backend; no ONNX: no converter for this model; load test fail: p99 "
        "2.5x production's, over max_p99_ratio 1.5; the load test failed its gate",
    ]
    text = repr(Deployment("churn", VIEW))
    assert "  guardrails: canary baking at 30%: Baking" in text
    assert "  validation: v2 failed: skops backend;" in text
    assert "state=" not in text and "tick" not in text  # no flattened dicts
    html = deployment_html("churn", VIEW)
    assert "<div>guardrails: canary baking at 30%" in html and "<div>validation: v1 done" in html


def test_a_view_without_guardrails_or_validations_has_no_such_lines():
    bare = {"model": "churn", "slots": VIEW["slots"], "guardrails": {"canary": None}}
    assert guardrail_lines(bare) == [] and validation_lines(bare) == []
    assert "guardrails" not in repr(Deployment("churn", bare))
