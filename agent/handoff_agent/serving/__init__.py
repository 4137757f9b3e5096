"""The model server: slots, routing, guardrails and the prediction log (issue 11)."""
