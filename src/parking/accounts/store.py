"""Accounts in PostgreSQL; one-time code digests and the denylist in Redis.

Access only, no decisions. SQL functions run in the caller's transaction.
Every Redis call touches one key (Redis Cluster safe).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import asyncpg
import redis.asyncio as aioredis

from parking.accounts.model import ClassOverride
from parking.audit import record

# ------------------------------------------------------------------ Redis: codes


def _code_key(phone: str) -> str:
    return f"otp:code:{phone}"


def _denied_key(jti: str) -> str:
    return f"auth:denied:{jti}"


# Checks and counts in one step, so concurrent guesses through several API
# workers cannot share one attempt: a right code is deleted (used once), a
# wrong one counts, and the last allowed wrong one deletes the code.
# Lua's == stops at the first differing byte, which is safe here: both sides
# are HMACs under a key the guesser does not have, so how many leading bytes
# of two digests agree says nothing about the code.
_VERIFY_CODE: Final = """
local stored = redis.call('HGET', KEYS[1], 'digest')
if not stored then return 'missing' end
if stored == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 'ok'
end
local tries = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if tries >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 'used_up'
end
return 'wrong'
"""


async def put_code(redis: aioredis.Redis, phone: str, digest: str, ttl: timedelta) -> None:
    """Store a code's digest, replacing the phone's previous code and its attempt count."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(_code_key(phone))
        pipe.hset(_code_key(phone), mapping={"digest": digest, "attempts": 0})
        pipe.pexpire(_code_key(phone), int(ttl.total_seconds() * 1000))
        await pipe.execute()


async def check_code(redis: aioredis.Redis, phone: str, digest: str, max_attempts: int) -> str:
    """'ok', 'wrong', 'used_up' or 'missing' (never sent, expired or used)."""
    script = redis.register_script(_VERIFY_CODE)
    reply = await script(keys=[_code_key(phone)], args=[digest, max_attempts])
    return reply.decode() if isinstance(reply, bytes) else str(reply)


async def code_pending(redis: aioredis.Redis, phone: str) -> bool:
    return bool(await redis.exists(_code_key(phone)))


# ------------------------------------------------------------------ Redis: denylist

#: Every live denylist entry (member: token id, score: expiry in epoch ms), so a
#: worker can load the whole denylist without scanning the keyspace.
DENYLIST_INDEX: Final = "auth:denylist"
#: Each new entry is published here as ``<expiry ms>:<token id>``
#: (parking.accounts.denylist keeps a per-worker copy from it).
DENYLIST_CHANNEL: Final = "auth:denylist"


async def deny(
    redis: aioredis.Redis, entries: list[tuple[str, timedelta]], *, now: datetime
) -> None:
    """Denylist access tokens by JWT id, each until it would have expired anyway.

    Each entry is written to its own key, then to the index, then published, in
    that order on one connection: once this returns, a worker that loads the
    index or reads the channel sees every entry (see parking.accounts.denylist).
    Raises RedisError if any step failed (then some entries may be written and
    not yet published: the caller reports failure, and a retry publishes again).
    """
    live = [(jti, ttl) for jti, ttl in entries if ttl > timedelta(0)]
    if not live:
        return
    now_ms = int(now.timestamp() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for jti, ttl in live:
            pipe.set(_denied_key(jti), 1, px=max(1, int(ttl.total_seconds() * 1000)))
        pipe.zadd(
            DENYLIST_INDEX,
            {jti: now_ms + int(ttl.total_seconds() * 1000) for jti, ttl in live},
        )
        # Expired entries leave the index whenever a new one comes in.
        pipe.zremrangebyscore(DENYLIST_INDEX, "-inf", f"({now_ms}")
        for jti, ttl in live:
            pipe.publish(DENYLIST_CHANNEL, f"{now_ms + int(ttl.total_seconds() * 1000)}:{jti}")
        await pipe.execute()


async def denied_entries(redis: aioredis.Redis, *, now: datetime) -> list[tuple[str, int]]:
    """Every denylist entry that has not expired: (token id, expiry in epoch ms)."""
    rows = await redis.zrangebyscore(
        DENYLIST_INDEX, int(now.timestamp() * 1000), "+inf", withscores=True
    )
    # withscores: (member, score) pairs (tuples under RESP2, lists under RESP3)
    return [(_text(row[0]), int(row[1])) for row in rows]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def is_denied(redis: aioredis.Redis, jti: str) -> bool:
    return bool(await redis.exists(_denied_key(jti)))


# ------------------------------------------------------------------ accounts


async def insert_account_if_absent(
    conn: asyncpg.Connection, account_id: str, phone: str, now: datetime
) -> asyncpg.Record:
    """The phone's account (id, phone, status, created_at), created if it has none."""
    row = await conn.fetchrow(
        """INSERT INTO accounts (id, phone, created_at) VALUES ($1, $2, $3)
           ON CONFLICT (phone) DO NOTHING
           RETURNING id, phone, status, created_at""",
        account_id,
        phone,
        now,
    )
    if row is None:
        row = await conn.fetchrow(
            "SELECT id, phone, status, created_at FROM accounts WHERE phone = $1", phone
        )
    assert row is not None
    return row


async def account(
    conn: asyncpg.Connection, account_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = "SELECT id, phone, status, created_at FROM accounts WHERE id = $1"
    return await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), account_id)


