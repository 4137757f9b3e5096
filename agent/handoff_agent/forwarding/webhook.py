"""Destination ``webhook``: any CI. POSTs signed JSON saying which version and where to fetch
its bundle. The target must be on the operator's allowlist; redirects are not followed."""

from __future__ import annotations

import json

from traitlets import List, Unicode
from traitlets.config import LoggingConfigurable

from ..plugins import Delivery, DestinationContext, Result
from .http import post_signed


class WebhookDestination(LoggingConfigurable):
    name = "webhook"
    url = Unicode(help="Where to POST. Must appear in allowed_urls.").tag(config=True)
    secret = Unicode(help="Shared HMAC secret for the X-Handoff-Signature header.").tag(config=True)
    allowed_urls = List(
        Unicode(), help="Operator allowlist of exact webhook URLs; anything else is refused."
    ).tag(config=True)

    async def body(self, ctx: DestinationContext, delivery: Delivery, **kwargs) -> bytes:
        v = delivery.version
        return json.dumps(
            {
                "delivery_id": delivery.delivery_id,
                "name": delivery.model,
                "version": delivery.number,
                "digest": delivery.digest,
                "verdict": v.get("verdict"),
                "pushed_by": v.get("pushed_by"),
                "pushed_at": v.get("pushed_at"),
                "bundle_url": f"{ctx.url}/api/v1/models/{delivery.model}/versions/"
                f"{delivery.number}/bundle",
                "report_url": f"{ctx.url}/api/v1/models/{delivery.model}/versions/"
                f"{delivery.number}/report",
            },
            sort_keys=True,
        ).encode()

    def deliver(self, delivery: Delivery, **kwargs) -> Result:
        if not self.url or self.url not in self.allowed_urls:
            return Result(
                False,
                retryable=False,
                error=f"webhook URL {self.url!r} is not on WebhookDestination.allowed_urls",
            )
        if not self.secret:
            return Result(False, retryable=False, error="WebhookDestination.secret is not set")
        return post_signed(
            self.url, delivery.body, delivery.delivery_id, self.secret, "application/json"
        )
