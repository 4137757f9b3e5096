"""The agent's API as an OpenAPI 3 document, served at ``GET /api/v1/openapi.json``.

Every route of ``HandoffAgent.make_app`` is described here, once: its methods, parameters,
request body and responses. A test compares this with the app's routes, so they cannot drift.
The document is public (like ``/health``): it describes the API, never data.
"""

from __future__ import annotations

import re

from ._version import __version__
from .names import NAME_PATTERN

ERROR = {"$ref": "#/components/schemas/Error"}
OBJECT = {"type": "object"}
VERSION = "/api/v1/models/{name}/versions/{number}"


def _param(name, where, description, schema=None, required=False):
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


NAME = _param("name", "path", "Model name.", {"type": "string", "pattern": f"^{NAME_PATTERN}$"})
NUMBER = _param("number", "path", "Version number.", {"type": "string", "pattern": "^[0-9]{1,18}$"})
INT = {"type": "integer", "minimum": 1, "maximum": 2**62}


def _page(default: int) -> list[dict]:
    """``limit`` and ``after`` of a listing a page at a time by id."""
    return [
        _param(
            "limit", "query", f"At most this many (1-1000; {default}).", {**INT, "maximum": 1000}
        ),
        _param("after", "query", "The `next` of the page before.", {**INT, "minimum": 0}),
    ]


SHA256 = {"type": "string", "pattern": "^(sha256:)?[0-9a-f]{64}$"}
SIZE = {"type": "integer", "minimum": 0}
SPOOL_ENTRY = {"type": "string", "pattern": "^[0-9a-f]{32}\\.bundle$"}
SOURCE_ID = _param(
    "source_id", "path", "A watched source's id.", {"type": "string", "pattern": "^[0-9]{1,18}$"}
)


def _json_body(properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


TAR_BODY = {
    "required": True,
    "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
}


def _op(summary, ok="200", params=(), body=None, public=False, ok_type="application/json", also=()):
    types = ok_type if isinstance(ok_type, tuple) else (ok_type,)
    content = {
        t: {"schema": OBJECT if t == "application/json" else {"type": "string"}} for t in types
    }
    op = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            ok: {"description": "Success.", "content": content},
            **{code: {"description": why, "content": content} for code, why in also},
            "4XX": {
                "description": "The one error shape, for every refusal.",
                "content": {"application/json": {"schema": ERROR}},
            },
        },
    }
    if body is not None:
        op["requestBody"] = body
    if public:
        op["security"] = []
    return op


_TEXT = {"type": "string", "maxLength": 2000}

