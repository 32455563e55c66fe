"""Idempotency keys of the driver's payment requests: claim, complete, release, prune.

Steps run in the caller's transaction and never commit.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking.errors import Conflict
from parking.payments import logic, store
from parking.payments.model import (
    IdempotencyKeyReused,
    Proceed,
    Replay,
    StoredResponse,
)
from parking.payments.txn import connection


async def claim_idempotency_key(
    conn: asyncpg.Connection,
    *,
    scope: str,
    key: str,
    endpoint: str,
    request_hash: str,
    now: datetime,
) -> Proceed | Replay:
    """Start a request under an idempotency key (Stripe semantics). Autocommit, no transaction.

    Proceed: the key is new (or was left in flight by a crashed request past
    its lease); run the request, then ``complete_idempotency_key`` or
    ``release_idempotency_key``. Replay: answer the stored response. Raises
    IdempotencyKeyReused (another body) or IdempotencyKeyInFlight.
    The new key's row is committed before this returns, so a concurrent
    retry sees it in flight.
    """
    if await store.insert_idempotency_key(
        conn, scope=scope, key=key, endpoint=endpoint, request_hash=request_hash, now=now
    ):
        return Proceed()
    async with conn.transaction():
        existing = await store.idempotency_key(conn, scope, key, lock=True)
        if existing is None:  # released between our insert and this read: try once more
            if await store.insert_idempotency_key(
                conn, scope=scope, key=key, endpoint=endpoint, request_hash=request_hash, now=now
            ):
                return Proceed()
            raise Conflict(f"idempotency key {key!r} is changing hands; retry")
        if existing.endpoint != endpoint:
            raise IdempotencyKeyReused(f"idempotency key {key!r} was used on {existing.endpoint}")
        decision = logic.claim_decision(existing, request_hash=request_hash, now=now)
        if isinstance(decision, Proceed):
            await store.relock_idempotency_key(conn, scope, key, now)
        return decision


async def complete_idempotency_key(
    conn: asyncpg.Connection, *, scope: str, key: str, response: StoredResponse, now: datetime
) -> None:
    """Store the response every retry with the key will get (2xx, or a 4xx problem)."""
    await store.complete_idempotency_key(
        conn, scope, key, status=response.status, body=response.body, now=now
    )


async def release_idempotency_key(conn: asyncpg.Connection, *, scope: str, key: str) -> None:
    """Forget an in-flight key whose request failed for a passing reason (5xx): retry runs anew."""
    await store.release_idempotency_key(conn, scope, key)


async def prune_idempotency_keys(pool: asyncpg.Pool, *, now: datetime) -> int:
    """Forget completed keys older than IDEMPOTENCY_KEY_TTL; how many were removed."""
    async with connection(pool) as conn:
        return await store.prune_idempotency_keys(
            conn, created_before=now - logic.IDEMPOTENCY_KEY_TTL
        )
