"""``parking sessions list``."""

from __future__ import annotations

import asyncio

import asyncpg
import click
import msgspec

from parking import config
from parking.money import format_yuan
from parking.sessions import service
from parking.sessions.model import SessionView


@click.group()
def sessions() -> None:
    """Parking sessions."""


@sessions.command("list")
@click.option("--plate", required=True, help="plate as read or typed (normalised)")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="a JSON array, newest first")
def list_command(plate: str, limit: int, as_json: bool) -> None:
    """Sessions of a plate with lot, status, entry/exit times and fee_fen."""

    async def run() -> list[SessionView]:
        conn = await asyncpg.connect(config.load().database_url)
        try:
            return await service.list_for_plate(conn, plate, limit=limit)
        finally:
            await conn.close()

    views = asyncio.run(run())
    if as_json:
        click.echo(msgspec.json.encode(views).decode())
        return
    for v in views:
        fee = "-" if v.fee_fen is None else f"{format_yuan(v.fee_fen)} yuan"
        click.echo(
            f"{v.id} {v.lot_id:<14} {v.status:<10} "
            f"{v.entry_at.isoformat() if v.entry_at else '-':<32} "
            f"{v.exit_at.isoformat() if v.exit_at else '-':<32} {fee}"
        )
