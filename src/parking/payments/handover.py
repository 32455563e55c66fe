"""Turning contactless payment on from a page: the trip to the provider and back.

A page opened from a scanned code does not know who the driver is at WeChat. The
trip: the page asks for the provider's sign-in (WeChat 网页授权, ``snsapi_base``),
the provider comes back with a ``code`` (its openid for this appid), the driver
authorises deductions for the plate on the provider's page (the 停车服务 mini
program), and comes back again; then the mandate is stored as ``PUT
/v1/me/contactless/{vehicle_id}`` would store it.

Who started the trip is kept here, in Redis, under a random ``state`` (the OAuth
``state`` parameter): the account, the plate, the provider, the page to return to,
and once known the payer's id. Ten minutes, used once: the ``state`` is what
protects the two public return addresses (a page nobody started, or started for
another account, has no ``state`` here), and nothing personal is in a URL.
"""

from __future__ import annotations

import secrets
from typing import Final

import msgspec
import redis.asyncio as aioredis

from parking.errors import Conflict

#: How long a trip to the provider and back may take.
TTL_S: Final = 600
_PREFIX: Final = "contactless:handover:"


class Handover(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    plate: str
    plate_color: str
    provider: str
    #: the page (a path on the platform) the trip ends on
    return_to: str
    #: the driver's id at the provider, once it said
    payer_id: str | None = None


class HandoverExpired(Conflict):
    """No trip under this ``state``: never started, finished, or older than ten minutes."""


def _key(state: str) -> str:
    return _PREFIX + state


async def begin(redis: aioredis.Redis, handover: Handover) -> str:
    """Record the trip; returns its ``state``."""
    state = secrets.token_urlsafe(24)
    await redis.set(_key(state), msgspec.json.encode(handover), ex=TTL_S, nx=True)
    return state


async def get(redis: aioredis.Redis, state: str) -> Handover:
    raw = await redis.get(_key(state)) if _well_formed(state) else None
    if raw is None:
        raise HandoverExpired("this link has expired: start again from the page")
    return msgspec.json.decode(raw, type=Handover)


async def learned_payer(redis: aioredis.Redis, state: str, payer_id: str) -> Handover:
    """The provider said who the driver is: kept for the last step."""
    handover = msgspec.structs.replace(await get(redis, state), payer_id=payer_id)
    await redis.set(_key(state), msgspec.json.encode(handover), xx=True, keepttl=True)
    return handover


async def finish(redis: aioredis.Redis, state: str) -> Handover:
    """The trip's last step: the record, taken (a second use finds nothing)."""
    raw = await redis.getdel(_key(state)) if _well_formed(state) else None
    if raw is None:
        raise HandoverExpired("this link has expired: start again from the page")
    return msgspec.json.decode(raw, type=Handover)


def _well_formed(state: str) -> bool:
    return 16 <= len(state) <= 64 and all(c.isalnum() or c in "-_" for c in state)
