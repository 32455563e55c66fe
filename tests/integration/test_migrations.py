from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from parking.db import migrate as migrations
from parking.db import schema
from parking.errors import MigrationError


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
