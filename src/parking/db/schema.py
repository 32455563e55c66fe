"""The ``schema.sql`` snapshot: pg_dump of a migrated database, normalised for diffing."""

from __future__ import annotations

import subprocess
from urllib.parse import unquote, urlsplit

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
