"""The audit log: who changed what, when, and why (one writer for every package)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    """Append one audit row in the caller's transaction."""
    await conn.execute(
        "INSERT INTO audit_log (at, actor, role, action, target, details) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        at,
        actor,
        role,
        action,
        target,
        msgspec.json.encode(details).decode(),
    )
