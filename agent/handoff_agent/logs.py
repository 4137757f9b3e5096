"""The agent's log lines, inert: what a request names (a path, a model, a user, a message) is
logged with its control characters escaped (``shell.visible``), so it cannot forge a log line
or move the cursor of the terminal that shows the log. One formatter for every handler."""

from __future__ import annotations

import logging
import traceback

from traitlets.config.application import LevelFormatter

from .shell import visible

FORMAT = "[handoff %(levelname)s] %(message)s"


class InertFormatter(LevelFormatter):
    """A record as one inert line; a traceback after it keeps its own lines, each inert, and
    the exception's message (someone else's text, too) is one line of them."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_text = None  # never reuse what another formatter left raw
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei) -> str:
        text = super().formatException(ei)
        for exc in _chain(ei[1]):
            said = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
            text = text.replace(said, visible(said))
        return "\n".join(visible(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(visible(line) for line in stack_info.split("\n"))


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions a traceback of it shows (its cause and context)."""
    found: list[BaseException] = []
    while exc is not None and all(exc is not e for e in found):
        found.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return found


def configure(level: int = logging.INFO) -> None:
    """The root logger to stderr, through ``InertFormatter``; the agent's and tornado's loggers
    at ``level`` (serve's --log-level). Other libraries stay at INFO or above: at DEBUG some
    (botocore, SQLAlchemy) would log request headers and rows."""
    handler = logging.StreamHandler()
    handler.setFormatter(InertFormatter(FORMAT))
    logging.basicConfig(level=max(level, logging.INFO), handlers=[handler])
    for name in ("handoff_agent", "tornado"):
        logging.getLogger(name).setLevel(level)
