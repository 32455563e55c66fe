"""``parking retention``: apply the retention policy (``parking run`` supervises it)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import asyncpg
import click
import msgspec

from parking import config
from parking.clock import SystemClock
from parking.observability import configure_logging
from parking.periodic import repeat
from parking.retention import service
from parking.retention.model import Policy


def policy_of(text: str) -> Policy:
    """``kind=amount`` pairs (``PARKING_RETENTION``) over the defaults."""
    values: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, amount = part.partition("=")
        if not sep or not amount.strip().isdigit():
            raise config.ConfigError(f"PARKING_RETENTION: {part!r} is not name=number")
        values[name.strip()] = int(amount)
    try:
        return msgspec.convert(values, Policy)
    except msgspec.ValidationError as error:
        raise config.ConfigError(f"PARKING_RETENTION: {error}") from None


def pseudonym_key(settings: config.Settings) -> bytes:
    """The key plates are pseudonymised with, derived from the stack's token key."""
    return hashlib.sha256(b"changbo plate pseudonym\0" + settings.jwt_key.encode()).digest()


@click.group("retention")
def retention() -> None:
    """Personal data kept no longer than it must be."""


@retention.command("apply")
@click.option("--once", is_flag=True, help="apply once and print what was removed")
def apply(once: bool) -> None:
    """Remove (or pseudonymise) what is past its time; every run is recorded."""
    settings = config.load()
    policy = policy_of(settings.retention)
    configure_logging(settings.log_level, settings.log_format, process="retention")

    async def run_once() -> list[dict[str, object]]:
        conn = await asyncpg.connect(settings.owner_database_url)
        try:
            done = await service.apply(
                conn,
                policy,
                key=pseudonym_key(settings),
                now=SystemClock().now(),
                archive_dir=settings.archive_dir,
            )
        finally:
            await conn.close()
        return [msgspec.to_builtins(d) for d in done]

    if once:
        click.echo(json.dumps(asyncio.run(run_once()), ensure_ascii=False))
        return

    async def forever() -> None:
        async def one() -> None:
            await run_once()

        await repeat(one, every=settings.retention_every_s, name="retention")

    asyncio.run(forever())


@retention.command("restore")
@click.argument("partition")
def restore(partition: str) -> None:
    """Load one archived month back into its table (e.g. ``passages_2026_01``)."""
    settings = config.load()

    async def run() -> int:
        conn = await asyncpg.connect(settings.owner_database_url)
        try:
            return await service.restore(conn, settings.archive_dir, partition)
        finally:
            await conn.close()

    try:
        rows = asyncio.run(run())
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps({"partition": partition, "rows": rows}))
