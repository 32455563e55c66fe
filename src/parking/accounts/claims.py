"""Plate claims: a driver claims a plate another account holds (with the 行驶证 photo);
an operator approves it (the plate moves, the previous holder's mandates end) or rejects it.
An approval touches both accounts' holdings (``accounts.changes``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from parking.accounts import changes, logic, store
from parking.accounts.model import (
    AccountNotFound,
    ClaimConflict,
    ClaimDecision,
    ClaimNotFound,
    ClaimStatus,
    ClaimView,
    OperatorClaimView,
    PlateAlreadyYours,
    TooManyVehicles,
    verified_by_claim,
)
from parking.accounts.service import RevokesMandates
from parking.auth.model import Principal, Role
from parking.errors import InvalidInput
from parking.ids import new_id
from parking.plates import parse_plate


def _claim_view(row: asyncpg.Record) -> ClaimView:
    return ClaimView(
        id=row["id"],
        plate=row["plate"],
        claimant_account_id=row["claimant_account_id"],
        status=ClaimStatus(row["status"]),
        evidence=row["evidence"],
        photo_ref=row["photo_ref"],
        created_at=row["created_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        decision_note=row["decision_note"],
    )


def _operator_claim_view(row: asyncpg.Record) -> OperatorClaimView:
    return OperatorClaimView(
        id=row["id"],
        plate=row["plate"],
        claimant_account_id=row["claimant_account_id"],
        holder_account_id=row["holder_account_id"],
        status=ClaimStatus(row["status"]),
        evidence=row["evidence"],
        photo_ref=row["photo_ref"],
        created_at=row["created_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        decision_note=row["decision_note"],
    )


async def claim_plate(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    plate_raw: str,
    evidence: str,
    photo_ref: str,
    now: datetime,
) -> ClaimView:
    """Ask staff to move a plate another account holds to this one, or to verify this
    account's own unverified binding, on the 行驶证 number and photo (caller's
    transaction; audited). Approval leaves the plate bound here, verified. One open
    claim per plate and claimant."""
    plate = parse_plate(plate_raw)
    if await store.account(conn, account_id) is None:
        raise AccountNotFound("no such account")
    holder = await store.holder_of(conn, plate.text)
    if holder is None:
        raise ClaimConflict(f"nobody holds {plate.text}: bind it with POST /v1/me/vehicles")
    if holder["account_id"] == account_id and holder["verified_at"] is not None:
        raise PlateAlreadyYours(f"{plate.text} is bound to your account and verified already")
    claim_id = new_id("pc", now)
    try:
        row = await store.insert_claim(
            conn,
            claim_id=claim_id,
            plate=plate.text,
            claimant=account_id,
            holder=holder["account_id"],
            evidence=evidence,
            photo_ref=photo_ref,
            now=now,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ClaimConflict(f"you have an open claim on {plate.text} already") from exc
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role=Role.DRIVER.value,
        action="plate_claim.create",
        target=f"plate:{plate.text}",
        details={"claim": claim_id},
    )
    return _claim_view(row)


async def claims_of(
    conn: asyncpg.Connection, account_id: str, *, after: str | None, limit: int
) -> list[ClaimView]:
    rows = await store.claims(conn, status=None, claimant=account_id, after=after, limit=limit)
    return [_claim_view(r) for r in rows]


async def review_queue(
    conn: asyncpg.Connection, *, status: ClaimStatus | None, after: str | None, limit: int
) -> list[OperatorClaimView]:
    """Claims oldest first (by id), optionally of one status."""
    rows = await store.claims(
        conn,
        status=None if status is None else status.value,
        claimant=None,
        after=after,
        limit=limit,
    )
    return [_operator_claim_view(r) for r in rows]


async def decide_claim(
    conn: asyncpg.Connection,
    *,
    claim_id: str,
    decision: ClaimDecision,
    note: str | None,
    by: Principal,
    now: datetime,
    revoke_mandates: RevokesMandates,
) -> OperatorClaimView:
    """Approve (the plate moves to the claimant) or reject a pending claim (caller's
    transaction; audited). A rejection needs a note the claimant can read. The previous
    holder's mandates for the plate end with an approval (``revoke_mandates``)."""
    if decision is ClaimDecision.REJECT and not note:
        raise InvalidInput("a rejection needs a `note` telling the claimant why")
    row = await store.claim_for_update(conn, claim_id)
    if row is None:
        raise ClaimNotFound(f"no claim {claim_id}")
    status = logic.decide_claim(ClaimStatus(row["status"]), decision)
    details: dict[str, object] = {"claim": claim_id, "claimant": row["claimant_account_id"]}
    if status is ClaimStatus.APPROVED:
        details |= await _move_plate(
            conn, plate=row["plate"], to=row["claimant_account_id"], claim_id=claim_id, now=now
        )
        if isinstance(loser := details.get("from"), str):
            details["mandates_revoked"] = await revoke_mandates(
                conn,
                plate=row["plate"],
                account_id=loser,
                by=by.subject,
                role=by.role.value,
                why=f"lost to claim {claim_id}",
                now=now,
            )
    updated = await store.decide_claim(
        conn, claim_id, status=status.value, by=by.subject, note=note, now=now
    )
    await store.audit(
        conn,
        at=now,
        actor=by.subject,
        role=by.role.value,
        action=f"plate_claim.{decision.value}",
        target=f"plate:{row['plate']}",
        details=details | {"note": note},
    )
    return _operator_claim_view(updated)


async def _move_plate(
    conn: asyncpg.Connection, *, plate: str, to: str, claim_id: str, now: datetime
) -> dict[str, object]:
    # Claimant's account, then the plate: the order bind_vehicle locks in.
    if await store.account(conn, to, lock=True) is None:
        raise AccountNotFound("the claimant's account is gone")
    holder = await store.holder_of(conn, plate)
    changes.touched(conn, to, None if holder is None else holder["account_id"])
    if holder is not None and holder["account_id"] == to:
        await store.mark_verified(conn, holder["id"], verified_by_claim(claim_id), now)
        return {"from": None, "note": "the claimant held the plate already", "verified": True}
    try:
        logic.check_room_for_vehicle(await store.live_vehicle_count(conn, to))
    except TooManyVehicles as exc:
        raise ClaimConflict(
            "the claimant has the most plates an account may bind; they must unbind one first"
        ) from exc
    moved: dict[str, object] = {"from": None}
    if holder is not None:
        await store.release_vehicle(conn, holder["id"], "claimed", now)
        dropped = await store.drop_driver_class_override(conn, plate, holder["account_id"])
        moved = {"from": holder["account_id"], "class_override_dropped": dropped}
    row = await store.insert_vehicle(
        conn, new_id("veh", now), to, plate, now, verified_by=verified_by_claim(claim_id)
    )
    return moved | {"vehicle": row["id"], "verified": True}