# path template -> method -> operation. Central-only routes answer 404 on a local agent.
PATHS: dict[str, dict[str, dict]] = {
    "/api/v1/health": {
        "get": _op(
            "Liveness, version, role, the sandbox's mode, and `disk`: ok, low (less than twice "
            "min_free_space free) or full (pushes and deliveries are refused).",
            public=True,
        )
    },
    "/api/v1/ready": {
        "get": _op(
            "Readiness: 200 while the metadata and blob stores answer and, on a central "
            "that serves, its model server is ready (`model_server: ready`); else 503 "
            "(database_busy, blob_store_unavailable or model_server_not_ready, with "
            "Retry-After).",
            public=True,
        )
    },
    "/api/v1/openapi.json": {"get": _op("This document.", public=True)},
    "/api/v1/models": {
        "get": _op(
            "Models by name, a page at a time (``next``: the ``after`` of the next page). "
            "At central each carries open_alerts (the count) and firing (kind, window, "
            "message of each firing alert, worst kind first), and the models known only from "
            "`monitor import` (served elsewhere) are listed too, `imported: true`.",
            params=[
                _param("limit", "query", "At most this many (1-1000).", {**INT, "maximum": 1000}),
                _param("after", "query", "Only models named after this.", {"type": "string"}),
            ],
        )
    },
    "/api/v1/models/{name}/versions": {
        "get": _op(
            "A model's versions, newest first; each with `undelivered` (hand-offs still "
            "pending or refused, with the last error), `central_version` (the number "
            "central gave it; null until central took it), its `signoffs` (stage, role, "
            "user, decision, comment) and `stage_text` ('rejected by rita: too few rows').",
            params=[
                NAME,
                _param("limit", "query", "At most this many (1-1000).", {**INT, "maximum": 1000}),
                _param("before", "query", "Only versions numbered below this.", INT),
                _param("digest", "query", "Only the version with this bundle digest.", SHA256),
            ],
        ),
        "post": _op(
            "Push a bundle (a tar), streamed to disk and hashed; or, from a kernel on this "
            "machine, {spool: entry} naming a bundle it wrote into the agent's spool. With "
            "X-Handoff-Spool-Follow naming the entry, the agent reads it while the kernel "
            "writes it, and the body, sent last, adds the size and the manifest's digest, "
            "which with the layout pin every byte. With X-Handoff-Digest and 'Expect: "
            "100-continue', a version of this model already holding those bytes is the "
            "answer (200) before any body is sent.",
            ok="201",
            params=[
                NAME,
                _param(
                    "X-Handoff-Digest", "header", "sha256:<hex> of the bundle, checked.", SHA256
                ),
                _param(
                    "X-Handoff-Spool-Follow",
                    "header",
                    "The spool entry the kernel is writing; the agent reads it as it grows.",
                    SPOOL_ENTRY,
                ),
            ],
            body={
                "required": True,
                "content": {
                    **TAR_BODY["content"],
                    "application/vnd.handoff.spool+json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "spool": SPOOL_ENTRY,
                                "size": {**SIZE, "description": "Followed: the bytes written."},
                                "manifest": {
                                    **SHA256,
                                    "description": "Followed: sha256:<hex> of manifest.json.",
                                },
                            },
                            "required": ["spool"],
                        }
                    },
                },
            },
        ),
    },
    "/api/v1/models/{name}/champion": {
        "get": _op(
            "The version a new one is compared with.",
            params=[NAME, _param("before", "query", "The champion before this version.", INT)],
        )
    },
    VERSION: {
        "get": _op(
            "One version, with its checks, reports, stage history, sign-offs and `stage_text`.",
            params=[NAME, NUMBER],
        )
    },
    VERSION + "/report": {
        "get": _op(
            "A version's report (sandboxed by its CSP).",
            params=[
                NAME,
                NUMBER,
                _param("format", "query", "Report kind.", {"enum": ["html", "json", "md"]}),
            ],
            ok_type=("text/html", "application/json", "text/markdown"),
        )
    },
    VERSION + "/bundle": {
        "get": _op(
            "Download the bundle, verified first.",
            params=[NAME, NUMBER],
            ok_type="application/x-tar",
        )
    },
    VERSION + "/forward": {
        "post": _op(
            "Queue a forward to a destination, whatever the verdict.",
            ok="202",
            params=[NAME, NUMBER],
            body=_json_body({"to": {"type": "string", "maxLength": 100}}, ["to"]),
        )
    },
    VERSION + "/signoffs": {
        "post": _op(
            "Central: sign off (or reject) a version's next stage. Refused with 409 "
            "`bake_not_clean` for production before the canary baked clean, "
            "`shadow_not_passed` for canary before a passed shadow report (policy `shadow`), "
            "`load_test_failed` or `load_test_pending` where the load test gates; "
            "`stage_moved` when `to` (the next stage as the reviewer saw it) is no longer "
            "the next stage: another sign-off moved the version on first. "
            "`withdraw` takes the caller's own sign-off back while the version still waits "
            "for that stage (200); 409 `signoff_counted` once it moved, "
            "`nothing_to_withdraw` when the caller has none.",
            ok="201",
            also=[("200", "A sign-off withdrawn.")],
            params=[NAME, NUMBER],
            body=_json_body(
                {
                    "decision": {"type": "string", "enum": ["approve", "reject", "withdraw"]},
                    "comment": _TEXT,
                    "role": {"type": "string"},
                    "to": {"type": "string", "maxLength": 40},
                },
                ["decision"],
            ),
        )
    },
    VERSION + "/transition": {
        "post": _op(
            "Central: move a version to another stage (the same 409 refusals as a "
            "sign-off: `bake_not_clean`, `shadow_not_passed`, `load_test_failed`, "
            "`load_test_pending`).",
            params=[NAME, NUMBER],
            body=_json_body({"to": {"type": "string", "maxLength": 40}, "comment": _TEXT}, ["to"]),
        )
    },
    VERSION + "/dossier": {
        "get": _op(
            "The version's signed dossier (zip: HTML, JSON, reports, audit rows, signature). "
            "Central builds it; a local agent fetches it from its central.",
            params=[NAME, NUMBER],
            ok_type="application/zip",
        )
    },
    "/api/v1/inventory": {
        "get": _op(
            "Every model with owner, stage, data, sensitive attributes, checks, last sign-off "
            "and risk tags.",
            params=[
                _param("tag", "query", "A risk tag, or a push tag as KEY=VALUE."),
                _param("stage", "query", "Only models whose described version is in this stage."),
                _param("owner", "query", "Only this owner's models."),
                _param("dataset", "query", "A data fingerprint or a prefix of 8+ hex digits."),
                _param("sensitive", "query", "Only models checked on this sensitive attribute."),
            ],
        )
    },
    "/api/v1/keys": {"get": _op("Central's public ed25519 key that signs dossiers.", public=True)},
    "/api/v1/audit": {
        "get": _op(
            "Reviewer or admin: the audit log's entries in chain order (seq, time, actor, "
            "action, subject, payload as the JSON text its hash covers, prev_hash, hash), "
            "filtered, a page at a time (``next``: the ``after`` of the next page), with the "
            "chain's `head`. A bad filter is a 400; a parameter given twice is 400 "
            "repeated_parameter (ask once for each), one it does not know 400 "
            "unknown_parameter (a misspelt filter would read the whole log).",
            params=[
                _param(
                    "subject",
                    "query",
                    "A subject; a model name matches its versions' too (churn: churn:3).",
                    {"type": "string", "maxLength": 200},
                ),
                _param(
                    "actor", "query", "Who made the change.", {"type": "string", "maxLength": 200}
                ),
                _param(
                    "action",
                    "query",
                    "An action (signoff, stage.enter), or its kind (stage).",
                    {"type": "string", "maxLength": 200},
                ),
                _param(
                    "since",
                    "query",
                    "Entries at or after this time: ISO 8601 (no zone: UTC) or epoch seconds.",
                ),
                _param("until", "query", "Entries before this time, written as since."),
                *_page(100),
            ],
        )
    },
    "/api/v1/events": {
        "get": _op(
            "Server-sent events (never ends): versions, checks, provisional and final verdicts, "
            "reports, stages.",
            params=[
                _param("model", "query", "Only this model's events.", NAME["schema"]),
                _param("version", "query", "Only this version's events.", INT),
                _param("Last-Event-ID", "header", "Resume after this event id.", INT),
            ],
            ok_type="text/event-stream",
        )
    },
    "/api/v1/whoami": {
        "get": _op(
            "The caller's user and roles (and `expires`, when the token has an expiry), and "
            "the agent's role."
        )
    },
    "/api/v1/reviews": {
        "get": _op(
            "Central: the versions waiting for sign-offs, oldest stage change first: stage, "
            "next stage, the sign-offs still missing (role -> count) and those in, verdict, "
            "who pushed it, and `blocked` (what would refuse an approval now: a bake, a "
            "shadow, a load test). `mine=true`: only those the caller may sign now. A page at "
            "a time (``next``: the ``after`` of the next page).",
            params=[
                _param(
                    "mine",
                    "query",
                    "true: only the caller's to sign.",
                    {"type": "string", "enum": ["true", "false"]},
                ),
                *_page(500),
            ],
        )
    },
    "/api/v1/meta": {
        "get": _op(
            "The shared vocabulary: metric directions, statuses, the stage flow with the "
            "sign-offs the live policy requires, the comparison rules, and the deployment "
            "words (slots, guardrail states, alarms) with the live policy's [deploy] keys."
        )
    },
    "/api/v1/intake": {
        "post": _op(
            "Central: a signed delivery from a local agent (HMAC, not a token). A sender past "
            "the policy's [intake] max_versions_per_hour or max_bytes_per_hour gets 429 "
            "rate_limited with Retry-After (413 for one delivery over the hour's bytes).",
            ok="201",
            params=[
                _param("X-Handoff-Delivery", "header", "32 hex digits.", required=True),
                _param("X-Handoff-Timestamp", "header", "Unix seconds.", required=True),
                _param("X-Handoff-Signature", "header", "sha256=<hmac>.", required=True),
                _param(
                    "X-Handoff-Key",
                    "header",
                    "The key of the secret that signs: a delivery naming no key, or one "
                    "central does not know, is a 401 before its body is read.",
                    required=True,
                ),
            ],
            body=TAR_BODY,
            public=True,
        )
    },
    "/api/v1/lineage": {
        "get": _op(
            "Lineage of a dataset, or of a model's version.",
            params=[
                _param(
                    "dataset",
                    "query",
                    "A dataset fingerprint (sha256), or its first 8 or more digits.",
                    {"type": "string", "pattern": "^[0-9a-f]{8,64}$"},
                ),
                _param("model", "query", "A model name (with version).", NAME["schema"]),
                _param("version", "query", "A version number (with model).", INT),
            ],
        )
    },
    "/api/v1/lineage/graph": {
        "get": _op(
            "The lineage graph: watched sources and pushed datasets, the models and versions "
            "using them, where each serves now, and which change triggered which retrain.",
            params=[
                _param("ref", "query", "A source (path, URL or id), a fingerprint or a model."),
                _param("format", "query", "json (default) or dot.", {"enum": ["json", "dot"]}),
            ],
            ok_type=("application/json", "text/vnd.graphviz"),
        )
    },
    "/api/v1/watches": {
        "get": _op(
            "The watched data sources, each with its last fingerprint and its last trigger "
            "(action, state, and a revalidation's verdict or the error).",
            params=[_param("model", "query", "Only this model's sources.", NAME["schema"])],
        ),
        "post": _op(
            "Analyst or admin: watch a data source for a model; answers after the first "
            "fingerprint.",
            ok="201",
            body=_json_body(
                {
                    "model": NAME["schema"],
                    "source": {"type": "string", "minLength": 1},
                    "query": {"type": "string"},
                    "every": {"type": "string"},
                    "overdue": {"type": "string"},
                    "on": {"type": "array", "items": {"type": "string"}},
                    "actions": {"type": "array", "items": {"type": "string"}},
                    "run": {"type": "string"},
                    "params": OBJECT,
                    "timeout": {"type": "number", "minimum": 1},
                    "target": {"type": "string", "minLength": 1},
                },
                ["model", "source"],
            ),
        ),
    },
    "/api/v1/watches/{source_id}": {
        "get": _op(
            "One watched source: its fingerprints and what they triggered.", params=[SOURCE_ID]
        ),
        "delete": _op("Analyst or admin: stop watching the source.", params=[SOURCE_ID]),
    },
    "/api/v1/watches/{source_id}/check": {
        "post": _op("Analyst or admin: fingerprint the source now.", params=[SOURCE_ID]),
    },
    "/api/v1/outbox": {
        "get": _op(
            "Deliveries waiting, done or dead-lettered: counts; ``problems``: what stops a "
            "destination's stages coming back (a token central refuses)."
        )
    },
    "/api/v1/outbox/deliveries": {
        "get": _op(
            "The deliveries one by one, oldest first: version, destination, state, attempts, "
            "the next try and the last error. A page at a time (``next``: the ``after`` of "
            "the next page).",
            params=[
                _param(
                    "state",
                    "query",
                    "Comma-separated: pending, delivered, dead (all by default).",
                    {
                        "type": "string",
                        "pattern": "^(pending|delivered|dead)(,(pending|delivered|dead))*$",
                    },
                ),
                *_page(100),
            ],
        )
    },
    "/api/v1/outbox/notices": {
        "get": _op(
            "The webhook notices not yet taken nor given up, oldest first: kind, destination, "
            "delivery id, attempts, the next try and the last error. A page at a time.",
            params=[*_page(100)],
        )
    },
    "/api/v1/tokens": {
        "post": _op(
            "Admin: create an API token with roles; the token is shown once.",
            ok="201",
            body=_json_body(
                {
                    "user": {"type": "string", "minLength": 1, "maxLength": 200},
                    "roles": {
                        "type": "array",
                        "items": {
                            "type": "string",
                            "enum": ["analyst", "reviewer", "admin", "consumer"],
                        },
                        "minItems": 1,
                    },
                    "models": {
                        "type": "array",
                        "items": NAME["schema"],
                        "description": "A consumer token's models (required for consumer).",
                    },
                    "expires": {
                        "type": "string",
                        "description": "When it stops working, as a period from now: 30m, "
                        "24h, 90d. Default: central's [tokens] max_age, else never; longer "
                        "than max_age is 400 expires_too_long. The answer's `expires` says "
                        "when (UTC); past it the token is 401 token_expired.",
                    },
                },
                ["user", "roles"],
            ),
        )
    },
    "/api/v1/models/{name}/deployment": {
        "get": _op(
            "Where each version serves (slot, traffic %, requests, error rate, p50/p99, "
            "backend, and the `alarms` holding on the slot), the model server's URL, the "
            "`guardrails` block (the canary's live decision: state, percent, reason, alarm; "
            "the shadow's report: agreement, PSI, latency against production; the serving "
            "tick), and each served version's validation (backend, ONNX parity, load test and "
            "gate). A local agent answers with its central's. A model central has no version "
            "of is a 404 here, as on its monitor, alerts and predictions.",
            params=[NAME],
        )
    },
    "/api/v1/models/{name}/deployment/events": {
        "get": _op(
            "Server-sent events (never ends): the model's deployment events (stage, "
            "deployment, guardrail, validation, alert), with central's event ids. At central, "
            "its own; a local agent relays its central's with its own central token (never "
            "shown), sends a `central` event (state connected or down, and why) when that "
            "stream opens or is lost, and opens it again by itself. A model unknown there (no "
            "version, no prediction log) is a 404 before any stream starts.",
            params=[
                NAME,
                _param("Last-Event-ID", "header", "Resume after this (central's) event id.", INT),
            ],
            ok_type="text/event-stream",
        )
    },
    "/api/v1/models/{name}/deployment/traffic": {
        "post": _op(
            "Admin, central: set the canary's share of the traffic (0 to 100); production "
            "takes the rest.",
            params=[NAME],
            body=_json_body(
                {"percent": {"type": "number", "minimum": 0, "maximum": 100}}, ["percent"]
            ),
        )
    },
    "/api/v1/models/{name}/predict": {
        "post": _op(
            "A trial prediction, routed like any request (or to one served version), answered "
            "with the version and slot that served it. A local agent passes it to its central. "
            "The body is MLflow's (dataframe_split, dataframe_records, instances or inputs).",
            params=[NAME],
            body={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "dataframe_split": {"type": "object"},
                                "dataframe_records": {"type": "array", "items": {"type": "object"}},
                                "instances": {},
                                "inputs": {},
                                "version": {"type": "integer", "minimum": 1},
                            },
                        }
                    }
                },
            },
        )
    },
    VERSION + "/revalidations": {
        "get": _op(
            "The version's revalidations: its checks re-run on a watched source's new rows "
            "(the revalidate action), each with its state, verdict and checks' results.",
            params=[NAME, NUMBER],
        )
    },
    VERSION + "/validation": {
        "get": _op(
            "Central: what entering validated ran for the version: the serving backend, the "
            "ONNX parity result and tolerance, the load test against production and its gate.",
            params=[NAME, NUMBER],
        ),
        "post": _op(
            "Admin, central: run the version's validation again (it must be validated).",
            ok="202",
            params=[NAME, NUMBER],
        ),
    },
    "/api/v1/models/{name}/deployment/rollback": {
        "post": _op(
            "Admin, central: roll the production version back; the previous production "
            "serves again in one step. `version`: the production version the caller saw "
            "(optional for older clients; without it, whatever serves when asked). Once that "
            "version has left production (rolled back already, or replaced), 409 "
            "`wrong_stage` saying by whom and when, and nothing changes; 409 "
            "`nothing_to_roll_back` when no previous production is kept.",
            params=[NAME],
            body={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"version": INT, "comment": _TEXT},
                        }
                    }
                },
            },
        )
    },
    "/api/v1/models/{name}/feedback": {
        "post": _op(
            "Central: ground-truth labels for served predictions, by request id (a consumer "
            "token for its models, or an admin). A label another user sent is theirs to "
            "replace (409 labelled_by_another).",
            ok="201",
            params=[NAME],
            body=_json_body(
                {
                    "labels": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 10000,
                        "items": {
                            "type": "object",
                            "properties": {
                                "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                                "label": {},
                            },
                            "required": ["request_id", "label"],
                        },
                    }
                },
                ["labels"],
            ),
        )
    },
    "/api/v1/models/{name}/predictions": {
        "get": _op(
            "Central: the model's prediction log as one Parquet file. 409 "
            "log_segments_quarantined while segments are quarantined (their bytes are bad), "
            "naming them, unless quarantined=skip asks for the rest.",
            params=[
                NAME,
                _param(
                    "quarantined",
                    "query",
                    "skip: serve the readable segments, leaving out the quarantined.",
                    {"type": "string", "enum": ["skip"]},
                ),
            ],
            ok_type="application/vnd.apache.parquet",
        )
    },
    "/api/v1/models/{name}/monitor": {
        "get": _op(
            "The model's monitoring windows at central (a local agent relays them) as time "
            "series (traffic, error rate, latency, input and prediction drift, labelled "
            "performance with bootstrap CIs, "
            "the label-free estimate), each window's readings (per alert kind: value, "
            "threshold, the worse side, crossed), the count of firing alerts and the "
            "[monitor] policy.",
            params=[
                NAME,
                _param(
                    "window",
                    "query",
                    "Only this window kind.",
                    {"type": "string", "enum": ["hourly", "daily", "monthly", "rolling"]},
                ),
                _param(
                    "since", "query", "Windows starting at or after (epoch s).", {"type": "number"}
                ),
                _param(
                    "limit",
                    "query",
                    "Only the newest this many windows (1-1000).",
                    {**INT, "maximum": 1000},
                ),
            ],
        )
    },
    "/api/v1/models/{name}/monitor/run": {
        "post": _op(
            "Admin, central: evaluate the windows closed by now (epoch seconds, default the "
            "clock: a simulated earlier time replays a backfill; one past central's clock by "
            "more than 300 s is a 400 now_in_future); returns the windows and alert changes.",
            params=[NAME],
            body={
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "properties": {"now": {"type": "number"}}}
                    }
                },
            },
        )
    },
    "/api/v1/models/{name}/alerts": {
        "get": _op(
            "The model's monitoring alerts at central (a local agent relays them), newest first.",
            params=[
                NAME,
                _param(
                    "state",
                    "query",
                    "firing or cleared.",
                    {"type": "string", "enum": ["firing", "cleared"]},
                ),
            ],
        )
    },
    "/api/v1/models/{name}/reviews": {
        "get": _op(
            "What central waits for before the model's versions move on (the review queue's "
            "entries for one model, as `GET /api/v1/reviews` has them; a local agent relays "
            "them, so the analyst needs no central token). A page at a time, as there.",
            params=[NAME, *_page(500)],
        )
    },
    "/api/v1/models/{name}/prune": {
        "post": _op(
            "Admin: remove the bundles of the model's versions older than its newest `keep` "
            "that nothing needs (not checking, at no live stage, serving in no slot, with no "
            "delivery to go, not the champion); their records, reports and audit rows stay. "
            "`dry_run` lists them and removes nothing. Answers the versions and bytes freed.",
            params=[NAME],
            body=_json_body(
                {
                    "keep": {"type": "integer", "minimum": 1},
                    "dry_run": {"type": "boolean"},
                },
                ["keep"],
            ),
        )
    },
    "/api/v1/trust": {
        "get": _op("The trust list: default, policy and admin-added types."),
        "post": _op(
            "Admin: trust exact type names; versions waiting in needs_trust go on.",
            ok="201",
            body=_json_body(
                {"types": {"type": "array", "items": {"type": "string"}, "maxItems": 100}},
                ["types"],
            ),
        ),
    },
}


