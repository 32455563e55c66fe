"""``parking drivers otp|show``: the local stack's view of driver logins."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import click
import msgspec

from parking import config, redisclient
from parking.accounts import notifier, service
from parking.errors import ParkingError


@click.group("drivers")
def drivers() -> None:
    """Driver accounts (phone + one-time code login)."""


@drivers.command("otp")
@click.option("--phone", required=True, help="mobile number, e.g. 13812345678")
def otp(phone: str) -> None:
    """Print the live login code last sent to PHONE by the local notifier."""
    try:
        normalised = service.phone_of(phone)
    except ParkingError as error:
        raise click.BadParameter(str(error), param_hint="--phone") from error

    async def go() -> str | None:
        settings = config.load()
        client = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
        try:
            return await notifier.latest_code(
                client, normalised, notifier.outbox_dir(settings.stack_dir)
            )
        finally:
            await client.aclose()

    code = asyncio.run(go())
    if code is None:
        raise click.ClickException(
            f"no live code for {normalised}: request one with POST /v1/auth/otp"
        )
    click.echo(code)


@drivers.command("show")
@click.option("--phone", required=True, help="mobile number")
def show(phone: str) -> None:
    """Print the account of PHONE with its bound plates."""
    try:
        normalised = service.phone_of(phone)
    except ParkingError as error:
        raise click.BadParameter(str(error), param_hint="--phone") from error

    async def go() -> dict[str, object]:
        conn = await asyncpg.connect(config.load().database_url)
        try:
            account_id = await service.account_id_of_phone(conn, normalised)
            if account_id is None:
                raise click.ClickException(f"no account for {normalised}")
            view = await service.account_view(conn, account_id)
            plates = await service.vehicles(conn, account_id, after=None, limit=10)
            return {"account": msgspec.to_builtins(view), "vehicles": msgspec.to_builtins(plates)}
        finally:
            await conn.close()

    click.echo(json.dumps(asyncio.run(go()), ensure_ascii=False))
