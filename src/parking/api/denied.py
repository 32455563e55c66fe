"""Refusals of someone else's things (reliability matrix A1): the driver gets a 404, as
if the thing did not exist, and the audit log gets a line, so an account probing
others' bills or plates shows up in review. The same for staff: an operator asking
for another company's lot (or a device, tariff or anomaly in one) gets a 404 and
a ``denied:`` line."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking import audit as audit_log
from parking.accounts import service as accounts
from parking.api.infra import Infra, connection
from parking.auth.model import Principal
from parking.errors import NotFound
from parking.lots import service as lots
from parking.lots.model import (
    Access,
    GroupNotFound,
    LotNotFound,
    PassNotFound,
    TariffNotFound,
    Verdict,
)


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
        if await accounts.held_by_another(conn, plate, actor):
            await audit_denied(conn, actor=actor, action=action, target=f"plate:{plate}", now=now)


async def require_lot(
    infra: Infra,
    conn: asyncpg.Connection,
    who: Principal,
    lot_id: str,
    *,
    access: Access,
    action: str,
    now: datetime,
) -> None:
    """Go on only when ``who`` may act on ``lot_id`` (parking.lots decides): a lot
    that does not exist, or is another company's, is a 404 (the same words for both);
    another company's also gets an audit line, written on a connection of its own so
    that it stays when the caller's transaction rolls back with the 404."""
    verdict = await lots.lot_verdict(conn, who, lot_id, access)
    if verdict is Verdict.FOREIGN:
        await audit_staff_denied(infra, who, action=action, target=f"lot:{lot_id}", now=now)
    if verdict is not Verdict.ALLOWED:
        raise LotNotFound(f"lot {lot_id} does not exist")


async def audit_staff_denied(
    infra: Infra, who: Principal, *, action: str, target: str, now: datetime
) -> None:
    """A staff member asked for another company's thing: a 404 for them, a line for review."""
    async with connection(infra) as own:
        await audit_log.record(
            own,
            at=now,
            actor=who.subject,
            role=who.role.value,
            action=f"denied:{action}",
            target=target,
            details={"company": who.company},
        )


async def require_tariff(
    infra: Infra,
    conn: asyncpg.Connection,
    who: Principal,
    tariff_id: str,
    *,
    access: Access,
    action: str,
    now: datetime,
) -> None:
    """As `require_lot`, for a tariff: another company's, or versioning one of the
    city's, is a 404 with an audit line; a tariff that does not exist is left to the
    pricing service's own 404."""
    verdict = await lots.tariff_verdict(conn, who, tariff_id, access)
    error = TariffNotFound(f"no tariff {tariff_id}")
    target = f"tariff:{tariff_id}"
    await refuse_foreign(infra, who, verdict, error, action=action, target=target, now=now)


async def refuse_foreign(
    infra: Infra,
    who: Principal,
    verdict: Verdict,
    error: NotFound,
    *,
    action: str,
    target: str,
    now: datetime,
) -> None:
    """Another company's thing: audited, then ``error`` (a 404). A thing that does not
    exist is left to the caller's own 404, with its own words."""
    if verdict is Verdict.FOREIGN:
        await audit_staff_denied(infra, who, action=action, target=target, now=now)
        raise error


async def require_lots(
    infra: Infra,
    conn: asyncpg.Connection,
    who: Principal,
    lot_ids: list[str],
    *,
    action: str,
    target: str,
    now: datetime,
) -> None:
    """Several lots changed at once (a lot group): one of another company's is a 404."""
    verdict = await lots.lots_verdict(conn, who, lot_ids, Access.CHANGE)
    error = LotNotFound("a lot of this request does not exist")
    await refuse_foreign(infra, who, verdict, error, action=action, target=target, now=now)


async def require_group(
    infra: Infra,
    conn: asyncpg.Connection,
    who: Principal,
    group_id: str,
    *,
    action: str,
    now: datetime,
) -> None:
    verdict = await lots.group_verdict(conn, who, group_id, Access.CHANGE)
    error = GroupNotFound(f"no lot group {group_id}")
    target = f"lot_group:{group_id}"
    await refuse_foreign(infra, who, verdict, error, action=action, target=target, now=now)


async def require_pass(
    infra: Infra,
    conn: asyncpg.Connection,
    who: Principal,
    pass_id: str,
    *,
    action: str,
    now: datetime,
) -> None:
    verdict = await lots.pass_verdict(conn, who, pass_id, Access.CHANGE)
    error = PassNotFound(f"no live pass {pass_id}")
    target = f"pass:{pass_id}"
    await refuse_foreign(infra, who, verdict, error, action=action, target=target, now=now)
