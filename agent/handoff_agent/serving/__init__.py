"""Model serving at central (issue 11)."""