def query_names(path: str) -> dict[str, tuple[str, ...]]:
    """The query parameters each method of ``path`` (a template) takes, as its operations
    declare them: what the route accepts (``BaseHandler.check_query``), so the document
    and the API cannot disagree."""
    return {
        method.upper(): tuple(p["name"] for p in op["parameters"] if p["in"] == "query")
        for method, op in PATHS.get(path, {}).items()
    }


# The request bodies whose keys are the caller's own data, not a route's fields: no key of
# theirs is refused. Every other operation whose JSON body declares ``properties`` takes only
# those at its top level (``body_names``; ``BaseHandler.json_body`` answers any other key with
# 400 unknown_field). Values below the top level (a model's inputs, a label, a watch's params)
# are never checked. The model server's routes are listed here too: one place for every
# exemption (tests/agent/test_body_fields.py holds every route to it).
FREE_FORM_BODIES: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/models/{name}/versions"): "a push: the bundle (a tar), or the "
    "kernel's note of the spool entry it wrote (application/vnd.handoff.spool+json)",
    ("POST", "/api/v1/intake"): "a signed delivery (a tar) from a local agent",
    ("POST", "/invocations"): "the model server: MLflow's scoring body, a model's inputs",
    ("POST", "/v2/models/{name}/infer"): "the model server: an Open Inference Protocol V2 "
    "request (inputs, parameters, outputs, id)",
    ("POST", "/v2/models/{name}/versions/{number}/infer"): "the model server: an Open "
    "Inference Protocol V2 request (inputs, parameters, outputs, id)",
}


