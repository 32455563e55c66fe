"""Lots, their lanes and spaces, and which lots a staff member may act on: every operator
route asks here, nowhere else.

Each function runs in the caller's connection (and transaction, if any) and
writes nothing: the caller answers ``missing`` and ``foreign`` alike (404) and
audits ``foreign`` (parking.api.denied.require_lot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import asyncpg
import msgspec

from parking import audit as audit_log
from parking.auth.model import Principal
from parking.errors import Conflict
from parking.lots import logic, store
from parking.lots.model import (
    Access,
    Company,
    District,
    InvalidLot,
    LaneView,
    Lot,
    LotChange,
    LotNotFound,
    NewLane,
    NewLot,
    NewSpace,
    SpaceView,
    Verdict,
)

lot_filter = logic.lot_filter


async def lot_verdict(
    conn: asyncpg.Connection, who: Principal, lot_id: str, access: Access
) -> Verdict:
    exists, owner = await store.lot_owner(conn, lot_id)
    if not exists:
        return Verdict.MISSING
    return Verdict.ALLOWED if logic.may_act_on_lot(who, owner, access) else Verdict.FOREIGN


async def lots_verdict(
    conn: asyncpg.Connection, who: Principal, lot_ids: list[str], access: Access
) -> Verdict:
    """For several lots at once: ``foreign`` if any is another company's, else ``missing``
    if any does not exist."""
    owners = await store.lot_owners(conn, lot_ids)
    if not all(logic.may_act_on_lot(who, owner, access) for owner in owners.values()):
        return Verdict.FOREIGN
    return Verdict.ALLOWED if len(owners) == len(set(lot_ids)) else Verdict.MISSING


async def group_verdict(
    conn: asyncpg.Connection, who: Principal, group_id: str, access: Access
) -> Verdict:
    """A lot group is the company's whose lots it holds (its lots are checked, since a
    group, and a monthly pass good for it, acts on every one of them)."""
    lots = await store.group_lots(conn, group_id)
    if lots is None:
        return Verdict.MISSING
    return await lots_verdict(conn, who, lots, access)


async def pass_verdict(
    conn: asyncpg.Connection, who: Principal, pass_id: str, access: Access
) -> Verdict:
    group_id = await store.pass_group(conn, pass_id)
    if group_id is None:
        return Verdict.MISSING
    return await group_verdict(conn, who, group_id, access)


async def blacklist_verdict(conn: asyncpg.Connection, who: Principal, plate: str) -> Verdict:
    """May ``who`` change or lift the plate's blacklist entry (``missing``: none)?"""
    listed, owner = await store.blacklist_owner(conn, plate)
    if not listed:
        return Verdict.MISSING
    return Verdict.ALLOWED if logic.may_change_list_entry(who, owner) else Verdict.FOREIGN


async def tariff_verdict(
    conn: asyncpg.Connection, who: Principal, tariff_id: str, access: Access
) -> Verdict:
    exists, owner = await store.tariff_owner(conn, tariff_id)
    if not exists:
        return Verdict.MISSING
    return Verdict.ALLOWED if logic.may_act_on_tariff(who, owner, access) else Verdict.FOREIGN


async def device_lot(conn: asyncpg.Connection, device_id: str) -> str | None:
    """The lot a registered device belongs to (None: no such device)."""
    return await store.device_lot(conn, device_id)


async def own_tariff(conn: asyncpg.Connection, who: Principal, tariff_id: str) -> None:
    """A tariff an operator just created belongs to the operator's company (caller's tx)."""
    if who.company is not None:
        await store.set_tariff_owner(conn, tariff_id, who.company)


async def companies(conn: asyncpg.Connection) -> list[Company]:
    return await store.companies(conn)


async def company_exists(conn: asyncpg.Connection, company_id: str) -> bool:
    return await store.company_exists(conn, company_id)


