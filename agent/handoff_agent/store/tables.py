"""Every table, as SQLAlchemy Core ``Table`` objects: the one place the schema is written.

Names, columns and index names match the schema that sqlite-utils built before the store
existed (migrations m001-m005), so an old home and a fresh database look the same.
JSON lives in TEXT columns, written canonically by the store.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)

metadata = MetaData()
# 64-bit on PostgreSQL (the API takes version numbers up to 2**62); INTEGER on SQLite, where
# an INTEGER PRIMARY KEY is the rowid.
Int = BigInteger().with_variant(Integer, "sqlite")


def _id() -> Column:
    return Column("id", Int, primary_key=True, autoincrement=True)


def _version_fk(nullable: bool = True) -> Column:
    return Column("version_id", Int, ForeignKey("versions.id"), nullable=nullable)


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("name", Text, primary_key=True),
    Column("applied", Text),
)

models = Table(
    "models",
    metadata,
    Column("name", Text, primary_key=True),
    Column("owner", Text),
    Column("created", Text),
    Column("next_version", Int),
)

versions = Table(
    "versions",
    metadata,
    _id(),
    Column("model", Text, ForeignKey("models.name")),
    Column("number", Int),
    Column("digest", Text),
    Column("size", Int),
    Column("flavor", Text),
    Column("task", Text),
    Column("serialization", Text),
    Column("signature", Text),
    Column("params", Text),
    Column("metrics", Text),
    Column("manifest", Text),
    Column("message", Text),
    Column("tags", Text),
    Column("notebook", Text),
    Column("cell_hash", Text),
    Column("environment", Text),
    Column("pushed_by", Text),
    Column("pushed_at", Text),
    Column("status", Text),
    Column("verdict", Text),
    Column("score", Float),
    Column("stage", Text),
    Column("origin", Text),
    Column("needs_trust", Text),
    Column("provisional", Text),  # the verdict so far, until the final one (vocabulary.py)
    Column("pruned", Text),  # when retention removed its bundle; its record and reports stay
    Index("idx_versions_model_number", "model", "number", unique=True),
    Index("idx_versions_model_digest", "model", "digest", unique=True),
)

datasets = Table(
    "datasets",
    metadata,
    Column("fingerprint", Text, primary_key=True),
    Column("schema", Text),
    Column("rows", Int),
    Column("stats", Text),
    Column("created", Text),
)

lineage = Table(
    "lineage",
    metadata,
    _id(),
    _version_fk(),
    Column("dataset", Text),
    Column("role", Text),
    Column("parent_version_id", Int),
    Index("idx_lineage_version_id", "version_id"),
    Index("idx_lineage_dataset", "dataset"),
)

check_runs = Table(
    "check_runs",
    metadata,
    _id(),
    _version_fk(),
    Column("check_name", Text),
    Column("status", Text),  # queued | running | pass | warn | fail | error | skip
    Column("message", Text),
    Column("result", Text),
    Column("duration", Float),
    Column("started", Text),
    Column("finished", Text),
    Column("claimed_by", Text),  # the agent (agent id) that runs it; replicas share the queue
    Column("claimed_until", Float),  # ... renewed while it runs; once past, anyone takes it
    Index("idx_check_runs_version_id_check_name", "version_id", "check_name", unique=True),
    Index("idx_check_runs_status", "status"),
)

audit = Table(
    "audit",
    metadata,
    Column("seq", Int, primary_key=True, autoincrement=False),
    Column("time", Text),
    Column("actor", Text),
    Column("action", Text),
    Column("subject", Text),
    Column("payload", Text),
    Column("prev_hash", Text),
    Column("hash", Text),
    # The filters of GET /api/v1/audit (m022): each served by an index, in chain order where
    # it matches exactly. PostgreSQL's text_pattern_ops serves the prefix match (LIKE
    # 'churn:%') whatever the database's collation; SQLite's range on bytes needs none.
    Index("idx_audit_subject", "subject", "seq", postgresql_ops={"subject": "text_pattern_ops"}),
    Index("idx_audit_action", "action", "seq", postgresql_ops={"action": "text_pattern_ops"}),
    Index("idx_audit_time", "time"),
)
# user names count case-insensitively: the actor filter compares lower(actor)
Index("idx_audit_actor", func.lower(audit.c.actor), audit.c.seq)

# One row (id 1): the chain's head. Writers lock it, so seq and prev_hash never race.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Int, primary_key=True, autoincrement=False),
    Column("seq", Int, nullable=False),
    Column("hash", Text, nullable=False),
)

reports = Table(
    "reports",
    metadata,
    _id(),
    _version_fk(),
    Column("kind", Text),
    Column("digest", Text),
    Column("created", Text),
    Index("idx_reports_version_id_kind", "version_id", "kind", unique=True),
)

stages = Table(
    "stages",
    metadata,
    _id(),
    _version_fk(),
    Column("stage", Text),
    Column("since", Text),
    Column("by", Text),
    Column("comment", Text),
    Index("idx_stages_version_id", "version_id"),
)

signoffs = Table(
    "signoffs",
    metadata,
    _id(),
    _version_fk(),
    Column("stage", Text),
    Column("role", Text),
    Column("user", Text),
    Column("decision", Text),
    Column("comment", Text),
    Column("time", Text),
    Index("idx_signoffs_version_id_stage", "version_id", "stage"),
)

outbox = Table(
    "outbox",
    metadata,
    _id(),
    Column("destination", Text),
    _version_fk(),
    Column("delivery_id", Text),
    Column("body_digest", Text),
    Column("attempts", Int),
    Column("next_try", Float),
    Column("state", Text),  # pending | delivered | dead
    Column("last_error", Text),
    Column("forced_by", Text),
    Column("remote", Text),
    Column("created", Text),
    Column("delivered", Text),
    Column("claimed_by", Text),  # the agent attempting the row (its agent id) ...
    Column("claimed_until", Float),  # ... holds it until then
    Index("idx_outbox_delivery_id", "delivery_id", unique=True),
    Index("idx_outbox_destination_version_id", "destination", "version_id", unique=True),
    Index("idx_outbox_state_next_try", "state", "next_try"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("hash", Text, primary_key=True),
    Column("user", Text),
    Column("roles", Text),
    Column("created", Text),
    Column("revoked", Int),
    Column("models", Text),  # JSON list: the models a consumer token may call; NULL: any
    Column("expires", Text),  # when it stops working (UTC, ISO 8601); NULL: never
    Column("last_used", Text),  # when it was last seen, at most a minute stale; NULL: never
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_id", Text, primary_key=True),
    Column("source", Text),
    Column("version_id", Int),
    Column("received", Text),
    Column("body_digest", Text),
)

sources = Table(
    "sources",
    metadata,
    _id(),
    Column("source", Text),
    Column("seq", Int),
    Column("hash", Text),
    Column("delivery_id", Text),
    Column("time", Text),
    Index("idx_sources_source_seq", "source", "seq"),
)

trust = Table(
    "trust",
    metadata,
    Column("type", Text, primary_key=True),
    Column("trusted_by", Text),
    Column("time", Text),
)

trust_waits = Table(
    "trust_waits",
    metadata,
    Column("version_id", Int, ForeignKey("versions.id"), primary_key=True, autoincrement=False),
    Column("types", Text),
    Column("local_verdict", Text),
    Column("since", Text),
)

# What happened, for every replica's SSE stream (ids only grow).
events = Table(
    "events",
    metadata,
    _id(),
    Column("origin", Text),
    Column("time", Float),
    Column("payload", Text),
)

# -- serving (m007) ----------------------------------------------------------------------------
# Which version serves in which slot of a model's endpoint, with what share of traffic. Every
# replica's model server reads it, so all agree; the DeploymentService alone writes it.
deployments = Table(
    "deployments",
    metadata,
    Column("model", Text, primary_key=True),
    Column("slot", Text, primary_key=True),  # production | canary | shadow | test | previous
    _version_fk(nullable=False),
    Column("number", Int),
    Column("traffic", Float),  # percent of the endpoint's traffic; 0 for shadow, test, previous
    Column("since", Text),
    Column("by", Text),
)

# Ground truth that arrives after a prediction, by the request id the server answered with.
feedback = Table(
    "feedback",
    metadata,
    _id(),
    Column("model", Text),
    Column("request_id", Text),
    Column("label", Text),  # JSON
    Column("time", Text),
    Column("by", Text),
    Index("idx_feedback_model_request", "model", "request_id", unique=True),
)

# The prediction log: Parquet segments in the blob store, listed here in append order.
prediction_segments = Table(
    "prediction_segments",
    metadata,
    _id(),
    Column("model", Text),
    Column("digest", Text),
    Column("rows", Int),
    Column("bytes", Int),
    Column("first_time", Float),
    Column("last_time", Float),
    Column("created", Text),
    Column("quarantined", Text),  # why the monitor cannot read it (m017); null: readable
    Index("idx_prediction_segments_model", "model", "id"),
)

# -- serving stats and guardrails (m008) -------------------------------------------------------
# Each replica's traffic counters per (model, version, slot) and time slice (``stats.WindowStats``
# as JSON); a replica adds into its own rows only, and readers merge every replica's.
serving_stats = Table(
    "serving_stats",
    metadata,
    Column("replica", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("version", Int, primary_key=True),
    Column("slot", Text, primary_key=True),
    Column("slice", Int, primary_key=True),  # start time // slice_seconds
    Column("stats", Text),
    Index("idx_serving_stats_model_slice", "model", "slice"),
)

# What the guardrails decided, each time a model's canary or shadow changed state: the bake
# state that promotion reads, and the alarm a rollback names.
guardrail_events = Table(
    "guardrail_events",
    metadata,
    _id(),
    Column("model", Text),
    Column("version", Int),
    Column("slot", Text),  # canary | shadow
    Column("state", Text),  # vocabulary.GUARDRAIL_STATES, or a shadow verdict
    Column("percent", Float),
    Column("reason", Text),
    Column("decision", Text),  # JSON: the Decision or ShadowReport
    Column("time", Text),
    Column("replica", Text),
    Index("idx_guardrail_events_model_version", "model", "version", "id"),
)

# -- watched data (m011) -----------------------------------------------------------------------
# A data source a model watches. ``source`` is what may be shown (a path, or a SQL URL with its
# password redacted); ``secret`` is the full URL encrypted with the agent's own key (never clear).
data_sources = Table(
    "data_sources",
    metadata,
    _id(),
    Column("model", Text),
    Column("kind", Text),  # file | sql
    Column("source", Text),
    Column("query", Text),  # sql: the query (or table) watched
    Column("secret", Text),
    Column("every", Float),  # seconds between fingerprints
    Column("overdue", Float),  # seconds without new data before overdue (NULL: twice every)
    Column("on", Text),  # JSON list of the change kinds that trigger
    Column("actions", Text),  # JSON list: alert, revalidate, retrain, pause_canary, rollback_canary
    Column("run", Text),  # the registered retraining notebook (absolute path), or NULL
    Column("params", Text),  # JSON: parameters injected into the notebook
    Column("timeout", Float),  # seconds the notebook may run
    Column("target", Text),  # revalidate: the source's target column (m014)
    Column("created", Text),
    Column("by", Text),
    Column("next_due", Float),
    Column("active", Int),
    Index("idx_data_sources_model_source", "model", "source", unique=True),
)

# Each fingerprint of a source, in order, with how it changed from the one before.
source_snapshots = Table(
    "source_snapshots",
    metadata,
    _id(),
    Column("source_id", Int, ForeignKey("data_sources.id")),
    Column("time", Text),
    Column("fingerprint", Text),  # sha256 over the content (files) or the SQL summary
    Column("size", Int),
    Column("mtime", Float),
    Column("rows", Int),
    Column("schema_hash", Text),
    Column("max_updated", Text),
    Column("stats", Text),  # JSON: per-column summary statistics and histograms
    Column("change", Text),  # vocabulary.SOURCE_CHANGES
    Column("psi", Float),
    Column("detail", Text),  # JSON: files, why
    Index("idx_source_snapshots_source", "source_id", "id"),
)

# What a change set off: an action, its state and what it made (a version, an alert).
triggers = Table(
    "triggers",
    metadata,
    _id(),
    Column("source_id", Int, ForeignKey("data_sources.id")),
    Column("snapshot_id", Int),
    Column("change", Text),
    Column("action", Text),
    Column("state", Text),  # vocabulary.TRIGGER_STATES
    Column("detail", Text),  # JSON
    Column("time", Text),
    # a pending trigger (owed by its snapshot, m019): the agent acting on it (its agent id) ...
    Column("claimed_by", Text),
    Column("claimed_until", Float),  # ... holds it until then
    Index("idx_triggers_source", "source_id", "id"),
)

# A version's checks run again on a watched source's new data (the revalidate action, m014):
# recorded against the version, which stays as it was; its own check_runs are untouched.
revalidations = Table(
    "revalidations",
    metadata,
    _id(),
    _version_fk(nullable=False),
    Column("trigger_id", Int),
    Column("source_id", Int),
    Column("snapshot_id", Int),
    Column("target", Text),
    Column("rows", Int),
    Column("state", Text),  # running | done | failed | interrupted (its agent stopped)
    Column("verdict", Text),  # pass | warn | fail (the gate's rule), NULL until done
    Column("checks", Text),  # JSON list: name, status, message, result, duration
    Column("detail", Text),  # JSON: reasons, or why it failed
    Column("started", Text),
    Column("finished", Text),
    Index("idx_revalidations_version", "version_id", "id"),
)


# -- validation (m009) -------------------------------------------------------------------------
# What entering `validated` ran at central: the ONNX conversion with its parity against the
# model (and so the backend that serves the version), then the load test against production
# and its gate. One row per version; a claim with a lease, so one replica runs it and a dead
# one's run is taken over.
validations = Table(
    "validations",
    metadata,
    Column("version_id", Int, ForeignKey("versions.id"), primary_key=True, autoincrement=False),
    Column("model", Text),
    Column("number", Int),
    Column("state", Text),  # queued | converting | load_testing | done
    Column("backend", Text),  # onnx | skops, once converted (or refused)
    Column("onnx", Text),  # digest of the converted graph in the blob store, if any
    Column("conversion", Text),  # JSON: onnx_convert's result (parity, tolerance, reason)
    Column("loadtest", Text),  # JSON: loadtest.run_pair's result, gate included
    Column("verdict", Text),  # the load test's gate: pass | fail | skipped | cancelled
    Column("reason", Text),
    Column("claimed_by", Text),
    Column("claimed_until", Float),
    Column("queued", Text),
    Column("finished", Text),
    Index("idx_validations_state", "state"),
)


# -- monitoring (m010) -------------------------------------------------------------------------
# One row per model, window kind and start: what the monitor computed for a closed window.
monitor_windows = Table(
    "monitor_windows",
    metadata,
    _id(),
    Column("model", Text),
    Column("kind", Text),  # hourly | daily | monthly | rolling
    Column("start", Float),
    Column("end", Float),
    Column("status", Text),  # ok | insufficient (then reason says why)
    Column("reason", Text),
    Column("labels", Text),  # waiting | final | none: the labelled part's state
    Column("metrics", Text),  # JSON
    Column("computed", Text),
    Index("idx_monitor_windows_model_kind_start", "model", "kind", "start", unique=True),
)

# Alerts: fired by a closed window crossing a threshold, cleared by one back within bounds.
alerts = Table(
    "alerts",
    metadata,
    _id(),
    Column("model", Text),
    Column("kind", Text),  # monitor_policy.ALERT_KINDS
    Column("window", Text),  # the window kind it watches
    Column("state", Text),  # firing | cleared
    Column("value", Float),
    Column("threshold", Float),
    Column("fired_window", Float),  # start of the window that fired it
    Column("fired", Text),
    Column("cleared_window", Float),
    Column("cleared", Text),
    Column("action", Text),  # notify | rollback | retrain
    Column("outcome", Text),  # what the action did
    Column("message", Text),
    Index("idx_alerts_model_state", "model", "state"),
)

# A model's monitoring reference (validation data with predictions, scores and labels), a
# Parquet blob; without one, the production version's pushed evaluation data is used.
monitor_references = Table(
    "monitor_references",
    metadata,
    Column("model", Text, primary_key=True),
    Column("digest", Text),
    Column("rows", Int),
    Column("time", Text),
    Column("by", Text),
)

# The columns that name the blobs kept for a version, its reports, its monitoring and its
# validation (``VersionStore.digests`` says who refers to each). A delivery's body named in
# none of them is the forwarder's to remove once delivered.
# -- webhook notices (m018) --------------------------------------------------------------------
# A notice (an alert, a rollback, a trigger, a review or trust request) to one webhook
# destination, from the transaction of the change that owes it until it is taken or given up:
# a notice refused for now is tried again after a restart, by this replica or another.
notices = Table(
    "notices",
    metadata,
    _id(),
    Column("kind", Text),
    Column("destination", Text),
    Column("delivery_id", Text),
    Column("body", Text),
    Column("attempts", Int),
    Column("next_try", Float),
    Column("last_error", Text),
    Column("created", Text),
    Column("claimed_by", Text),  # the agent attempting it (its agent id) ...
    Column("claimed_until", Float),  # ... holds it until then
    Index("idx_notices_next_try", "next_try"),
)

# -- central's signing keys (m021) -------------------------------------------------------------
# Every public key central has signed dossiers with: the current one (retired NULL) and those
# a rotation or a new key file retired, still published so old dossiers verify.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("public_key", Text),  # base64 of the 32 raw bytes; never the private key
    Column("first_used", Text),
    Column("retired", Text),  # when it stopped signing (UTC, ISO 8601); NULL: signs now
)

BLOB_REFERENCES = (
    versions.c.digest,
    reports.c.digest,
    prediction_segments.c.digest,
    validations.c.onnx,
    monitor_references.c.digest,
)
