"""Routes for the hand-off: who am I, forward, intake, sign-offs, transitions, lineage."""

from __future__ import annotations

import contextlib

from ..errors import BadRequest, NotFound
from ..ingest import too_large
from ..names import validate_name
from ..outbox import STATES
from ..retention import refuse_pruned
from ..store.blobs import BlobCorrupt, BlobError
from ..vocabulary import DEPLOY_ACTIONS
from . import detached
from .base import ANY_ROLE, BaseHandler, blob_failure, page_args, parse_uint


def _text(body: dict, key: str, limit: int = 2000) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{key} must be a string of at most {limit} characters.")
    return value


class WhoamiHandler(BaseHandler):
    def get(self):
        self.write_json({**self.identity, "role": self.agent.role})


class TokensHandler(BaseHandler):
    """Admin: a new API token with roles, shown once (what `jupyter handoff token create` does,
    over HTTP, so tools never open the agent's database)."""

    roles = {"POST": ("admin",)}
    does = "create tokens"

    async def post(self):
        from .. import tokens

        body = self.json_body()
        user, roles = _text(body, "user", 200), body.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise BadRequest("roles must be a list of role names.", 'e.g. {"roles": ["reviewer"]}')
        models = body.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise BadRequest("models must be a list of model names.", '{"models": ["churn"]}')
        expires = body.get("expires")
        if expires is not None and not isinstance(expires, str):
            raise BadRequest("expires must be a period as text.", '{"expires": "90d"}')
        made = await self.agent.call(
            tokens.issue,
            self.agent.registry,
            user,
            roles,
            self.identity["user"],
            models,
            expires,
            self.agent.token_max_age,
        )
        out = {"user": user, "roles": sorted(set(roles)), "token": made["token"]}
        if models:
            out["models"] = sorted(set(models))
        out["expires"] = made["expires"]  # the policy's default, when none was asked
        self.write_json(out, 201)


class CentralOnly(BaseHandler):
    def central(self):
        if self.agent.role != "central":
            raise NotFound(
                "This happens at central (stages, sign-offs, serving), not on a local agent.",
                "Point this call at the central agent's URL.",
                code="not_central",
            )
        return self.agent.stages


class SignoffHandler(CentralOnly):
    roles = {"POST": ("reviewer", "admin")}
    does = "sign versions off"

    async def post(self, name: str, number: str):
        """``decision`` approve or reject records a sign-off (201); withdraw takes the
        caller's own back while the version still waits for that stage (200)."""
        validate_name(name)
        stages, body = self.central(), self.json_body()
        decision, to = _text(body, "decision", 20), _text(body, "to", 40) or None
        if decision == "withdraw":
            out = await self.agent.call(
                stages.withdraw, name, int(number), self.identity, _text(body, "comment"), to
            )
        else:
            out = await self.agent.call(
                stages.sign,
                name,
                int(number),
                self.identity,
                decision,
                _text(body, "comment"),
                body.get("role"),
                to,
            )
        self.agent.events.publish(
            "stage", model=name, version=int(number), by=self.identity["user"], **out
        )
        self.write_json(out, 200 if decision == "withdraw" else 201)


class TransitionHandler(CentralOnly):
    roles = {"POST": DEPLOY_ACTIONS["transition"]}
    does = "move a version to another stage"

    async def post(self, name: str, number: str):
        validate_name(name)
        stages, body = self.central(), self.json_body()
        out = await self.agent.call(
            stages.transition,
            name,
            int(number),
            self.identity,
            _text(body, "to", 40),
            _text(body, "comment"),
        )
        self.agent.events.publish(
            "stage", model=name, version=int(number), by=self.identity["user"], **out
        )
        self.write_json(out)


class ForwardHandler(BaseHandler):
    """Force a forward, whatever the verdict. Recorded with who asked."""

    roles = {"POST": ("analyst", "admin")}
    does = "hand a version off"

    async def post(self, name: str, number: str):
        validate_name(name)
        to = _text(self.json_body(), "to", 100)
        forwarding = self.agent.forwarding
        if to not in forwarding.destinations:
            raise BadRequest(
                f"No destination named {to!r} is configured.",
                f"Configured: {', '.join(forwarding.destinations) or 'none'} "
                "(c.HandoffAgent.forward_to).",
                code="unknown_destination",
            )
        queued = await self.agent.call(
            self.agent.versions.force_forward, name, int(number), to, self.identity["user"]
        )
        forwarding.wake()
        self.write_json({"name": name, "version": int(number), "to": to, "queued": queued}, 202)