async def live_sessions_of(conn: asyncpg.Connection, account_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT id FROM auth_sessions WHERE account_id = $1 AND revoked_at IS NULL", account_id
    )
    return [r["id"] for r in rows]


async def pseudonymise(conn: asyncpg.Connection, account_id: str, now: datetime) -> None:
    """The account without its phone: what remains names nobody."""
    await conn.execute(
        "UPDATE accounts SET status = 'deleted', phone = NULL, deleted_at = $2 WHERE id = $1",
        account_id,
        now,
    )


async def account_by_phone(conn: asyncpg.Connection, phone: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, phone, status, created_at FROM accounts WHERE phone = $1", phone
    )


# ------------------------------------------------------------------ sessions and tokens


async def insert_session(
    conn: asyncpg.Connection, session_id: str, account_id: str, now: datetime, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO auth_sessions (id, account_id, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4)",
        session_id,
        account_id,
        now,
        expires_at,
    )


async def insert_refresh_token(
    conn: asyncpg.Connection,
    *,
    jti: str,
    session_id: str,
    issued_at: datetime,
    expires_at: datetime,
    access_jti: str,
    access_expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO refresh_tokens
               (jti, session_id, issued_at, expires_at, access_jti, access_expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        jti,
        session_id,
        issued_at,
        expires_at,
        access_jti,
        access_expires_at,
    )


async def refresh_token_for_update(conn: asyncpg.Connection, jti: str) -> asyncpg.Record | None:
    """The token with its session and account, locked: concurrent refreshes of one
    token take turns, so exactly one of them rotates it."""
    return await conn.fetchrow(
        """SELECT t.jti, t.session_id, t.expires_at, t.rotated_at,
                  s.account_id, s.expires_at AS session_expires_at, s.revoked_at,
                  a.status AS account_status
           FROM refresh_tokens t
           JOIN auth_sessions s ON s.id = t.session_id
           JOIN accounts a ON a.id = s.account_id
           WHERE t.jti = $1
           FOR UPDATE OF t""",
        jti,
    )


async def mark_rotated(conn: asyncpg.Connection, jti: str, now: datetime) -> None:
    await conn.execute("UPDATE refresh_tokens SET rotated_at = $2 WHERE jti = $1", jti, now)


async def session_of_access(conn: asyncpg.Connection, access_jti: str) -> str | None:
    value = await conn.fetchval(
        "SELECT session_id FROM refresh_tokens WHERE access_jti = $1", access_jti
    )
    return None if value is None else str(value)


async def revoke_session(
    conn: asyncpg.Connection, session_id: str, reason: str, now: datetime
) -> None:
    await conn.execute(
        """UPDATE auth_sessions SET revoked_at = $3, revoked_reason = $2
           WHERE id = $1 AND revoked_at IS NULL""",
        session_id,
        reason,
        now,
    )


async def live_access_tokens(
    conn: asyncpg.Connection, session_id: str, now: datetime
) -> list[tuple[str, datetime]]:
    rows = await conn.fetch(
        """SELECT access_jti, access_expires_at FROM refresh_tokens
           WHERE session_id = $1 AND access_expires_at > $2""",
        session_id,
        now,
    )
    return [(r["access_jti"], r["access_expires_at"]) for r in rows]


# ------------------------------------------------------------------ vehicles


_VEHICLE_COLUMNS: Final = "id, account_id, plate, bound_at, verified_at, verified_by"


async def live_vehicle_count(conn: asyncpg.Connection, account_id: str) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM vehicles WHERE account_id = $1 AND released_at IS NULL", account_id
    )
    return int(value or 0)


