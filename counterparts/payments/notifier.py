"""The delivery loop: settles due deductions/refunds and sends due notifications.

One loop per sandbox process. Each tick claims due deliveries (marking them
in flight in SQLite, so a slow merchant never gets the same attempt twice) and
sends them concurrently; every attempt is signed afresh, because WeChat's
signature timestamp must be within five minutes of the merchant's clock even
on the retry a day later. The body is the same bytes every time.
"""

from __future__ import annotations

import asyncio
from typing import Final

import httpx
import structlog

from counterparts.payments.model import Delivery
from counterparts.payments.service import SandboxPay

log = structlog.get_logger("parking.sandbox_pay")

#: How often the loop looks for due work: small enough that tests with a
#: scaled-down schedule see retries on time, large enough to cost nothing idle.
TICK_S: Final = 0.05
#: WeChat's notifications carry a browser-ish user agent; merchants sometimes filter on it.
_USER_AGENT: Final = "Mozilla/4.0 (sandbox-pay; WeChat Pay notification)"


class Notifier:
    def __init__(self, service: SandboxPay, http: httpx.AsyncClient) -> None:
        self._service = service
        self._http = http
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            try:
                self._service.settle_due()
                for delivery in self._service.claim_due():
                    task = asyncio.create_task(self._send(delivery))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
            except Exception:  # a bad row must not stop every other delivery
                log.exception("delivery tick failed")
            await asyncio.sleep(TICK_S)

    async def stop(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, delivery: Delivery) -> None:
        headers = {
            **self._service.sign(delivery.body),
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
        }
        status, error = 0, ""
        try:
            response = await self._http.post(
                delivery.notify_url,
                content=delivery.body,
                headers=headers,
                timeout=self._service.settings.delivery_timeout,
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        log.info(
            "notification sent",
            notification_id=delivery.id,
            event_type=delivery.event_type,
            out_trade_no=delivery.out_trade_no,
            status=status,
            error=error or None,
        )
        self._service.delivered(delivery, status=status, error=error)
