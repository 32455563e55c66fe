"""轻微首违不罚: what staff found of a reported plate's violation, and what follows (a
reminder to the plate's holder, or a referral for a penalty), recorded per plate."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

import asyncpg

from parking.accounts import service as accounts
from parking.cases import logic, store
from parking.cases.model import Case, Found, Holder, Outcome

if TYPE_CHECKING:
    from parking.cases.service import Notifier

#: the department a violation is referred to for a penalty
PENALTY_DEPARTMENT: Final = Holder(role="department", scope="traffic_police")


async def record(
    conn: asyncpg.Connection,
    notifier: Notifier,
    case: Case,
    found: Found,
    *,
    actor: str,
    now: datetime,
) -> None:
    """轻微首违不罚: a minor violation with no counted one of the plate in the 12 months
    before is a reminder to the plate's (verified) holder, not a penalty; a repeat or a
    serious one is referred to the traffic police; recorded either way."""
    assert case.plate is not None
    earlier = (
        None
        if found is Found.NOT_FOUND
        else await store.earlier_violation(conn, case.plate, before=now, case_id=case.id)
    )
    outcome = logic.violation_outcome(found, repeat=earlier is not None)
    holder = (
        await accounts.account_holding(conn, case.plate) if outcome is Outcome.REMINDER else None
    )
    await store.add_violation(
        conn, plate=case.plate, case_id=case.id, lot_id=case.lot_id, at=now, found=found,
        outcome=outcome, repeat_of=earlier, holder_account_id=holder, by=actor,
    )  # fmt: skip
    await store.add_event(
        conn, case.id, at=now, actor=actor, action="violation", from_state=case.state,
        to_state=case.state, level=case.level, holder=case.holder,
        note=f"{found.value}: {outcome.value}" + (" (a repeat in 12 months)" if earlier else ""),
    )  # fmt: skip
    if outcome is Outcome.REMINDER and holder is not None:
        await notifier.notify(
            conn, case, recipient=f"account:{holder}", kind="reminder",
            message=f"轻微首违不罚：车辆 {case.plate} 在 {case.lot_id} 的违停已记录，"
            "本次不予处罚，请规范停车", now=now,
        )  # fmt: skip
    elif outcome is Outcome.REFERRED:
        why = "a repeat within 12 months" if earlier else "a serious violation"
        await notifier.notify(
            conn, case, recipient=str(PENALTY_DEPARTMENT), kind="penalty_referral",
            message=f"case {case.id}: plate {case.plate} at {case.lot_id}, {why}", now=now,
        )  # fmt: skip
