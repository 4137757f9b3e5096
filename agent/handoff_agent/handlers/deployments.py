"""Central's deployment routes: where each version serves, the canary's share, the one-step
rollback, a trial prediction, ground-truth feedback by request id, and the prediction log as
Parquet. Thin over serving.deploy.

A local agent answers the two a notebook needs (where it serves, a trial prediction) by asking
its central with its own central token: the notebook never holds a token for central, and
never learns one."""

from __future__ import annotations

from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..names import validate_name
from ..serving.labels import problem as label_problem
from ..vocabulary import DEPLOY_ACTIONS, TRAFFIC_SHARE
from .base import ANY_ROLE
from .pipeline import CentralOnly, _text
from .relay import FromCentral

MAX_LABELS = 10_000


class DeploymentHandler(FromCentral):
    """Where each version serves. A local agent shows its central's answer."""

    async def get(self, name: str):
        validate_name(name)
        agent = self.agent
        if agent.role != "central":
            self.write_json(await self.from_central("GET", f"/api/v1/models/{name}/deployment"))
            return
        self.central()
        await self.known_model(name)
        view = await agent.call(agent.deployments.view, name, agent.model_server)
        if agent.validation is not None:  # backend, parity and load test per served version
            numbers = {s["version"] for s in view["slots"]}
            view["validations"] = await agent.read(agent.validation.for_versions, name, numbers)
        self.write_json(view)


class ValidationHandler(CentralOnly):
    """GET: what entering validated ran for a version (backend, parity, load test and gate).
    POST (admin): run it again, e.g. after a failed gate whose cause is fixed."""

    roles = {"GET": ANY_ROLE, "POST": ("admin",)}
    does = "run a version's validation again"

    def service(self):
        self.central()
        if self.agent.validation is None or not self.agent.validation.settings.enabled:
            raise NotFound(
                "Validation is off at this central (c.Validation.enabled = False).",
                code="validation_off",
            )
        return self.agent.validation

    async def get(self, name: str, number: str):
        validate_name(name)
        service = self.service()
        out = await self.agent.read(service.of, name, int(number))
        if out is None:
            raise NotFound(
                f"{name}:{number} has no validation.",
                "One runs when a version enters validated at central.",
                code="no_validation",
            )
        self.write_json({"model": name, "version": int(number), **out})

    async def post(self, name: str, number: str):
        validate_name(name)
        service = self.service()
        out = await self.agent.call(service.rerun, name, int(number), self.identity["user"])
        self.write_json({"model": name, "version": int(number), **out}, 202)


class TrafficHandler(CentralOnly):
    """The canary's share of the traffic, 0..100 (what the guardrails' linear steps do)."""

    roles = {"POST": DEPLOY_ACTIONS["traffic"]}
    does = "set a canary's traffic"

    async def post(self, name: str):
        validate_name(name)
        self.central()
        percent = self.json_body().get("percent")  # a misspelt key refused before any read
        await self.known_model(name)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            low, high = TRAFFIC_SHARE
            said = f"percent must be a number from {low:g} to {high:g}."
            raise BadRequest(said, '{"percent": 25}')
        agent = self.agent
        user = self.identity["user"]
        out = await agent.call(agent.deployments.set_traffic, name, float(percent), user)
        agent.events.publish("deployment", model=name, by=user, **out)
        await agent.serving_changed()
        self.write_json(await agent.call(agent.deployments.view, name, agent.model_server))


class PredictHandler(FromCentral):
    """A trial prediction from the notebook, routed as any request (or to ``version``), with
    the version and slot that answered. A local agent passes it to its central."""

    roles = {"POST": ANY_ROLE}

    async def post(self, name: str):
        validate_name(name)
        body = self.json_body()
        if self.agent.role != "central":
            self.write_json(await self.from_central("POST", f"/api/v1/models/{name}/predict", body))
            return
        self.central()
        from ..serving import protocols
        from ..serving.inputs import decode_invocations

        server = self.agent.model_server
        if server is None:
            raise Conflict(
                "Central serves no models (c.Serving.enabled is False).", code="not_serving"
            )
        version = body.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise BadRequest("version must be a version number.", '{"version": 2}')
        inputs = {k: v for k, v in body.items() if k != "version"}
        served = await server.infer(name, version, lambda cols: decode_invocations(inputs, cols))
        out = {
            "model": name,
            "version": served.number,
            "slot": served.slot,
            "request_id": served.request_id,
            **protocols.invocations(served.outputs),
        }
        pool = server.pools.get((name, served.number))
        if "probabilities" in out and pool is not None and pool.info.get("classes") is not None:
            out["classes"] = pool.info["classes"]  # the probabilities' columns, in order
        self.write_json(out)


