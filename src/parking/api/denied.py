"""Refusals of someone else's things (reliability matrix A1): the driver gets a 404, as
if the thing did not exist, and the audit log gets a line, so an account probing
others' bills or plates shows up in review."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking import audit as audit_log
from parking.api.infra import Infra, connection


async def audit_denied(
    conn: asyncpg.Connection, *, actor: str, action: str, target: str, now: datetime
) -> None:
    """A driver asked for something that is not theirs: they get a 404, the log gets a line."""
    await audit_log.record(
        conn, at=now, actor=actor, role="driver", action=action, target=target, details={}
    )


async def audit_if_held_by_another(
    infra: Infra, *, actor: str, action: str, plate: str, now: datetime
) -> None:
    """A driver named a plate that is not theirs: audited when another account holds
    it (an attempt on someone else's car); a plate nobody holds is just a 404."""
    async with connection(infra) as conn:
        other = await conn.fetchval(
            "SELECT true FROM vehicles WHERE plate = $1 AND released_at IS NULL "
            "AND account_id <> $2",
            plate,
            actor,
        )
        if other:
            await audit_denied(conn, actor=actor, action=action, target=f"plate:{plate}", now=now)
