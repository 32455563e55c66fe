"""How login codes reach a driver's phone: a port, and the local stack's adapter.

Production plugs in an SMS gateway (Aliyun SMS, Tencent Cloud SMS) behind the
same port; the local adapter is the only one that ever keeps a code in clear.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

import redis.asyncio as aioredis
import structlog

from parking.accounts import store

log = structlog.get_logger("parking.accounts.notifier")


class Notifier(Protocol):
    async def send_code(self, phone: str, code: str, expires_in: timedelta) -> None:
        """Deliver ``code`` to ``phone``; raising means it was not sent."""
        ...


class LocalNotifier:
    """The local stack's SMS gateway: the code goes to the log, and to Redis for
    ``parking drivers otp --phone P`` until it expires."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def send_code(self, phone: str, code: str, expires_in: timedelta) -> None:
        await store.put_outbox(self._redis, phone, code, expires_in)
        log.info("login code (local notifier)", phone=phone, code=code, expires_in=expires_in)


async def latest_code(redis: aioredis.Redis, phone: str) -> str | None:
    """The code the local notifier last sent to ``phone``, while it is live (sent,
    not expired, not used and not used up by wrong guesses)."""
    if not await store.code_pending(redis, phone):
        return None
    return await store.outbox(redis, phone)