class IntakeHandler(BaseHandler):
    """Central's intake. Authenticated by the delivery's signature, not by a token: its headers
    and declared size are checked before any byte is stored, the signature once all arrived."""

    public = True
    body_types = ("application/x-tar",)
    max_body = None  # the receipt enforces the bundle limit as it streams
    receipt = None

    async def prepare(self):
        await super().prepare()
        if self.agent.role != "central":
            raise NotFound(
                "This agent is not a central; it takes no deliveries.", code="not_central"
            )
        limit = self.agent.max_bundle_size + (1 << 20)
        declared = self.declared_length()
        if declared is not None and declared > limit:
            raise too_large(self.agent.max_bundle_size)
        intake = self.agent.intake
        sender = intake.claimed(self.request.headers)  # its key names it, or no byte is read
        # its hourly limits before any byte: over them, the body is never read
        await self.agent.read(intake.check_rate, {"sender": sender}, declared or 0)
        self.receipt = intake.begin(self.request.headers, declared)
        if declared is None:  # chunked: tornado reads it (data_received)
            self.request.connection.set_max_body_size(limit)
            return
        await detached.read_body(self.request, declared, self.receipt)  # as a push's body
        await self.post()

    def data_received(self, chunk: bytes) -> None:
        self.receipt.write(chunk)

    def on_connection_close(self) -> None:
        if self.receipt is not None:
            self.receipt.abort()
        super().on_connection_close()

    async def post(self):
        receipt, self.receipt = self.receipt, None
        agent = self.agent
        signature = self.request.headers.get("X-Handoff-Signature", "")
        seen = await agent.read(agent.intake.seen, receipt.delivery_id)
        digest, env, blob = await agent.run_io(agent.intake.verify, receipt, signature)
        try:
            if seen is not None:  # verified and already applied: no second effect, or conflict
                replay = agent.intake.replay
                return self.write_json(await agent.read(replay, seen, env, receipt.delivery_id))
            await agent.read(agent.intake.check_rate, env, receipt.size)  # over its limit: waits
            await agent.read(agent.intake.check_chain, env)  # a refused chain leaves no blob
            with blob_errors(f"delivery {receipt.delivery_id}"):
                await agent.run_io(blob.commit, digest)
        finally:
            blob.abort()
        out, created = await agent.trust_flow.receive(
            receipt.delivery_id, digest, receipt.size, env
        )
        self.write_json(out, 201 if created else 200)


class LineageHandler(BaseHandler):
    async def get(self):
        dataset = self.get_query_argument("dataset", None)
        name = self.get_query_argument("model", None)
        if dataset:
            if not 8 <= len(dataset) <= 64 or not all(c in "0123456789abcdef" for c in dataset):
                raise BadRequest(
                    "dataset must be a data fingerprint: its 64 hex digits, or the first 8 "
                    "or more (as the reports show 16)."
                )
            out = await self.agent.read(self.agent.registry.lineage_of_dataset, dataset)
        elif name:
            validate_name(name)
            number = parse_uint(self.get_query_argument("version", None))
            if number is None:
                raise BadRequest("Give version=N with model=NAME.")
            out = await self.agent.read(self.agent.registry.lineage_of_version, name, number)
        else:
            raise BadRequest("Ask about a dataset=FINGERPRINT or a model=NAME&version=N.")
        self.write_json(out)


@contextlib.contextmanager
def blob_errors(what: str):
    """A damaged or unreachable blob as an API error that says what to do."""
    try:
        yield
    except BlobError as e:
        raise (blob_failure(e, what) or blob_failure(BlobCorrupt(str(e)), what)) from None


class BundleHandler(BaseHandler):
    """Download a version's bundle (verified before it is sent), e.g. for a CI webhook."""

    roles = {"GET": ANY_ROLE}

    async def get(self, name: str, number: str):
        validate_name(name)
        version = await self.agent.read(self.agent.registry.get_version, name, int(number))
        refuse_pruned(name, version)
        with blob_errors(f"{name}:{number}"):
            copy = await self.agent.run_io(self.agent.store.local_copy, version["digest"])
        self.set_header("Content-Type", "application/x-tar")
        self.set_header("X-Handoff-Digest", f"sha256:{version['digest']}")
        with copy as f:
            while chunk := f.read(1 << 20):
                self.write(chunk)
                await self.flush()
        self.finish()


class OutboxHandler(BaseHandler):
    async def get(self):
        rows = await self.agent.read(self.agent.registry.outbox_summary)
        self.write_json({"outbox": rows, "problems": self.agent.forwarding.problems()})


class NoticesHandler(BaseHandler):
    """The webhook notices still waiting (refused for now, or under way), oldest first, a
    page at a time."""

    async def get(self):
        limit, after = page_args(self, 100)
        rows = await self.agent.read(self.agent.registry.notice_rows, limit + 1, after)
        body = {"notices": rows[:limit]}
        if len(rows) > limit:
            body["next"] = rows[limit - 1]["id"]
        self.write_json(body)


class DeliveriesHandler(BaseHandler):
    """The outbox's deliveries one by one, oldest first: ``state`` (comma-separated; all by
    default), a page at a time (``limit``, ``after``; ``next`` while there are more)."""

    async def get(self):
        raw = self.get_query_argument("state", ",".join(STATES))
        states = tuple(dict.fromkeys(s.strip() for s in raw.split(",")))
        if not states or not set(states) <= set(STATES):
            raise BadRequest(
                f"state is one or more of {', '.join(STATES)}, not {raw!r}.",
                "e.g. ?state=pending,dead",
            )
        limit, after = page_args(self, 100)
        rows = await self.agent.read(self.agent.registry.outbox_rows, states, limit + 1, after)
        body = {"deliveries": rows[:limit]}
        if len(rows) > limit:
            body["next"] = rows[limit - 1]["id"]
        self.write_json(body)
