"""Numbered plain-SQL migrations, applied under an advisory lock with checksums.

Each file ``NNNN_name.sql`` in ``migrations/`` runs once, in its own
transaction, and its SHA-256 is recorded. A file whose content changed after it
was applied is refused: the database and the repository would disagree about
the schema, and nobody could tell which one is true.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from parking.errors import MigrationError

# Any constant works as long as every migrating process uses the same one.
_LOCK_KEY = 0x6368616E67626F  # "changbo"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        if path.name == "schema.sql":
            continue
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        found.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number: {versions}")
    return found


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied. Safe to run concurrently."""
    migrations = discover(directory)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        on_disk = {m.version for m in migrations}
        for version, known in applied.items():
            if version not in on_disk:
                raise MigrationError(
                    f"database has migration {version} ({known['name']}) that this code lacks"
                )
        newest = max(applied, default=0)
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum or row["name"] != migration.name:
                    raise MigrationError(
                        f"{migration.name} changed after it was applied "
                        f"(recorded {row['name']} {row['checksum'][:12]}, "
                        f"file {migration.checksum[:12]}); add a new migration instead"
                    )
                continue
            if migration.version < newest:
                # Applying it now would run it after migrations that were
                # written later and may depend on its absence.
                raise MigrationError(
                    f"{migration.name} is older than the newest applied migration "
                    f"({newest}); renumber it after {newest}"
                )
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
