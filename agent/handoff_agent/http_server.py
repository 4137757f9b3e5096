"""The agent's HTTP servers, bounded against clients that hold connections open.

The API and the model server share one process, so one table of file descriptors: idle or
slow clients that take them all would stop both, and leave tornado's accept loop logging
"Too many open files" for every turn. Each server keeps to its share of the open-file limit
(connections past it are closed at once, with one warning a minute) and drops a connection
that sends no request within ``HEADER_TIMEOUT``.
"""

from __future__ import annotations

import logging
import resource
import time

from tornado import httpserver

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 75.0  # seconds a connection may wait for its next request (nginx's keep-alive)
RESERVED_FILES = 512  # the database, blobs, logs, workers' pipes: never given to clients


def open_file_limit() -> int:
    """The soft limit on open files, raised to the hard one (what the system allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


def connection_share() -> int:
    """Connections one of the two servers may hold: half of what the reserve leaves."""
    return max(64, (open_file_limit() - RESERVED_FILES) // 2)


class BoundedHTTPServer(httpserver.HTTPServer):
    """An ``HTTPServer`` that closes connections past ``connection_share()`` at once."""

    def initialize(self, *args, **kwargs) -> None:
        kwargs.setdefault("idle_connection_timeout", HEADER_TIMEOUT)
        super().initialize(*args, **kwargs)
        self.max_connections = connection_share()
        self._warned = 0.0

    def handle_stream(self, stream, address) -> None:
        if len(self._connections) >= self.max_connections:
            stream.close()
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning(
                    "%d connections are open, the most this server holds: closing new ones "
                    "until some end (idle ones end after %.0f s)",
                    len(self._connections),
                    HEADER_TIMEOUT,
                )
            return
        super().handle_stream(stream, address)
