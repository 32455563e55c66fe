"""Use cases of driver accounts: log in by code, refresh, log out, bind plates, claim plates.

SQL runs in the caller's transaction (the edge owns it). Redis writes (codes,
the denylist) are not transactional with it; each function says what happens
when the transaction it ran in does not commit. A change to an account's
bindings is announced by the edge once committed (``accounts.changes``), so the
API workers' copies of what the account holds drop it.

Tokens: an access token (15 minutes, audience ``changbo-api``) and a refresh
token (audience ``changbo-refresh``, 30 days, within a 90-day login) per
login. Refreshing rotates the refresh token; presenting one that was already
rotated revokes the whole login (a copied token is in use). Logging out
revokes the login and denylists its live access tokens in Redis until they
expire, so a revoked access token stops working at once on the API worker that
revoked it and within 1 s on every other (parking.accounts.denylist), not in
15 minutes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final, Protocol

import asyncpg
import jwt
import redis.asyncio as aioredis

from parking.accounts import changes, denylist, logic, store
from parking.accounts.model import (
    ACCESS_TTL,
    CODE_MAX_ATTEMPTS,
    CODE_TTL,
    REFRESH_AUDIENCE,
    SESSION_TTL,
    AccountNotFound,
    AccountStatus,
    AccountSuspended,
    AccountView,
    Binding,
    ClassOverride,
    CodeRejected,
    CodeSent,
    IssuedTokens,
    PlateAlreadyYours,
    PlateHeld,
    PlateTrust,
    RefreshRejected,
    TooManyVehicles,
    VehicleNotFound,
    VehicleView,
    verified_by_provider,
)
from parking.accounts.notifier import Notifier
from parking.auth import tokens
from parking.auth.model import NotAuthenticated, Role
from parking.errors import InvalidInput
from parking.ids import new_id
from parking.plates import Plate, parse_plate
from parking.vehicles import VehicleClass

# A denylist entry outlives its token by more than the verifier's leeway.
_DENY_MARGIN: Final = timedelta(seconds=30)


def phone_of(raw: str) -> str:
    """The E.164 form of a typed mobile number (`InvalidPhone` if it is none)."""
    return logic.normalise_phone(raw)


# ------------------------------------------------------------------ login


async def send_code(
    redis: aioredis.Redis,
    notifier: Notifier,
    *,
    pepper: bytes,
    phone: str,
    draw: Callable[[int], int] = secrets.randbelow,
) -> CodeSent:
    """Send a fresh code to ``phone`` (E.164), replacing any earlier one.

    Only the code's keyed hash is kept (Redis, CODE_TTL). Not rate limited
    here: the API limits it per phone and per client address.
    """
    code = logic.format_code(draw(10**6))
    await store.put_code(redis, phone, logic.code_digest(pepper, phone, code), CODE_TTL)
    await notifier.send_code(phone, code, CODE_TTL)
    return CodeSent(phone=phone, expires_in=int(CODE_TTL.total_seconds()))


async def log_in(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    key: str,
    pepper: bytes,
    phone: str,
    code: str,
    now: datetime,
) -> IssuedTokens:
    """Exchange a phone's live code for a token pair; the first login creates the account.

    The code is used up in Redis before the caller's transaction commits; if
    that transaction fails, the driver asks for a new code.
    """
    verdict = await store.check_code(
        redis, phone, logic.code_digest(pepper, phone, code), CODE_MAX_ATTEMPTS
    )
    if verdict != "ok":
        raise CodeRejected(
            {
                "wrong": "the code is wrong",
                "used_up": "too many wrong codes: ask for a new one",
            }.get(verdict, "no live code for this phone: ask for a new one")
        )
    account = await store.insert_account_if_absent(conn, new_id("acc", now), phone, now)
    if account["status"] != AccountStatus.ACTIVE:
        raise AccountSuspended("this account is suspended; contact the operator")
    session_id = new_id("as", now)
    await store.insert_session(conn, session_id, account["id"], now, now + SESSION_TTL)
    return await _issue_pair(
        conn,
        key=key,
        account_id=account["id"],
        session_id=session_id,
        session_expires_at=now + SESSION_TTL,
        now=now,
    )


async def _issue_pair(
    conn: asyncpg.Connection,
    *,
    key: str,
    account_id: str,
    session_id: str,
    session_expires_at: datetime,
    now: datetime,
) -> IssuedTokens:
    refresh_expires_at = logic.refresh_expiry(now, session_expires_at)
    access = tokens.issue(key, subject=account_id, role=Role.DRIVER, now=now, ttl=ACCESS_TTL)
    refresh = tokens.issue(
        key,
        subject=account_id,
        role=Role.DRIVER,
        now=now,
        ttl=refresh_expires_at - now,
        audience=REFRESH_AUDIENCE,
    )
    # The JWT ids are drawn by tokens.issue; reading them back through the
    # verifier keeps one code path for what a token means.
    access_jti = tokens.verify(key, access, now=now).token_id
    refresh_jti = tokens.verify(key, refresh, now=now, audience=REFRESH_AUDIENCE).token_id
    await store.insert_refresh_token(
        conn,
        jti=refresh_jti,
        session_id=session_id,
        issued_at=now,
        expires_at=refresh_expires_at,
        access_jti=access_jti,
        access_expires_at=now + ACCESS_TTL,
    )
    return IssuedTokens(
        access_token=access,
        refresh_token=refresh,
        token_type="Bearer",  # noqa: S106 (the OAuth 2 token type, not a secret)
        expires_in=int(ACCESS_TTL.total_seconds()),
        refresh_expires_in=int((refresh_expires_at - now).total_seconds()),
        account_id=account_id,
    )


async def refresh(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    key: str,
    refresh_token: str,
    now: datetime,
) -> IssuedTokens | RefreshRejected:
    """Rotate a refresh token: the next pair, or the rejection to raise.

    A rejection is returned, not raised, because reuse of a rotated token
    revokes the login, and that revocation must commit with the caller's
    transaction before the request fails. Concurrent refreshes of one token
    take turns on its row: one rotates it, the others count as reuse (no grace
    window; a client must not retry a refresh whose answer it lost, it logs in).
    """
    try:
        principal = tokens.verify(key, refresh_token, now=now, audience=REFRESH_AUDIENCE)
    except NotAuthenticated as exc:
        return RefreshRejected(f"refresh token refused: {exc}")
    row = await store.refresh_token_for_update(conn, principal.token_id)
    if row is None or row["account_id"] != principal.subject:
        return RefreshRejected("unknown refresh token")
    verdict = logic.refresh_verdict(
        rotated=row["rotated_at"] is not None,
        session_revoked=row["revoked_at"] is not None,
        expires_at=row["expires_at"],
        session_expires_at=row["session_expires_at"],
        now=now,
    )
    if verdict is logic.RefreshVerdict.REUSED:
        await _revoke_session(conn, redis, row["session_id"], "reuse", now)
        return RefreshRejected(
            "this refresh token was used before: the login is revoked; log in again"
        )
    if verdict is not logic.RefreshVerdict.OK:
        return RefreshRejected(f"refresh token {verdict.value}: log in again")
    if row["account_status"] != AccountStatus.ACTIVE:
        return RefreshRejected("this account is suspended; contact the operator")
    await store.mark_rotated(conn, principal.token_id, now)
    return await _issue_pair(
        conn,
        key=key,
        account_id=row["account_id"],
        session_id=row["session_id"],
        session_expires_at=row["session_expires_at"],
        now=now,
    )


async def _revoke_session(
    conn: asyncpg.Connection, redis: aioredis.Redis, session_id: str, reason: str, now: datetime
) -> None:
    live = await store.live_access_tokens(conn, session_id, now)
    # Denylist first: if the transaction then fails, the tokens are refused a
    # little early, never honoured after a revocation that was acknowledged.
    await _deny(redis, [(jti, exp - now + _DENY_MARGIN) for jti, exp in live], now=now)
    await store.revoke_session(conn, session_id, reason, now)


async def log_out(
    conn: asyncpg.Connection, redis: aioredis.Redis, *, access_token: str, now: datetime
) -> None:
    """Revoke the login the (already verified) access token belongs to.

    Its refresh tokens stop working and its live access tokens, this one
    included, are denylisted until they expire. A token from
    ``parking tokens issue`` has no login; it is denylisted alone.
    """
    # The middleware verified this token; only its id and expiry are read here.
    claims = jwt.decode(access_token, options={"verify_signature": False})
    jti = str(claims["jti"])
    expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
    await _deny(redis, [(jti, expires_at - now + _DENY_MARGIN)], now=now)
    session_id = await store.session_of_access(conn, jti)
    if session_id is not None:
        await _revoke_session(conn, redis, session_id, "logout", now)


async def _deny(
    redis: aioredis.Redis, entries: list[tuple[str, timedelta]], *, now: datetime
) -> None:
    """Denylist in this worker's copy at once, then in Redis for every worker."""
    mirror = denylist.mirror_of(redis)
    if mirror is not None:
        at = now.timestamp()
        mirror.note((jti, at + ttl.total_seconds()) for jti, ttl in entries)
    await store.deny(redis, entries, now=now)