async def lot_counts(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    """(id, name, number of lots owned) of every company."""
    return await store.lot_counts(conn)


# ------------------------------------------------------------------ lots, lanes, spaces
# Each change runs in the caller's transaction with its audit row; scope checks
# (which lots the caller may act on) are the caller's, before these.


async def list_lots(
    conn: asyncpg.Connection, who: Principal, *, after: str | None, limit: int
) -> list[Lot]:
    """The lots ``who`` may read, by id after ``after``, at most ``limit``."""
    return await store.lots(conn, company=logic.lot_filter(who), after=after, limit=limit)


async def create_lot(conn: asyncpg.Connection, lot: NewLot, *, by: Principal, now: datetime) -> Lot:
    """Add a lot, owned by its creator's company (caller's transaction; audited).
    Raises Conflict (the id exists) or InvalidLot (no such district)."""
    try:
        view = await store.insert_lot(
            conn,
            lot_id=lot.id,
            name=lot.name,
            district_code=lot.district_code,
            kind=lot.kind,
            capacity=lot.capacity,
            latitude=lot.latitude,
            longitude=lot.longitude,
            full_policy=lot.full_policy,
            arrears_hold_after=timedelta(minutes=lot.arrears_hold_after_minutes),
            exit_window_minutes=lot.exit_window_minutes,
            company_id=by.company,
            address=lot.address,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"lot {lot.id} exists") from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise InvalidLot(f"district {lot.district_code} does not exist") from exc
    await audit_log.record_by(
        conn,
        by,
        action="lot.created",
        target=f"lot:{lot.id}",
        details=msgspec.to_builtins(lot),
        now=now,
    )
    return view


async def change_lot(
    conn: asyncpg.Connection, lot_id: str, change: LotChange, *, by: Principal, now: datetime
) -> Lot:
    """Change a lot's policies or capacity (caller's transaction; audited); gateways take
    them up at their next directory refresh. Raises LotNotFound."""
    view = await store.update_lot(
        conn,
        lot_id,
        full_policy=change.full_policy,
        arrears_hold_after=None
        if change.arrears_hold_after_minutes is None
        else timedelta(minutes=change.arrears_hold_after_minutes),
        exit_window_minutes=change.exit_window_minutes,
        capacity=change.capacity,
        address=change.address,
    )
    if view is None:
        raise LotNotFound(f"lot {lot_id} does not exist")
    changes = {k: v for k, v in msgspec.to_builtins(change).items() if v is not None}
    await audit_log.record_by(
        conn, by, action="lot.changed", target=f"lot:{lot_id}", details=changes, now=now
    )
    return view


async def list_lanes(conn: asyncpg.Connection, lot_id: str) -> list[LaneView]:
    return await store.lanes(conn, lot_id)


async def add_lane(
    conn: asyncpg.Connection, lot_id: str, lane: NewLane, *, by: Principal, now: datetime
) -> LaneView:
    """Raises Conflict when the lot has the lane (caller's transaction; audited)."""
    try:
        await store.insert_lane(conn, lot_id, lane.lane_id, lane.direction)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"lane {lane.lane_id} of lot {lot_id} exists") from exc
    await audit_log.record_by(
        conn,
        by,
        action="lane.added",
        target=f"lane:{lot_id}/{lane.lane_id}",
        details={"direction": lane.direction},
        now=now,
    )
    return LaneView(lot_id=lot_id, lane_id=lane.lane_id, direction=lane.direction)


async def list_spaces(
    conn: asyncpg.Connection, lot_id: str, *, after: str | None, limit: int
) -> list[SpaceView]:
    return await store.spaces(conn, lot_id, after=after, limit=limit)


async def add_space(
    conn: asyncpg.Connection, lot_id: str, space: NewSpace, *, by: Principal, now: datetime
) -> SpaceView:
    """Raises Conflict when the lot has the space (caller's transaction; audited)."""
    try:
        await store.insert_space(conn, lot_id, space.space_id, space.kind)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"space {space.space_id} of lot {lot_id} exists") from exc
    await audit_log.record_by(
        conn,
        by,
        action="space.added",
        target=f"space:{lot_id}/{space.space_id}",
        details={"kind": space.kind},
        now=now,
    )
    return SpaceView(lot_id=lot_id, space_id=space.space_id, kind=space.kind)


async def lot_names(conn: asyncpg.Connection, lot_ids: list[str]) -> dict[str, str]:
    """lot id -> name (what a driver's receipt and a plate's bills show)."""
    return await store.names(conn, lot_ids)


