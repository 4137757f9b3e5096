"""Deliberately misbehaving models, for testing that workers contain them.

They live in the package (not in tests) because a worker is a clean ``python -I`` process:
it can only unpickle classes that are importable from an installed module.
"""

from __future__ import annotations

import os
import time

import numpy as np


class _Base:
    """Fits nothing; looks like a classifier to the checks."""

    _estimator_type = "classifier"
    classes_ = np.array([0, 1])

    def fit(self, X, y=None):
        return self


class Hangs(_Base):
    def predict(self, X):
        time.sleep(3600)


class Greedy(_Base):
    def predict(self, X):
        hog = np.ones(20 * 2**30 // 8)  # 20 GB
        return hog[: len(X)]


class Exits(_Base):
    def predict(self, X):
        os._exit(3)


class ReturnsNaN(_Base):
    def predict(self, X):
        return np.full(len(X), np.nan)


class WrongShape(_Base):
    def predict(self, X):
        return np.zeros((len(X) + 1, 3))


class Raises(_Base):
    def predict(self, X):
        raise RuntimeError("this model is broken")
