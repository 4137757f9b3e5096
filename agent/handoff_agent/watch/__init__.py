"""Watched data sources: fingerprints on a schedule, classified changes, and the actions they
trigger (alert, re-validation, a headless retraining notebook, a paused canary)."""
