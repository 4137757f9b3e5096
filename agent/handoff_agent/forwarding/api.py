"""The whole forwarder plugin API, in one place.

A destination is a class registered in the ``handoff_agent.forwarders`` entry point group and
configured by name (``c.HandoffAgent.forward_to = ["central"]``). The agent calls ``body`` once
per delivery (its bytes are stored and then sent byte for byte on every retry) and ``deliver``
on each attempt, in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


class NotReady(Exception):
    """The destination cannot take deliveries yet (e.g. not running). Retried with backoff."""


@dataclass
class Delivery:
    delivery_id: str
    destination: str
    model: str
    number: int
    digest: str  # the version's bundle
    body: Path | None = None  # the stored body, once built
    attempt: int = 0
    version: dict = field(default_factory=dict)


@dataclass
class Result:
    ok: bool
    retryable: bool = True
    retry_after: float | None = None
    remote: dict = field(default_factory=dict)
    error: str = ""


@runtime_checkable
class Destination(Protocol):
    name: str

    async def body(self, agent, delivery: Delivery, **kwargs) -> bytes | Path:
        """What to send: bytes or a file, stored once as a blob and reused on retries."""
        ...

    def deliver(self, delivery: Delivery, **kwargs) -> Result:
        """One attempt. Runs in a thread. Never raises for a refusal: return a Result."""
        ...
