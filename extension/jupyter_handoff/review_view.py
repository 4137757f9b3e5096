"""What central waits for before a version moves on: the analyst's side of the review queue,
for the history and the push widget (central's ``GET .../reviews``, relayed by the local
agent)."""

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