def _json_schema(op: dict) -> dict:
    return (
        op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    )


def body_names(path: str) -> dict[str, tuple[str, ...]]:
    """The top-level keys each method of ``path`` (a template) takes in its JSON body, as its
    operations declare them (``properties``): what the route accepts, so the document and the
    API cannot disagree. A method whose body is free-form (``FREE_FORM_BODIES``) or declares
    no JSON properties is left out: its body is taken as it comes."""
    out = {}
    for method, op in PATHS.get(path, {}).items():
        schema = _json_schema(op)
        if "properties" in schema and (method.upper(), path) not in FREE_FORM_BODIES:
            out[method.upper()] = tuple(schema["properties"])
    return out


def _close_checked_bodies() -> None:
    """The document says what the routes enforce: each checked body is
    ``additionalProperties: false`` (a client generator, a fuzzer read the same rule)."""
    for path, ops in PATHS.items():
        for method in body_names(path):
            _json_schema(ops[method.lower()])["additionalProperties"] = False


_close_checked_bodies()


def template(pattern: str) -> str:
    """A tornado route pattern as an OpenAPI path: ``(?P<name>...)`` becomes ``{name}``."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)


def document(role: str = "local") -> dict:
    """The OpenAPI 3 document. Same routes for both roles; central-only ones 404 locally."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Handoff agent API",
            "version": __version__,
            "description": f"The {role} Handoff agent. Send `Authorization: token <token>` "
            "(or Bearer); `jupyter handoff status` shows it. Errors are always "
            '`{"error": {"code", "message", "hint"}}` with a 4xx status. A query parameter an '
            "operation does not declare is 400 unknown_parameter, one given twice 400 "
            "repeated_parameter (a bare number, a client's cache buster, is no parameter). A "
            "JSON body key an operation's schema does not declare is 400 unknown_field, "
            "except where the body is the caller's own data (a push, an intake delivery).",
        },
        "paths": PATHS,
        "security": [{"token": []}],
        "components": {
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The agent's token, or one from `jupyter handoff token "
                    "create`. `Authorization: token <token>` works too.",
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "hint"],
                            "additionalProperties": False,
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "hint": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    }
