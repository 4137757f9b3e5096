"""The destination plugin API, kept importable here for plugins written against it.

The whole plugin API is declared in ``handoff_agent.plugins``.
"""

from ..plugins import (
    Delivery,
    Destination,
    DestinationContext,
    ForwardError,
    NotReady,
    Result,
    StageSource,
)

__all__ = [
    "Delivery",
    "Destination",
    "DestinationContext",
    "ForwardError",
    "NotReady",
    "Result",
    "StageSource",
]
