"""Deliberately misbehaving models, for testing that workers contain them.

They live in the package (not in tests) because a worker is a clean ``python -I`` process:
it can only unpickle classes that are importable from an installed module.
"""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


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


class BigBatches(ClassifierMixin, BaseEstimator):
    """A classifier (sklearn's score) that predicts the sign of its first column, and hangs or
    raises on more than ``limit`` rows at once: only a check that predicts many rows in one
    call (explainability's stacked permutations) meets it; the others pass."""

    _estimator_type = "classifier"
    classes_ = np.array([0, 1])

    def __init__(self, limit: int = 1000, how: str = "hang"):
        self.limit, self.how = limit, how

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def predict(self, X):
        if len(X) > self.limit:
            if self.how == "hang":
                time.sleep(3600)
            raise RuntimeError(f"{len(X)} rows at once is too many for this model")
        return (np.asarray(X)[:, 0] > 0).astype(int)


# -- escapes the sandbox must stop (tests/agent/test_sandbox.py) ------------------------------


class CallsOut(_Base):
    """Connects to a port on loopback, where the test listens."""

    def __init__(self, port: int):
        self.port = port

    def predict(self, X):
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
            said = "connected"
        except OSError as e:
            said = f"blocked ({e})"
        raise RuntimeError(f"network: {said}")


class Snoops(_Base):
    """Reads the agent's /proc and files, and says what it saw in its error: the first 4 KiB,
    and which of ``needles`` the whole file holds (a long environment hides its tail)."""

    def __init__(self, paths: list[str], needles: tuple[str, ...] = ()):
        self.paths, self.needles = paths, needles

    def predict(self, X):
        seen = []
        for path in self.paths:
            try:
                with open(path, "rb") as f:
                    data = f.read(1 << 20)
                found = [n for n in self.needles if n.encode() in data]
                seen.append(f"{path}: READ {data[:4096]!r}" + "".join(f" FOUND {n}" for n in found))
            except OSError as e:
                seen.append(f"{path}: unreadable ({type(e).__name__})")
        raise RuntimeError("snooped: " + " | ".join(seen))


class ForkBomb(_Base):
    """Forks up to ``n`` sleeping children (each ``sleep 60 MARKER``), once."""

    def __init__(self, n: int, marker: str):
        self.n, self.marker, self.done = n, marker, False

    def predict(self, X):
        if not self.done:
            self.done = True
            started = 0
            try:
                for _ in range(self.n):
                    if os.fork() == 0:
                        try:
                            os.execv("/bin/sleep", ["sleep", "60", self.marker])
                        finally:
                            os._exit(1)
                    started += 1
            except OSError as e:
                raise RuntimeError(f"fork bomb stopped after {started} processes: {e}") from e
        return np.zeros(len(X), dtype=int)


class HugeFile(_Base):
    """Writes a 10 GB file (sparse, so that an unconfined run cannot fill the disk)."""

    def predict(self, X):
        with open("huge.bin", "wb") as f:
            f.write(b"x" * (1 << 20))
            f.seek(10 * 10**9)
            f.write(b"x")
        return np.zeros(len(X), dtype=int)


class Orphan(_Base):
    """Leaves a child in a session of its own that holds stderr open and sleeps."""

    def __init__(self, marker: str):
        self.marker = marker

    def predict(self, X):
        if os.fork() == 0:
            try:
                os.setsid()
                os.execv("/bin/sleep", ["sleep", "3600", self.marker])
            finally:
                os._exit(1)
        return np.zeros(len(X), dtype=int)


class Junk(_Base):
    """Writes a line that is not JSON to every pipe it holds but stdin and stderr."""

    def predict(self, X):
        import stat

        mine = {os.fstat(fd).st_ino for fd in (0, 2)}
        for fd in range(3, 256):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISFIFO(st.st_mode) and st.st_ino not in mine:
                os.write(fd, b"this is not json\n")
        return np.zeros(len(X), dtype=int)
