"""Destination ``mlflow``: register the version in an MLflow Model Registry.

The registered version carries the verdict, its reasons and each check's status as tags; its
run carries the HTML report (``handoff/report.html``) and the bundle's manifest. Registering
means loading the model, and the agent never unpickles, so each attempt runs
``python -I -m handoff_agent.forwarding.mlflow_worker`` in the agent's sandbox (``sandbox.py``),
with a scrubbed environment. It shares the network, which it needs to reach MLflow, but sees no
file of the agent's but the bundle and the report, passed as open descriptors.

The stored body is the job: which bundle and report (by digest) and the tags; each attempt hands
the worker verified local copies from the blob store. Where
it goes (tracking URI, model name prefix) is read from the configuration on every attempt.
Needs the ``mlflow`` extra: ``pip install 'jupyter-handoff[mlflow]'``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from traitlets import Enum, Float, Int, List, Unicode
from traitlets.config import LoggingConfigurable

from ..plugins import Delivery, DestinationContext, NotReady, Result
from ..sandbox import Limits, Sandbox, SandboxRefused
from ..store.blobs import BlobError, BlobUnavailable

REPORT_WAIT_ATTEMPTS = 5  # the report is written just after the verdict; wait for it a little


class MLflowDestination(LoggingConfigurable):
    name = "mlflow"
    tracking_uri = Unicode(
        help="MLflow tracking server URI, e.g. http://mlflow.internal:5000. Required."
    ).tag(config=True)
    registered_model_prefix = Unicode(
        "",
        help="Prefix for registered model names: the version of Handoff model NAME is "
        "registered as PREFIX + NAME.",
    ).tag(config=True)
    experiment = Unicode(
        "handoff", help="MLflow experiment that holds the runs the versions are logged in."
    ).tag(config=True)
    serialization_format = Enum(
        ["cloudpickle", "pickle"],
        "cloudpickle",
        help="How MLflow stores the model. Explicit, because MLflow 3 defaults to skops and "
        "refuses common sklearn types (trees) unless they are trusted.",
    ).tag(config=True)
    trusted_types = List(
        Unicode(),
        None,
        allow_none=True,
        help="Exact types the worker lets skops load beyond Handoff's default trust list "
        "(handoff_agent.trust), when the bundle is skops. None: the default list only.",
    ).tag(config=True)
    timeout = Float(
        300.0, help="Seconds one registration may take (load, log, upload) before it is retried."
    ).tag(config=True)
    http_retries = Int(
        2,
        help="MLflow client retries per HTTP request inside one attempt (the outbox retries too).",
    ).tag(config=True)

    async def body(self, ctx: DestinationContext, delivery: Delivery, **kwargs) -> bytes:
        v = delivery.version
        report = None
        if "html" in (v.get("reports") or []):
            digest = await ctx.report_digest(delivery.model, delivery.number, "html")
            if digest:
                report = {"digest": digest}
        waiting = v.get("verdict") and v.get("checks")  # checked versions get a report
        if report is None and waiting and delivery.attempt <= REPORT_WAIT_ATTEMPTS:
            raise NotReady("waiting for the HTML report to be written")
        verdict = v.get("verdict") or {}
        version_tags = {
            "handoff.verdict": verdict.get("verdict") or "none",
            "handoff.reasons": json.dumps(verdict.get("reasons") or []),
            "handoff.digest": delivery.digest,
            "handoff.local_version": str(delivery.number),
            "handoff.model": delivery.model,
            "handoff.pushed_by": v.get("pushed_by") or "",
            "handoff.pushed_at": str(v.get("pushed_at") or ""),
            "handoff.status": v.get("status") or "",
            "handoff.agent": ctx.agent_id,
        }
        for check in v.get("checks") or []:
            version_tags[f"handoff.check.{check['name']}"] = check.get("status") or ""
        run_tags = {
            "handoff.model": delivery.model,
            "handoff.local_version": str(delivery.number),
            "handoff.digest": delivery.digest,
            "handoff.verdict": version_tags["handoff.verdict"],
        }
        return json.dumps(
            {
                "format": 1,
                "delivery_id": delivery.delivery_id,
                "model": delivery.model,
                "number": delivery.number,
                "digest": delivery.digest,
                "report": report,
                "run_name": f"{delivery.model}:{delivery.number}",
                "version_tags": version_tags,
                "run_tags": run_tags,
            },
            sort_keys=True,
        ).encode()

    def deliver(
        self, delivery: Delivery, ctx: DestinationContext | None = None, **kwargs
    ) -> Result:
        """``ctx``: the agent's blob copies, sandbox and worker limits (this destination is
        never handed the agent itself). Its error never shows the tracking URI's password,
        whatever MLflow's own messages quote."""
        result = self._deliver(delivery, ctx)
        password = urllib.parse.urlsplit(self.tracking_uri).password
        for secret in {password, urllib.parse.unquote(password or "")} - {None, ""}:
            result.error = result.error.replace(secret, "***")
        return result

    def _deliver(self, delivery: Delivery, ctx: DestinationContext | None) -> Result:
        if ctx is None or ctx.local_copy is None:
            return Result(False, retryable=False, error="no DestinationContext given to deliver")
        if not self.tracking_uri:
            return Result(False, retryable=False, error="MLflowDestination.tracking_uri is not set")
        job = json.loads(delivery.body.read())
        job.update(
            tracking_uri=self.tracking_uri,
            registered_model_name=self.registered_model_prefix + job["model"],
            experiment=self.experiment,
            serialization_format=self.serialization_format,
            trusted_types=self.trusted_types,
        )
        down = self._unreachable()
        if down:
            return Result(False, error=down)
        env = {  # the tracking URI (it may hold a password) comes in the job, not here
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.http_retries),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(5, min(self.timeout / 2, 120)))),
        }
        job["env"] = env
        try:
            files = self._local_copies(ctx.local_copy, job)
        except BlobUnavailable as e:
            return Result(False, error=str(e))
        except BlobError as e:
            return Result(False, retryable=False, error=f"{e}; run `jupyter handoff fsck`")
        try:
            out, error = asyncio.run(self._run_worker(ctx, job, files))
        finally:
            for f in files.values():
                f.close()
        if out is None:
            return Result(False, retryable=error.endswith("will retry"), error=error)
        if not out.get("ok"):
            self.log.warning("mlflow delivery %s failed: %s", delivery.delivery_id, out["error"])
            return Result(False, retryable=bool(out.get("retryable")), error=out["error"])
        return Result(
            True,
            remote={
                "tracking_uri": shown(self.tracking_uri),
                "registered_model": out["name"],
                "mlflow_version": out["version"],
                "run_id": out["run_id"],
            },
        )

    def _local_copies(self, local_copy, job: dict) -> dict:
        """Verified local copies of the bundle and the report, as the worker's files."""
        files = {}
        try:
            files["bundle"] = local_copy(job["digest"])
            if job.get("report"):
                files["report.path"] = local_copy(job["report"]["digest"])
        except BaseException:
            for f in files.values():
                f.close()
            raise
        return files

    async def _run_worker(
        self, ctx: DestinationContext, job: dict, files: dict
    ) -> tuple[dict | None, str]:
        """One sandboxed registration attempt: its result, or None and why."""
        sandbox = ctx.sandbox or Sandbox()
        limits = ctx.limits or Limits()
        run = await sandbox.run_once(
            "handoff_agent.forwarding.mlflow_worker",
            limits,
            job,
            files,
            self.timeout,
            network=True,
            writable=self._local_store(),
        )
        if isinstance(run.error, SandboxRefused):
            error = str(run.error)
        elif isinstance(run.error, TimeoutError):
            error = (
                f"registering in MLflow took longer than {self.timeout:g} s "
                "(MLflowDestination.timeout); will retry"
            )
        elif run.error is not None:
            error = f"the MLflow worker broke its protocol: {run.error}"
        else:
            error = "the MLflow worker exited with no result"
        out = run.result
        if out is None and run.started and "will retry" not in error:
            tail = run.stderr.strip().splitlines()[-5:]
            error = f"{error} (exit code {run.code}): " + " | ".join(tail)
        return out, error

    def _local_store(self) -> tuple[str, ...]:
        """A file: or sqlite: tracking URI names a directory the sandboxed worker must write."""
        from urllib.parse import urlsplit

        uri = self.tracking_uri
        if uri.startswith("file:"):
            path = urlsplit(uri).path
        elif uri.startswith("sqlite:///"):
            path = os.path.dirname(uri[len("sqlite:///") - 1 :])
        else:
            return ()
        os.makedirs(path, exist_ok=True)
        return (os.path.realpath(path),)

    def _unreachable(self) -> str:
        """A quick look before starting a worker: a down server is retried, cheaply."""
        uri = self.tracking_uri.rstrip("/")
        if not uri.startswith(("http://", "https://")):
            return ""
        parts = urllib.parse.urlsplit(uri)
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        request = urllib.request.Request(f"{bare}/health")
        if parts.username is not None:  # as MLflow sends them: basic auth, not in the URL
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                r.read()
        except urllib.error.HTTPError:
            return ""  # it answers; /health may just not exist behind a proxy
        except (OSError, ValueError) as e:
            return f"MLflow server {shown(uri)} is unreachable: {getattr(e, 'reason', e)}"
        return ""


def shown(uri: str) -> str:
    """The URI as errors and the delivery record may show it: never with its password."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}").geturl()
