"""``parking companies list``: the operator companies and how many lots each owns."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import click

from parking import config
from parking.lots import service


@click.group("companies")
def companies_group() -> None:
    """Operator companies (运营公司): they own lots; their operators act on those only."""


@companies_group.command("list")
def list_command() -> None:
    """One JSON line per company: id, name, lots."""
    settings = config.load()

    async def go() -> list[tuple[str, str, int]]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await service.lot_counts(conn)
        finally:
            await conn.close()

    for company_id, name, lots in asyncio.run(go()):
        click.echo(json.dumps({"id": company_id, "name": name, "lots": lots}, ensure_ascii=False))