async def access_denied(redis: aioredis.Redis, jti: str) -> bool:
    """Whether an access token was revoked (logout, reuse) before its expiry.

    Answered by this worker's copy of the denylist while it is current (at
    most 1 s behind Redis, see parking.accounts.denylist), otherwise by Redis:
    raises RedisError when Redis cannot answer, so the caller can refuse.
    """
    mirror = denylist.mirror_of(redis)
    if mirror is not None:
        verdict = mirror.verdict(jti)
        if verdict is not None:
            return verdict
    return await store.is_denied(redis, jti)


async def revoke_access(
    redis: aioredis.Redis, *, jti: str, expires_at: datetime, now: datetime
) -> None:
    """Denylist one access token until it would have expired anyway (a staff token
    revoked by ``parking tokens revoke``). Every API worker refuses it within 1 s
    (parking.accounts.denylist); idempotent; raises RedisError when not recorded."""
    await _deny(redis, [(jti, expires_at - now + _DENY_MARGIN)], now=now)


# ------------------------------------------------------------------ account


async def close_account(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    account_id: str,
    *,
    access_token: str,
    now: datetime,
) -> int:
    """The driver deletes their account (caller's transaction; audited): every login
    revoked (the presented token too), then the account pseudonymised, its phone gone;
    it stays as the party of its financial records. Release the plates first
    (``unbind_vehicle``). Returns the logins revoked; AccountNotFound when it is gone."""
    row = await store.account(conn, account_id, lock=True)
    if row is None or row["status"] == AccountStatus.DELETED:
        raise AccountNotFound("no such account")
    claims = jwt.decode(access_token, options={"verify_signature": False})
    expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
    await _deny(redis, [(str(claims["jti"]), expires_at - now + _DENY_MARGIN)], now=now)
    logins = await store.live_sessions_of(conn, account_id)
    for session_id in logins:
        await _revoke_session(conn, redis, session_id, "account_deleted", now)
    await store.pseudonymise(conn, account_id, now)
    changes.touched(conn, account_id)
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role=Role.DRIVER.value,
        action="account.delete",
        target=f"account:{account_id}",
        details={"logins_revoked": len(logins)},
    )
    return len(logins)


