"""``parking db migrate|schema``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import asyncpg
import click

from parking import config
from parking.db import migrate as migrations
from parking.db import schema
from parking.errors import MigrationError


@click.group()
def db() -> None:
    """The PostgreSQL schema."""


@db.command("migrate")
def migrate_command() -> None:
    """Apply pending migrations as the schema owner (advisory lock; a changed applied
    file is refused)."""

    async def run() -> list[str]:
        conn = await asyncpg.connect(config.load().owner_database_url)
        try:
            return await migrations.migrate(conn)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in applied:
        click.echo(f"applied {name}", err=True)
    click.echo(f"{len(applied)} migration(s) applied", err=True)


@db.command("schema")
@click.option("--write", is_flag=True, help="rewrite migrations/schema.sql instead of printing")
def schema_command(write: bool) -> None:
    """Migrate a new scratch database and dump its schema as migrations/schema.sql has it."""
    try:
        text = asyncio.run(schema.snapshot(config.load().owner_database_url))
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"pg_dump failed: {exc.stderr}") from exc
    if write:
        Path(migrations.MIGRATIONS_DIR / "schema.sql").write_text(text, encoding="utf-8")
        click.echo("wrote migrations/schema.sql", err=True)
    else:
        sys.stdout.write(text)
