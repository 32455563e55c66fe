from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from parking.db import migrate as migrations
from parking.db import schema
from parking.errors import MigrationError
from parking.ids import new_id


async def test_migrations_reproduce_schema_snapshot(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    snapshot = (migrations.MIGRATIONS_DIR / "schema.sql").read_text(encoding="utf-8")
    assert schema.dump(empty_db_url) == snapshot, "run `make schema` and commit schema.sql"


async def test_migrate_twice_applies_nothing_the_second_time(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        first = await migrations.migrate(conn)
        second = await migrations.migrate(conn)
    finally:
        await conn.close()
    assert first == [m.name for m in migrations.discover()]
    assert second == []


async def test_a_modified_applied_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, folder)
    conn = await asyncpg.connect(empty_db_url)
    try:
        await migrations.migrate(conn, folder)
        first = sorted(folder.glob("0001_*.sql"))[0]
        first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrations.migrate(conn, folder)
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_each_file_once(empty_db_url: str) -> None:
    conns = [await asyncpg.connect(empty_db_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrations.migrate(c) for c in conns))
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        for c in conns:
            await c.close()
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.name for m in migrations.discover())
    assert count == len(migrations.discover())


def test_two_migrations_with_one_number_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share a number"):
        migrations.discover(tmp_path)


async def test_a_migration_older_than_the_newest_applied_is_refused(
    empty_db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0003_c.sql").write_text("CREATE TABLE c (x int);")
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await migrations.migrate(conn, tmp_path) == ["0001_a.sql", "0003_c.sql"]
        (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (x int);")
        with pytest.raises(MigrationError, match="older than the newest applied"):
            await migrations.migrate(conn, tmp_path)
    finally:
        await conn.close()


async def test_0027_moves_sessions_and_the_audit_log_into_their_months(
    empty_db_url: str, tmp_path: Path
) -> None:
    """An upgrade with data: every session and audit row lands in its month's partition
    (months past the pre-made ones made for it), the open ones are in sessions_open, ids
    that name no month in sessions_unsorted, and the audit log's ids continue."""
    before = tmp_path / "migrations"
    before.mkdir()
    for path in migrations.MIGRATIONS_DIR.glob("00*.sql"):
        if path.name < "0027":
            shutil.copy(path, before / path.name)
    spring, far = datetime(2025, 4, 3, tzinfo=UTC), datetime(2029, 8, 30, tzinfo=UTC)
    opened, closed = new_id("s", spring), new_id("s", far)
    conn = await asyncpg.connect(empty_db_url)
    try:
        await migrations.migrate(conn, before)
        await conn.executemany(
            "INSERT INTO sessions (id, lot_id, plate, status, entry_at, exit_at, fee_fen) "
            "VALUES ($1, 'L1', $2, $3, $4, $5, $6)",
            [
                (opened, "赣B27001", "open", spring, None, None),
                (closed, "赣B27001", "closed", far, far, 300),
                ("s-by-hand", None, "voided", spring, None, None),
            ],
        )
        await conn.executemany(
            "INSERT INTO audit_log (at, actor, role, action, target) "
            "VALUES ($1, 'op', 'operator', 'x', 't')",
            [(spring,), (far,)],
        )
        await migrations.migrate(conn)
        homes = await conn.fetch(
            "SELECT id, tableoid::regclass::text AS home FROM sessions ORDER BY id"
        )
        assert {r["id"]: r["home"] for r in homes} == {
            opened: "sessions_2025_04",
            closed: "sessions_2029_08",
            "s-by-hand": "sessions_unsorted",
        }
        assert await conn.fetchval("SELECT array_agg(id) FROM sessions_open") == [opened]
        audit = await conn.fetch(
            "SELECT id, tableoid::regclass::text AS home FROM audit_log ORDER BY id"
        )
        assert [(r["id"], r["home"]) for r in audit] == [
            (1, "audit_log_2025_04"), (2, "audit_log_2029_08"),
        ]  # fmt: skip
        await conn.execute(
            "INSERT INTO audit_log (at, actor, role, action, target) "
            "VALUES ($1, 'op', 'operator', 'y', 't')",
            far,
        )
        assert await conn.fetchval("SELECT max(id) FROM audit_log") == 3
    finally:
        await conn.close()
