"""What central waits for before a version moves on: the analyst's side of the review queue,
for the history, the push widget and ``%mlops show`` (central's ``GET .../reviews``, relayed by
the local agent)."""

from __future__ import annotations

from handoff_agent.vocabulary import missing_text


def waiting_at_central(name: str, client) -> dict[int, dict]:
    """Central's review entries for the model's versions, by central's version number; {}
    when central cannot say (none configured, or down): a side line never fails a view."""
    found = client.side_get(f"/api/v1/models/{name}/reviews")
    return {r["version"]: r for r in found["reviews"]} if found else {}


def waiting_text(entry: dict | None) -> str:
    """'waits for 1 risk sign-off to become approved (in: bob as reviewer); not yet: …', or
    '' when the version waits for no sign-off."""
    if not entry:
        return ""
    if entry.get("ready"):  # central's policy was relaxed after its sign-offs came in
        text = f"its sign-offs to become {entry['next']} are in; it waits for a move by central"
    else:
        plural = "s" if sum(entry["missing"].values()) > 1 else ""
        text = (
            f"waits for {missing_text(entry['missing'])} sign-off{plural} to become {entry['next']}"
        )
    signed = ", ".join(f"{s['user']} as {s['role']}" for s in entry.get("signoffs") or [])
    text += f" (in: {signed})" if signed else ""
    blocked = entry.get("blocked")
    return text + (f"; not yet: {blocked['message']}" if blocked else "")


def waiting_for(name: str, version: dict, client) -> str:
    """``waiting_text`` for one local version (its detail, or the push widget's state): ''
    at a stage no sign-off moves, before central numbered it, or when central cannot say.
    One reading for the push widget and ``%mlops show``'s text and HTML."""
    from handoff_agent.vocabulary import DEPLOYED_STAGES

    from .deploy_view import central_number

    if version.get("stage") not in DEPLOYED_STAGES:
        return ""
    number = central_number(version)
    if number is None:
        return ""
    return waiting_text(waiting_at_central(name, client).get(number))