async def account_view(conn: asyncpg.Connection, account_id: str) -> AccountView:
    row = await store.account(conn, account_id)
    if row is None:
        raise AccountNotFound("no such account")
    return AccountView(
        id=row["id"],
        phone=row["phone"],
        status=AccountStatus(row["status"]),
        created_at=row["created_at"],
        vehicles=await store.live_vehicle_count(conn, account_id),
    )


async def account_id_of_phone(conn: asyncpg.Connection, phone: str) -> str | None:
    row = await store.account_by_phone(conn, phone)
    return None if row is None else str(row["id"])


# ------------------------------------------------------------------ vehicles


def _vehicle_view(plate: Plate, override: ClassOverride | None, row: asyncpg.Record) -> VehicleView:
    vehicle_class, source = logic.billing_class(plate, override)
    verified_at: datetime | None = row["verified_at"]
    return VehicleView(
        id=row["id"],
        plate=plate.text,
        kind=plate.kind.value,
        colour=plate.colour.value,
        is_new_energy=plate.is_new_energy,
        vehicle_class=int(vehicle_class),
        class_label=vehicle_class.label,
        class_source=source,
        bound_at=row["bound_at"],
        trust=PlateTrust.UNVERIFIED if verified_at is None else PlateTrust.VERIFIED,
        verified_at=verified_at,
    )


