"""``parking seed``."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import click

from parking import config
from parking.devices import service as devices
from parking.seed import service
from parking.stack import service as stack_service


@click.command()
@click.option("--if-empty", is_flag=True, help="do nothing when the city has lots already")
def seed(if_empty: bool) -> None:
    """Write the synthetic Ganzhou (651 lots, 112,000 spaces); re-running changes nothing."""
    settings = config.load()
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[seed {time.monotonic() - started:5.1f}s] {message}", err=True)

    async def run() -> dict[str, int] | None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            counts = None
            if not (if_empty and not await service.is_empty(conn)):
                counts = await service.seed(conn, city_seed=settings.city_seed, progress=progress)
            # Every seeded lane and space gets its device (idempotent); the
            # secrets go to the stack dir for the simulators, never to git.
            report = await devices.provision_city(
                conn,
                secrets_file=devices.secrets_path(settings.stack_dir),
                broker=stack_service.mosquitto_broker(settings),
                progress=progress,
            )
            progress(f"devices: {report}")
            return counts
        finally:
            await conn.close()

    counts = asyncio.run(run())
    if counts is None:
        click.echo("city already seeded; nothing to do", err=True)
        return
    progress("done")
    click.echo(json.dumps(counts))