async def verified_holder(conn: asyncpg.Connection, plate: str) -> str | None:
    account: str | None = await conn.fetchval(
        "SELECT account_id FROM vehicles "
        "WHERE plate = $1 AND released_at IS NULL AND verified_at IS NOT NULL",
        plate,
    )
    return account


async def bindings(
    conn: asyncpg.Connection, account_id: str, plate: str | None
) -> list[asyncpg.Record]:
    """The account's live bindings (plate, bound_at, verified_at), or its binding of ``plate``."""
    return await conn.fetch(
        """SELECT plate, bound_at, verified_at FROM vehicles
           WHERE account_id = $1 AND released_at IS NULL AND ($2::text IS NULL OR plate = $2)
           ORDER BY plate""",
        account_id,
        plate,
    )


async def mark_verified(
    conn: asyncpg.Connection, vehicle_id: str, by: str, now: datetime
) -> asyncpg.Record | None:
    """Verify a live binding (None if it was verified already or is released)."""
    return await conn.fetchrow(
        f"""UPDATE vehicles SET verified_at = $3, verified_by = $2
            WHERE id = $1 AND released_at IS NULL AND verified_at IS NULL
            RETURNING {_VEHICLE_COLUMNS}""",  # noqa: S608 (constant columns)
        vehicle_id,
        by,
        now,
    )


async def holder_of(conn: asyncpg.Connection, plate: str) -> asyncpg.Record | None:
    """The plate's live binding, locked."""
    return await conn.fetchrow(
        f"""SELECT {_VEHICLE_COLUMNS} FROM vehicles
            WHERE plate = $1 AND released_at IS NULL FOR UPDATE""",  # noqa: S608 (constant columns)
        plate,
    )


async def vehicle_of(
    conn: asyncpg.Connection, account_id: str, vehicle_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    """The account's live binding ``vehicle_id`` (None when it is not theirs or was
    released), locked when ``lock`` (the caller's transaction changes it)."""
    return await conn.fetchrow(
        f"""SELECT {_VEHICLE_COLUMNS} FROM vehicles
            WHERE id = $1 AND account_id = $2 AND released_at IS NULL
            {"FOR UPDATE" if lock else ""}""",  # noqa: S608 (constant columns and clause)
        vehicle_id,
        account_id,
    )


async def vehicle_of_another(conn: asyncpg.Connection, account_id: str, vehicle_id: str) -> bool:
    """Whether a binding of this id was ever made by an account other than ``account_id``."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM vehicles WHERE id = $1 AND account_id <> $2)",
            vehicle_id,
            account_id,
        )
    )


async def vehicles_of(
    conn: asyncpg.Connection, account_id: str, *, after: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_VEHICLE_COLUMNS} FROM vehicles
            WHERE account_id = $1 AND released_at IS NULL AND ($2::text IS NULL OR plate > $2)
            ORDER BY plate LIMIT $3""",  # noqa: S608
        account_id,
        after,
        limit,
    )


async def insert_vehicle(
    conn: asyncpg.Connection,
    vehicle_id: str,
    account_id: str,
    plate: str,
    now: datetime,
    *,
    verified_by: str | None = None,
) -> asyncpg.Record:
    """Raises UniqueViolationError (vehicles_one_holder_per_plate) or CheckViolationError
    (vehicles_per_account_limit) when the database refuses the binding."""
    row = await conn.fetchrow(
        f"""INSERT INTO vehicles (id, account_id, plate, bound_at, verified_at, verified_by)
            VALUES ($1, $2, $3, $4::timestamptz,
                    CASE WHEN $5::text IS NULL THEN NULL ELSE $4::timestamptz END, $5)
            RETURNING {_VEHICLE_COLUMNS}""",  # noqa: S608
        vehicle_id,
        account_id,
        plate,
        now,
        verified_by,
    )
    assert row is not None
    return row


