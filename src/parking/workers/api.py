"""``parking api``: the HTTP API under granian."""

from __future__ import annotations

import click
from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from parking import config


@click.command()
@click.option("--workers", type=int, default=None, help="API worker processes")
def api(workers: int | None) -> None:
    """Serve the HTTP API (granian; one event loop per worker)."""
    settings = config.load()
    Granian(
        "parking.api.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.api_host,
        port=settings.api_port,
        workers=workers or settings.api_workers,
        log_level=LogLevels.warning,
        # Our own access log middleware writes structured lines; granian's
        # plain-text access log would duplicate them.
        log_access=False,
        respawn_failed_workers=True,
    ).serve()