async def exit_window(conn: asyncpg.Connection, lot_id: str) -> timedelta | None:
    """How long after paying in the lot its driver may leave without paying more."""
    return await store.exit_window(conn, lot_id)


async def lot_ids_of(conn: asyncpg.Connection, company_id: str) -> list[str]:
    """The ids of a company's lots."""
    return await store.lot_ids_of(conn, company_id)


# ------------------------------------------------------------------ the lot record
# What other packages read about lots: they ask here instead of reading the table.


async def every_lot(conn: asyncpg.Connection) -> list[Lot]:
    """Every lot of the city, by id (the occupancy core's directory load)."""
    return await store.every_lot(conn)


async def lots_by_id(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> list[Lot]:
    """Those of ``lot_ids`` that exist, by id."""
    return await store.lots_by_id(conn, lot_ids)


async def find_lot(conn: asyncpg.Connection, lot_id: str) -> Lot | None:
    found = await store.lots_by_id(conn, [lot_id])
    return found[0] if found else None


async def lot_exists(conn: asyncpg.Connection, lot_id: str) -> bool:
    return await store.exists(conn, lot_id)


async def missing_lots(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> list[str]:
    """Those of ``lot_ids`` that are no lot, in the order given."""
    return await store.missing(conn, lot_ids)


async def owners(conn: asyncpg.Connection) -> dict[str, str]:
    """lot id -> owning company, for every owned lot."""
    return await store.owners(conn)


async def street_lot_ids(conn: asyncpg.Connection) -> list[str]:
    """The on-street lots (their spaces carry sensors)."""
    return await store.ids_of_kind(conn, "on_street")


async def groups_of_lots(conn: asyncpg.Connection) -> dict[str, frozenset[str]]:
    """lot id -> the lot groups (a monthly pass's scope) it belongs to."""
    return await store.groups_of_lots(conn)


async def exit_windows(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> dict[str, timedelta]:
    """lot id -> how long after paying in it its driver may leave, for lots that exist."""
    return await store.exit_windows(conn, lot_ids)


async def any_lot(conn: asyncpg.Connection) -> bool:
    return await store.any_lot(conn)


async def place_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """How many lots, spaces and lanes the city has, and the lots' summed capacity."""
    return await store.place_counts(conn)


async def add_missing(conn: asyncpg.Connection, lots: Sequence[Lot]) -> None:
    """Add the lots not stored yet; give an ownerless stored lot its owner (the seed;
    idempotent, caller's transaction)."""
    await store.add_missing(conn, lots)


async def find_lane(conn: asyncpg.Connection, lot_id: str, lane_id: str) -> LaneView | None:
    return await store.lane(conn, lot_id, lane_id)


async def find_space(conn: asyncpg.Connection, lot_id: str, space_id: str) -> SpaceView | None:
    return await store.space(conn, lot_id, space_id)


async def every_lane(conn: asyncpg.Connection) -> list[LaneView]:
    """Every lane of the city, by lot and lane."""
    return await store.every_lane(conn)


async def spaces_of(conn: asyncpg.Connection, lot_ids: Sequence[str]) -> list[SpaceView]:
    """Every space of ``lot_ids``, by lot and space."""
    return await store.spaces_of(conn, lot_ids)


async def add_missing_lanes(conn: asyncpg.Connection, lanes: Sequence[LaneView]) -> None:
    """Add the lanes not stored yet (the seed; idempotent, caller's transaction)."""
    await store.add_missing_lanes(conn, lanes)


async def add_missing_spaces(
    conn: asyncpg.Connection, spaces: Iterable[tuple[str, str]], *, progress: Callable[[int], None]
) -> None:
    """Add the (lot_id, space_id) standard spaces not stored yet (the seed; idempotent,
    caller's transaction); ``progress`` hears how many were sent so far."""
    await store.add_missing_spaces(conn, spaces, progress=progress)


async def districts(conn: asyncpg.Connection) -> list[District]:
    """Every district of the city, by code."""
    return await store.districts(conn)


def readable_by(who: Principal, lots: Sequence[Lot]) -> list[Lot]:
    """Those of ``lots`` the caller may read (the tenancy rule's filter)."""
    company = logic.lot_filter(who)
    return [lot for lot in lots if company is None or lot.company_id == company]
