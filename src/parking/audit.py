"""The audit log: who changed what, when, and why (one writer for every package)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Protocol

import asyncpg
import msgspec


async def record(
    conn: asyncpg.Connection,
    *,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    target: str,
    details: dict[str, Any],
) -> None:
    """Append one audit row in the caller's transaction (``audit_append`` makes its
    month's partition first when it is missing, migration 0027)."""
    await conn.execute(
        "SELECT audit_append($1, $2, $3, $4, $5, $6::jsonb)",
        at,
        actor,
        role,
        action,
        target,
        msgspec.json.encode(details).decode(),
    )


class Actor(Protocol):
    """Who acts: a signed-in caller (``parking.auth.model.Principal``)."""

    @property
    def subject(self) -> str: ...

    @property
    def role(self) -> Enum: ...


async def record_by(
    conn: asyncpg.Connection,
    by: Actor,
    *,
    action: str,
    target: str,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Append the audit row of what ``by`` did, in the caller's transaction."""
    await record(
        conn,
        at=now,
        actor=by.subject,
        role=str(by.role.value),
        action=action,
        target=target,
        details=details,
    )