async def release_vehicle(
    conn: asyncpg.Connection, vehicle_id: str, reason: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE vehicles SET released_at = $2, released_reason = $3 WHERE id = $1",
        vehicle_id,
        now,
        reason,
    )


async def class_override(conn: asyncpg.Connection, plate: str) -> ClassOverride | None:
    row = await conn.fetchrow(
        "SELECT vehicle_class, set_by FROM vehicle_class_overrides WHERE plate = $1", plate
    )
    if row is None:
        return None
    return ClassOverride(vehicle_class=row["vehicle_class"], set_by=row["set_by"])


async def class_overrides(conn: asyncpg.Connection, plates: list[str]) -> dict[str, ClassOverride]:
    rows = await conn.fetch(
        "SELECT plate, vehicle_class, set_by FROM vehicle_class_overrides "
        "WHERE plate = ANY($1::text[])",
        plates,
    )
    return {
        r["plate"]: ClassOverride(vehicle_class=r["vehicle_class"], set_by=r["set_by"])
        for r in rows
    }


async def drop_driver_class_override(conn: asyncpg.Connection, plate: str, set_by: str) -> bool:
    """Remove the plate's override if ``set_by`` (an account) declared it."""
    return bool(
        await conn.fetchval(
            "DELETE FROM vehicle_class_overrides WHERE plate = $1 AND set_by = $2 RETURNING 1",
            plate,
            set_by,
        )
    )


async def put_class_override(
    conn: asyncpg.Connection, plate: str, vehicle_class: int, reason: str, by: str, now: datetime
) -> None:
    await conn.execute(
        """INSERT INTO vehicle_class_overrides (plate, vehicle_class, reason, set_by, set_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (plate) DO UPDATE SET vehicle_class = EXCLUDED.vehicle_class,
               reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at""",
        plate,
        vehicle_class,
        reason,
        by,
        now,
    )


# ------------------------------------------------------------------ claims


_CLAIM_COLUMNS: Final = (
    "id, plate, claimant_account_id, holder_account_id, evidence, photo_ref, status, "
    "created_at, decided_at, decided_by, decision_note"
)


async def insert_claim(
    conn: asyncpg.Connection,
    *,
    claim_id: str,
    plate: str,
    claimant: str,
    holder: str | None,
    evidence: str,
    photo_ref: str,
    now: datetime,
) -> asyncpg.Record:
    """Raises UniqueViolationError (plate_claims_one_pending) for a second open claim."""
    row = await conn.fetchrow(
        f"""INSERT INTO plate_claims
                (id, plate, claimant_account_id, holder_account_id, evidence, photo_ref, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_CLAIM_COLUMNS}""",  # noqa: S608
        claim_id,
        plate,
        claimant,
        holder,
        evidence,
        photo_ref,
        now,
    )
    assert row is not None
    return row


async def claim_for_update(conn: asyncpg.Connection, claim_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_CLAIM_COLUMNS} FROM plate_claims WHERE id = $1 FOR UPDATE",  # noqa: S608
        claim_id,
    )


async def decide_claim(
    conn: asyncpg.Connection,
    claim_id: str,
    *,
    status: str,
    by: str,
    note: str | None,
    now: datetime,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""UPDATE plate_claims SET status = $2, decided_by = $3, decision_note = $4,
                decided_at = $5
            WHERE id = $1 RETURNING {_CLAIM_COLUMNS}""",  # noqa: S608
        claim_id,
        status,
        by,
        note,
        now,
    )
    assert row is not None
    return row


async def claims(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    claimant: str | None,
    after: str | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_CLAIM_COLUMNS} FROM plate_claims
            WHERE ($1::text IS NULL OR status = $1)
              AND ($2::text IS NULL OR claimant_account_id = $2)
              AND ($3::text IS NULL OR id > $3)
            ORDER BY id LIMIT $4""",  # noqa: S608
        status,
        claimant,
        after,
        limit,
    )


# ------------------------------------------------------------------ audit


#: Audit rows are written by parking.audit, the one writer of audit_log.
audit = record


async def held_by_another(conn: asyncpg.Connection, plate: str, account_id: str) -> bool:
    other: bool | None = await conn.fetchval(
        "SELECT true FROM vehicles WHERE plate = $1 AND released_at IS NULL AND account_id <> $2",
        plate,
        account_id,
    )
    return bool(other)
