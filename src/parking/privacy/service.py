"""A driver's own data (PIPL): a copy to take away (the account, its plates, its stays
with their fees and bills, its contactless mandates and its 码上反映 reports, in one
JSON document), and the account's deletion. The caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec
import redis.asyncio as aioredis

from parking.accounts import service as accounts
from parking.cases import service as cases
from parking.payments import contactless
from parking.sessions import service as sessions

#: the most of each kind one export carries (a driver of 20 years parks less)
EXPORT_LIMIT: Final = 10_000


class MyData(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the platform holds about one driver, as they see it."""

    exported_at: datetime
    account: dict[str, Any]
    vehicles: list[dict[str, Any]]
    stays: list[dict[str, Any]]
    contactless: list[dict[str, Any]]
    reports: list[dict[str, Any]]


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value, builtin_types=(datetime,))


async def export(conn: asyncpg.Connection, account_id: str, *, now: datetime) -> MyData:
    """The driver's data (raises AccountNotFound for an unknown account)."""
    account = await accounts.account_view(conn, account_id)
    vehicles = await accounts.vehicles(conn, account_id, after=None, limit=EXPORT_LIMIT)
    stays = await sessions.history(conn, account_id, before=None, limit=EXPORT_LIMIT)
    return MyData(
        exported_at=now,
        account=_plain(account),
        vehicles=[_plain(v) for v in vehicles],
        stays=[{k: v for k, v in dict(r).items() if k != "at"} for r in stays],
        contactless=[_plain(m) for m in await contactless.mandates_of_account(conn, account_id)],
        reports=[_plain(r) for r in await cases.my_reports(conn, account_id, limit=EXPORT_LIMIT)],
    )


async def delete_account(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    account_id: str,
    *,
    access_token: str,
    now: datetime,
) -> Deleted:
    """The driver deletes their account (the caller's transaction): every plate released
    (its contactless mandates revoked with it), every login revoked, the account
    pseudonymised. Bills, payments and the ledger stay as financial records of the
    pseudonymous account; a bill still open is still owed by its plate."""
    released = []
    for vehicle in await accounts.vehicles(conn, account_id, after=None, limit=EXPORT_LIMIT):
        await accounts.unbind_vehicle(
            conn,
            account_id=account_id,
            vehicle_id=vehicle.id,
            now=now,
            revoke_mandates=contactless.revoke_mandates_of,
        )
        released.append(vehicle.plate)
    logins = await accounts.close_account(
        conn, redis, account_id, access_token=access_token, now=now
    )
    return Deleted(plates_released=len(released), logins_revoked=logins)


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    plates_released: int
    logins_revoked: int
