"""``parking sandbox-pay``: the sandbox WeChat Pay v3 provider, served by granian."""

from __future__ import annotations

import os

import click
import msgspec
from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from counterparts.payments import keys as key_files
from counterparts.payments.service import SETTINGS_ENV, SandboxSettings
from parking import config


@click.command("sandbox-pay")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=int, default=8090, show_default=True)
@click.option(
    "--retry-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="multiplies WeChat's notification retry intervals (15s, 15s, 30s, 3m, ...)",
)
@click.option(
    "--settle-delay",
    type=float,
    default=2.0,
    show_default=True,
    help="seconds before an accepted deduction or a refund settles",
)
@click.option(
    "--duplicate-rate",
    type=float,
    default=0.02,
    show_default=True,
    help="chance that an acknowledged notification is sent once more",
)
@click.option("--delivery-timeout", type=float, default=5.0, show_default=True)
@click.option(
    "--alipay-port",
    type=int,
    default=None,
    help="also serve the Alipay side (its OpenAPI gateway) on this port",
)
def sandbox_pay(
    host: str,
    port: int,
    retry_scale: float,
    settle_delay: float,
    duplicate_rate: float,
    delivery_timeout: float,
    alipay_port: int | None,
) -> None:
    """Serve a WeChat Pay v3 sandbox provider (and, with --alipay-port, an Alipay gateway)
    with keys under {stack_dir}/sandbox-pay/."""
    settings = config.load()
    folder = settings.stack_dir / "sandbox-pay"
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    public_url = f"http://{public_host}:{port}"
    sandbox = SandboxSettings(
        data_dir=str(folder),
        public_url=public_url,
        host=host,
        port=port,
        retry_scale=retry_scale,
        settle_delay=settle_delay,
        duplicate_rate=duplicate_rate,
        delivery_timeout=delivery_timeout,
        log_level=settings.log_level,
        log_format=settings.log_format,
        alipay_port=alipay_port,
    )
    # Keys and merchant.json exist before the port opens, so whoever waits for
    # the port can load the adapter's configuration right away.
    key_files.ensure(folder, base_url=public_url)
    os.environ[SETTINGS_ENV] = msgspec.json.encode(sandbox).decode()
    click.echo(
        f"[sandbox-pay] {public_url}  merchant config: {folder / key_files.MERCHANT_CONFIG}",
        err=True,
    )
    Granian(
        "counterparts.payments.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        # One worker: the delivery loop and the SQLite writer must be unique.
        workers=1,
        log_level=LogLevels.warning,
        log_access=False,
    ).serve()
