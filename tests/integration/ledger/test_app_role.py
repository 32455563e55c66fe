"""The ledger's protection does not depend on good behaviour: the platform connects
as a role that owns nothing and may only INSERT and SELECT ledger rows."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from parking.config import APP_DB_USER
from parking.ledger import logic, service

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)

#: Tables whose rows are history: corrected by a reversing entry, never edited.
APPEND_ONLY = ("ledger_accounts", "ledger_transactions", "ledger_postings", "bill_events")


async def _post_one(conn: asyncpg.Connection) -> str:
    tx = logic.bill_opened(bill_id="b-1", lot_id="GZ-DEMO-01", amount_fen=500, occurred_at=NOW)
    async with conn.transaction():
        return await service.post(conn, tx)


async def test_the_platform_connects_as_the_app_role_that_is_no_superuser(
    db: asyncpg.Connection,
) -> None:
    row = await db.fetchrow(
        "SELECT current_user AS who, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    assert row["who"] == APP_DB_USER
    assert not row["rolsuper"]
    assert not row["rolcreaterole"]
    assert not row["rolcreatedb"]
    assert not row["rolbypassrls"]


async def test_the_app_role_posts_a_balanced_transaction(db: asyncpg.Connection) -> None:
    tx_id = await _post_one(db)
    assert await db.fetchval(
        "SELECT count(*) FROM ledger_postings WHERE transaction_id = $1", tx_id
    )
    assert (await service.trial_balance(db)).total_fen == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_transactions SET memo = 'edited'",
        "UPDATE bill_events SET remark = 'edited'",
        "UPDATE ledger_postings SET amount_fen = amount_fen * 2",
        "UPDATE ledger_accounts SET kind = 'expense'",
        "UPDATE payment_bills SET amount_fen = 0",
        *(f"DELETE FROM {t}" for t in (*APPEND_ONLY, "payment_bills")),
        "TRUNCATE ledger_postings",
        "TRUNCATE ledger_transactions, ledger_postings, bill_events",
        "TRUNCATE ledger_accounts CASCADE",
        "ALTER TABLE ledger_postings DISABLE TRIGGER ledger_postings_append_only",
        "ALTER TABLE ledger_transactions DISABLE TRIGGER ALL",
        "ALTER TABLE ledger_postings DISABLE TRIGGER USER",
        "DROP TRIGGER ledger_postings_append_only ON ledger_postings",
        "ALTER TABLE ledger_postings OWNER TO parking_app",
        "CREATE OR REPLACE FUNCTION append_only_refuse() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
        "SET session_replication_role = replica",
    ],
)
async def test_the_app_role_cannot_change_remove_or_unprotect_ledger_rows(
    db: asyncpg.Connection, statement: str
) -> None:
    await _post_one(db)
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
        await db.execute(statement)
    # Refused for want of privilege, not by the triggers (which an owner could drop).
    assert "append-only" not in str(refused.value)
    assert any(
        words in str(refused.value)
        for words in ("permission denied", "must be owner", "must be member of role")
    ), str(refused.value)
    assert await db.fetchval("SELECT count(*) FROM ledger_transactions") == 1
    assert (
        await db.fetchval("SELECT sum(amount_fen) FROM ledger_postings WHERE amount_fen > 0") == 500
    )
    assert not await db.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%append_only' AND tgenabled = 'D'"
    )


async def test_every_append_only_table_is_insert_and_select_only_for_the_app_role(
    db: asyncpg.Connection,
) -> None:
    guarded = await db.fetch(
        """SELECT DISTINCT c.relname
             FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_proc p ON p.oid = t.tgfoid
            WHERE p.proname = 'append_only_refuse'
            ORDER BY 1"""
    )
    names = [row["relname"] for row in guarded]
    assert set(names) >= {*APPEND_ONLY, "payment_bills"}
    for table in names:
        for privilege, expected in (
            ("SELECT", True),
            ("INSERT", True),
            ("UPDATE", False),
            ("DELETE", False),
            ("TRUNCATE", False),
            ("TRIGGER", False),
            ("REFERENCES", False),
        ):
            held = await db.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", APP_DB_USER, table, privilege
            )
            assert held is expected, (table, privilege)


async def test_the_app_role_owns_nothing_in_the_database(db: asyncpg.Connection) -> None:
    owned = await db.fetch(
        """SELECT 'relation ' || relname AS what FROM pg_class WHERE relowner = $1::regrole
           UNION ALL
           SELECT 'function ' || proname FROM pg_proc WHERE proowner = $1::regrole
           UNION ALL
           SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = $1::regrole""",
        APP_DB_USER,
    )
    assert [row["what"] for row in owned] == []


async def test_a_table_a_later_migration_creates_is_usable_by_the_app_role(
    db: asyncpg.Connection, owner_db: asyncpg.Connection
) -> None:
    await owner_db.execute(
        "CREATE TABLE later_things (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, x int)"
    )
    await db.execute("INSERT INTO later_things (x) VALUES (1)")
    await db.execute("UPDATE later_things SET x = 2")
    assert await db.fetchval("SELECT x FROM later_things") == 2
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
        await db.execute("ALTER TABLE later_things ADD COLUMN y int")
