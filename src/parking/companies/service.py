"""Which lots a staff member may act on: every operator route asks here, nowhere else.

Each function runs in the caller's connection (and transaction, if any) and
writes nothing: the caller answers ``missing`` and ``foreign`` alike (404) and
audits ``foreign`` (parking.api.denied.require_lot).
"""

from __future__ import annotations

import asyncpg

from parking.auth.model import Principal
from parking.companies import logic, store
from parking.companies.model import Access, Company, Verdict

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
