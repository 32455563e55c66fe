"""``parking ledger trial-balance``: what finance checks first every morning."""

from __future__ import annotations

import asyncio

import asyncpg
import click
import msgspec

from parking import config
from parking.ledger import service
from parking.ledger.model import TrialBalance
from parking.money import format_yuan


@click.group()
def ledger() -> None:
    """The append-only double-entry ledger."""


async def _trial_balance(database_url: str) -> TrialBalance:
    conn = await asyncpg.connect(database_url)
    try:
        return await service.trial_balance(conn)
    finally:
        await conn.close()


@ledger.command("trial-balance")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def trial_balance(*, as_json: bool) -> None:
    """Balance of every account (debit positive) and their sum, which must be 0.

    Exits with status 1 when the sum is not 0: the ledger has been damaged.
    """
    result = asyncio.run(_trial_balance(config.load().database_url))
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(result), indent=2).decode())
    else:
        width = max((len(a.account) for a in result.accounts), default=7)
        click.echo(f"{'account':<{width}}  {'kind':<9}  {'debit':>14}  {'credit':>14}  balance")
        for a in result.accounts:
            click.echo(
                f"{a.account:<{width}}  {a.kind.value:<9}  {format_yuan(a.debit_fen):>14}  "
                f"{format_yuan(a.credit_fen):>14}  {format_yuan(a.balance_fen)} {a.currency}"
            )
        click.echo(
            f"{'total':<{width}}  {'':<9}  {'':>14}  {'':>14}  {format_yuan(result.total_fen)}"
        )
    if result.total_fen != 0:
        raise click.ClickException(f"the ledger does not balance: total {result.total_fen} fen")
