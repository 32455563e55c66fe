"""The ``schema.sql`` snapshot: pg_dump of a migrated database, normalised for diffing."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from parking.db import migrate as migrations
from parking.stack.binaries import PACKAGES, find


def dump(database_url: str) -> str:
    pg_dump = find("pg_dump")
    if pg_dump is None:
        raise FileNotFoundError(f"pg_dump not found; install {PACKAGES['pg_dump']}")
    url = urlsplit(database_url)
    env = {
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": unquote(url.username or ""),
        "PGPASSWORD": unquote(url.password or ""),
        "PGDATABASE": url.path.lstrip("/"),
    }
    result = subprocess.run(
        [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges", "--no-comments"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return normalise(result.stdout)


def normalise(text: str) -> str:
    """Drop what varies between pg_dump runs and versions: comments, SET lines, blanks."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith(("--", "SET ", "SELECT pg_catalog.set_config")) or not line.strip():
            continue
        if line.startswith(("\\restrict", "\\unrestrict")):
            # pg_dump 15.14+ brackets dumps with a random per-run key.
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


async def snapshot(database_url: str, directory: Path = migrations.MIGRATIONS_DIR) -> str:
    """Schema of a scratch database that ran every migration (the server's other
    databases are untouched), normalised as in ``schema.sql``."""
    parts = urlsplit(database_url)
    name = f"schema_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        scratch = urlunsplit(parts._replace(path=f"/{name}"))
        try:
            conn = await asyncpg.connect(scratch)
            try:
                await migrations.migrate(conn, directory)
            finally:
                await conn.close()
            return dump(scratch)
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