class RollbackHandler(CentralOnly):
    """Admin: the production version is rolled back and the previous one serves again, in
    one step (stages, slots and audit rows in one transaction).

    ``version``: the production version the caller saw. The StageManager checks it under the
    version's lock, so a second rollback (a double click, two admins answering one alert) is
    a 409 saying who rolled it back, never a rollback of the version restored in its place.
    Optional, for clients and scripts older than it: then whatever serves when asked."""

    roles = {"POST": DEPLOY_ACTIONS["rollback"]}
    does = "roll a model back"

    async def post(self, name: str):
        validate_name(name)
        stages, body = self.central(), self.json_body()
        await self.known_model(name)
        agent = self.agent
        number = body.get("version")
        if number is None:
            number = await agent.call(agent.deployments.production_version, name)
        elif isinstance(number, bool) or not isinstance(number, int) or not 0 < number <= 2**62:
            raise BadRequest(
                "version must be the number of the version in production you mean to roll back.",
                '{"version": 3, "comment": "error rate up"}',
            )
        comment = _text(body, "comment") or "rollback"
        out = await agent.call(stages.transition, name, number, self.identity, "rollback", comment)
        agent.events.publish("stage", model=name, version=number, by=self.identity["user"], **out)
        await agent.serving_changed()
        self.write_json(await agent.call(agent.deployments.view, name, agent.model_server))


class FeedbackHandler(CentralOnly):
    """Ground truth for served predictions, by the request id the server answered with.
    A consumer token sends it for its own models (an admin may too): labels decide live
    performance and the monitor's rollbacks, so an analyst's token cannot rewrite them."""

    roles = {"POST": ("admin", "consumer")}
    does = "send ground-truth labels"

    async def post(self, name: str):
        validate_name(name)
        self.central()
        scope = self.identity.get("models")
        if scope is not None and name not in scope:
            raise Forbidden(
                f"This token may not send feedback for {name!r}.", code="model_not_allowed"
            )
        labels = self.json_body().get("labels")
        if (
            not isinstance(labels, list)
            or not labels
            or len(labels) > MAX_LABELS
            or not all(
                isinstance(x, dict)
                and isinstance(x.get("request_id"), str)
                and 0 < len(x["request_id"]) <= 128
                and "label" in x
                for x in labels
            )
        ):
            raise BadRequest(
                f"labels must be a list of 1 to {MAX_LABELS} {{request_id, label}} objects.",
                '{"labels": [{"request_id": "…", "label": 1}]}',
            )
        await self.known_model(name, monitored=True)
        pairs = [(x["request_id"], x["label"]) for x in labels]
        server = self.agent.model_server

        def served(request_id: str):
            hit = server.served(name, request_id) if server is not None else None
            return hit and hit[3]

        if why := label_problem(pairs, served):
            raise BadRequest(
                why, "Send labels as the model predicts them (e.g. 0/1, not 'no'/'yes')."
            )
        n = await self.agent.call(
            self.agent.registry.feedback_add,
            name,
            pairs,
            self.identity["user"],
            "admin" in self.identity.get("roles", ()),
        )
        self.write_json({"model": name, "labels": n}, 201)


class PredictionsHandler(CentralOnly):
    """The model's prediction log, as one Parquet file (what monitoring reads); refused while
    a segment is quarantined unless the caller asks for the rest (``quarantined=skip``)."""

    async def get(self, name: str):
        validate_name(name)
        self.central()
        await self.known_model(name, monitored=True)
        from ..serving.predlog import read, to_parquet_frame

        agent = self.agent
        if agent.model_server is not None:
            await agent.model_server.log.flush()
        quarantined = self.get_query_argument("quarantined", None)
        if quarantined not in (None, "skip"):
            raise BadRequest(f"Unknown quarantined={quarantined!r}.", "Use quarantined=skip.")
        skip = quarantined == "skip"
        frame = await agent.run_io(read, agent.registry, agent.store, name, skip)
        self.set_header("Content-Type", "application/vnd.apache.parquet")
        self.finish(await agent.run_io(to_parquet_frame, frame))
