"""``parking calendar``: the calendars of day types tariffs v2 price by (import, list)."""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Final

import asyncpg
import click
import msgspec

from parking import config
from parking.auth.model import Principal, Role
from parking.clock import SystemClock
from parking.pricing import service
from parking.pricing.service import CalendarConflict
from parking.tariffs.calendar import (
    Calendar,
    CalendarError,
    decode_calendar,
    decode_calendar_csv,
)

#: who imports from a shell: the platform's own operations, by the login name
_TOKEN: Final = "cli"  # noqa: S105 (a marker, not a secret)


@click.group("calendar")
def calendar() -> None:
    """Calendars of day types (holidays and adjusted working days, 调休)."""


def _read(path: Path, version: str | None, name: str | None, source: str | None) -> Calendar:
    raw = path.read_bytes()
    if path.suffix.lower() == ".csv":
        if not version or not name:
            raise click.UsageError("a CSV calendar needs --version and --name")
        return decode_calendar_csv(raw, version=version, name=name, source=source)
    if version or name or source:
        raise click.UsageError("--version, --name and --source are for a CSV file only")
    return decode_calendar(raw)


@calendar.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--version", "version", help="a CSV file's calendar version (e.g. cn-2027.1)")
@click.option("--name", help="a CSV file's calendar name (the notice's title)")
@click.option("--source", help="a CSV file's source (the notice's number)")
def import_calendar(file: Path, version: str | None, name: str | None, source: str | None) -> None:
    """Load a year's holidays and adjusted working days from FILE (JSON, or CSV rows of
    date,kind); a corrected notice is imported as a new version."""
    try:
        loaded = _read(file, version, name, source)
    except CalendarError as error:
        raise click.ClickException(f"{file}: {error}") from error
    settings = config.load()
    who = Principal(subject=f"cli:{getpass.getuser()}"[:64], role=Role.CITY, token_id=_TOKEN)

    async def run() -> service.CalendarView:
        conn = await asyncpg.connect(settings.database_url)
        try:
            async with conn.transaction():
                return await service.import_calendar(conn, loaded, by=who, now=SystemClock().now())
        finally:
            await conn.close()

    try:
        view = asyncio.run(run())
    except CalendarConflict as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        json.dumps(
            {
                "version": view.calendar.version,
                "years": list(view.calendar.years),
                "holidays": len(view.calendar.holidays),
                "workdays": len(view.calendar.workdays),
            },
            ensure_ascii=False,
        )
    )


@calendar.command("list")
def list_calendars() -> None:
    """Every calendar edition, the newest first (the order pricing consults them in)."""
    settings = config.load()

    async def run() -> list[service.CalendarView]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await service.calendars(conn)
        finally:
            await conn.close()

    for view in asyncio.run(run()):
        click.echo(msgspec.json.encode(view).decode())