async def vehicles(
    conn: asyncpg.Connection, account_id: str, *, after: str | None, limit: int
) -> list[VehicleView]:
    """The account's bound plates in plate order, after ``after`` (a plate)."""
    rows = await store.vehicles_of(conn, account_id, after=after, limit=limit)
    overrides = await store.class_overrides(conn, [r["plate"] for r in rows])
    return [_vehicle_view(parse_plate(r["plate"]), overrides.get(r["plate"]), r) for r in rows]


async def my_plates(
    conn: asyncpg.Connection, account_id: str, *, plate: str | None = None, verified: bool = True
) -> list[Binding]:
    """The one answer to "is this plate mine": the account's live bindings (of ``plate`` only
    when given), only the verified ones unless ``verified=False``.

    Every route that shows or acts on a plate as its holder's asks here. A
    binding is typed in by anyone, so acting on the plate (contactless, a
    space claim) needs a binding; seeing where the car is and was (current
    session, history, arrears, receipts with times) needs a verified one, and
    then only from ``Binding.bound_at`` on.
    """
    return [
        Binding(plate=r["plate"], bound_at=r["bound_at"], verified_at=r["verified_at"])
        for r in await store.bindings(conn, account_id, plate)
        if r["verified_at"] is not None or not verified
    ]


async def confirm_plate(
    conn: asyncpg.Connection, *, account_id: str, plate: str, provider: str, now: datetime
) -> bool:
    """A payment provider confirmed the account's payer holds the plate (the contactless
    mandate's plate authorisation): the binding becomes verified. Caller's transaction;
    audited; False when there is no live binding or it was verified already."""
    holder = await store.holder_of(conn, plate)
    if holder is None or holder["account_id"] != account_id:
        return False
    row = await store.mark_verified(conn, holder["id"], verified_by_provider(provider), now)
    if row is None:
        return False
    changes.touched(conn, account_id)
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role=Role.DRIVER.value,
        action="vehicle.verify",
        target=f"plate:{plate}",
        details={"vehicle": holder["id"], "by": verified_by_provider(provider)},
    )
    return True


#: where a plate held by another account is claimed (the plate goes in the body)
CLAIM_ROUTE: Final = "/v1/me/plate-claims"


async def plate_of_vehicle(
    conn: asyncpg.Connection, account_id: str, vehicle_id: str
) -> str | None:
    """The plate of the account's live binding ``vehicle_id`` (routes name a binding by its
    id, never by its plate); None when it is not the account's or was released."""
    row = await store.vehicle_of(conn, account_id, vehicle_id)
    return None if row is None else str(row["plate"])


async def vehicle_of_another(conn: asyncpg.Connection, account_id: str, vehicle_id: str) -> bool:
    """Whether another account holds or held the binding ``vehicle_id`` (a driver naming
    another's is audited; their own, released, is not someone else's car)."""
    return await store.vehicle_of_another(conn, account_id, vehicle_id)


async def bind_vehicle(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    plate_raw: str,
    vehicle_class: int | None,
    reason: str | None,
    now: datetime,
) -> VehicleView:
    """Bind a plate to the account (caller's transaction; audited).

    A plate another account holds is a `PlateHeld` naming the claim route. A
    declared class must be at or above the plate's default (see
    logic.check_driver_override) and is stored as the plate's class override.
    """
    plate = parse_plate(plate_raw)
    if (vehicle_class is None) != (reason is None):
        raise InvalidInput("`vehicle_class` and `reason` go together")
    # Account first, then the plate: approve_claim locks in the same order.
    if await store.account(conn, account_id, lock=True) is None:
        raise AccountNotFound("no such account")
    holder = await store.holder_of(conn, plate.text)
    if holder is not None:
        if holder["account_id"] == account_id:
            raise PlateAlreadyYours(f"{plate.text} is bound to your account already")
        raise _plate_held(plate.text)
    logic.check_room_for_vehicle(await store.live_vehicle_count(conn, account_id))
    override = await store.class_override(conn, plate.text)
    if vehicle_class is not None:
        logic.check_driver_override(plate, VehicleClass(vehicle_class), override)
    try:
        row = await store.insert_vehicle(conn, new_id("veh", now), account_id, plate.text, now)
    except asyncpg.UniqueViolationError as exc:
        raise _plate_held(plate.text) from exc
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name == "vehicles_per_account_limit":
            raise TooManyVehicles(str(exc.message)) from exc
        raise
    changes.touched(conn, account_id)
    details: dict[str, object] = {"vehicle": row["id"]}
    if vehicle_class is not None and reason is not None:
        await store.put_class_override(conn, plate.text, vehicle_class, reason, account_id, now)
        override = ClassOverride(vehicle_class=vehicle_class, set_by=account_id)
        details |= {"vehicle_class": vehicle_class, "reason": reason}
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role=Role.DRIVER.value,
        action="vehicle.bind",
        target=f"plate:{plate.text}",
        details=details,
    )
    return _vehicle_view(plate, override, row)


