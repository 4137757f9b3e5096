"""Checks: the plugin API (``api``), discovery (``registry``) and the built-in checks."""