def _plate_held(plate: str) -> PlateHeld:
    return PlateHeld(
        f"{plate} is bound to another account. If it is your vehicle, claim it: "
        f"POST {CLAIM_ROUTE} with the plate, the registration certificate (行驶证) number "
        "as evidence and the reference of its uploaded photo; an operator checks them and "
        "moves the plate to you, verified. The holder can also "
        "unbind it, after which you can bind it directly."
    )


class RevokesMandates(Protocol):
    """Ends an account's contactless mandates for a plate it stops holding, in the
    caller's transaction (``parking.payments.contactless.revoke_mandates_of``).

    Passed in by the caller because payments sits above accounts (who holds a plate
    pays its bills): accounts decides that the holder changes, payments owns mandates.
    """

    async def __call__(
        self,
        conn: asyncpg.Connection,
        *,
        plate: str,
        account_id: str,
        by: str,
        role: str,
        why: str,
        now: datetime,
    ) -> list[str]: ...


async def unbind_vehicle(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    vehicle_id: str,
    now: datetime,
    revoke_mandates: RevokesMandates,
) -> None:
    """Release the account's binding ``vehicle_id`` (caller's transaction; audited).

    A class the driver declared goes with the binding; staff's stays; the account's
    mandates for the plate end with it (``revoke_mandates``).
    """
    holder = await store.vehicle_of(conn, account_id, vehicle_id, lock=True)
    if holder is None:
        raise VehicleNotFound(f"vehicle {vehicle_id} is not bound to your account")
    plate = parse_plate(holder["plate"])
    await store.release_vehicle(conn, holder["id"], "unbound", now)
    changes.touched(conn, account_id)
    dropped = await store.drop_driver_class_override(conn, plate.text, account_id)
    revoked = await revoke_mandates(
        conn,
        plate=plate.text,
        account_id=account_id,
        by=account_id,
        role=Role.DRIVER.value,
        why="unbound",
        now=now,
    )
    await store.audit(
        conn,
        at=now,
        actor=account_id,
        role=Role.DRIVER.value,
        action="vehicle.unbind",
        target=f"plate:{plate.text}",
        details={
            "vehicle": holder["id"],
            "class_override_dropped": dropped,
            "mandates_revoked": revoked,
        },
    )


__all__ = [
    "access_denied",
    "account_id_of_phone",
    "account_view",
    "bind_vehicle",
    "confirm_plate",
    "log_in",
    "log_out",
    "my_plates",
    "phone_of",
    "plate_of_vehicle",
    "refresh",
    "send_code",
    "unbind_vehicle",
    "vehicles",
]


async def account_holding(conn: asyncpg.Connection, plate: str) -> str | None:
    """The account a plate's stay is billed to: its verified holder now, if any (no lock:
    for billing, not for moves). An unverified binder is billed nothing, so a bill
    never tells them when the car left (the plate's arrears follow the plate anyway)."""
    return await store.verified_holder(conn, plate)


async def held_by_another(conn: asyncpg.Connection, plate: str, account_id: str) -> bool:
    """Whether another account holds the plate now (verified or not): a driver naming it
    is probing someone else's car (audited)."""
    return await store.held_by_another(conn, plate, account_id)
