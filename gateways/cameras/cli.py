"""``parking cameras serve|simulate|sources``: the camera adapter, its simulators, and
where a lot's cameras may push from."""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import asdict
from urllib.parse import urlsplit

import asyncpg
import click
import httpx
from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from gateways.cameras.simulator import CameraCity, IsapiServer, SimTotals, SimulatedCamera
from parking import config
from parking.devices import cameras as camera_service
from parking.devices import service as devices
from parking.devices.model import FleetCamera
from parking.errors import ParkingError
from parking.observability import configure_logging


@click.group()
def cameras() -> None:
    """ANPR cameras that push in their maker's protocol (Vzenith, Hikvision)."""


@cameras.command("serve")
def serve() -> None:
    """Run the camera adapter: cameras' pushes -> the occupancy core -> their replies."""
    settings = config.load()
    tls = settings.camera_tls
    Granian(
        "gateways.cameras.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.camera_host,
        port=settings.camera_port,
        workers=1,
        log_level=LogLevels.warning,
        # A push's path holds its camera's secret: no access log, ever.
        log_access=False,
        respawn_failed_workers=True,
        ssl_cert=tls[0] if tls else None,
        ssl_key=tls[1] if tls else None,
    ).serve()


@cameras.command("sources")
@click.option("--lot", "lot_id", required=True, help="lot id")
@click.option("--allow", "networks", multiple=True, help="a network, e.g. 10.20.0.0/24 (repeat)")
@click.option("--any", "allow_any", is_flag=True, help="drop the list: any address may push")
def sources(lot_id: str, networks: tuple[str, ...], allow_any: bool) -> None:
    """Show, set (--allow ...) or drop (--any) the networks a lot's cameras push from."""
    settings = config.load()

    async def work() -> list[str]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            if networks or allow_any:
                chosen = [] if allow_any else camera_service.parse_networks(networks)
                await camera_service.set_sources(conn, lot_id, chosen)
            return [str(n) for n in await camera_service.sources(conn, lot_id)]
        finally:
            await conn.close()

    try:
        found = asyncio.run(work())
    except ParkingError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps({"lot_id": lot_id, "networks": found}))


@cameras.command("simulate")
@click.option("--lot", "lots", multiple=True, help="these lots (default: every lot with cameras)")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    help="reads a second, all cameras together",
)
@click.option("--duration", type=click.FloatRange(min=0.1), help="seconds; default until stopped")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--isapi-port",
    type=int,
    default=None,
    help="where simulated Hikvision units serve ISAPI (default: the port of their control "
    "URLs on this machine, else the camera port + 1)",
)
def simulate(
    lots: tuple[str, ...], rate: float, duration: float | None, seed: int, isapi_port: int | None
) -> None:
    """Simulate the cameras of lots: cars in and out, each read pushed as the unit does.

    Push secrets come from <stack dir>/device-secrets.json, Hikvision ISAPI credentials
    from <stack dir>/camera-control.json (both written when the cameras were provisioned).
    """
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="camera-simulator")
    secrets = devices.read_secrets(devices.secrets_path(settings.stack_dir))
    controls = camera_service.control_credentials(
        camera_service.control_secrets_path(settings.stack_dir)
    )

    async def fleet() -> list[FleetCamera]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await camera_service.fleet(conn, list(lots) if lots else None)
        finally:
            await conn.close()

    found = asyncio.run(fleet())
    simulated = [
        SimulatedCamera(
            camera=c,
            push_url=devices.push_url(
                settings.camera_public_url,
                c.vendor,
                c.device.device_id,
                secrets[c.device.device_id],
            ),
        )
        for c in found
        if c.device.device_id in secrets
    ]
    if not simulated:
        raise click.ClickException("no camera with a known secret in these lots")
    # The units' ISAPI is where the registry says the platform calls them (their control
    # URL, on this machine): the port their provisioning chose, whatever the adapter's is now.
    local = {
        port
        for c in found
        if c.control_url
        and urlsplit(c.control_url).hostname in ("127.0.0.1", "localhost")
        and (port := urlsplit(c.control_url).port) is not None
    }
    port = isapi_port or (local.pop() if len(local) == 1 else settings.camera_port + 1)
    credentials = {
        urlsplit(c.control_url).path.rstrip("/"): controls[c.device.device_id]
        for c in found
        if c.control_url and c.device.device_id in controls
    }

    async def run() -> SimTotals:
        isapi = IsapiServer(credentials) if credentials else None
        if isapi is not None:
            await isapi.start("127.0.0.1", port)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            city = CameraCity(simulated, rate=rate, seed=seed, isapi=isapi, http=http)
            try:
                return await city.run(duration)
            except asyncio.CancelledError:
                return city.totals
            finally:
                if isapi is not None:
                    await isapi.stop()

    click.echo(
        f"[cameras] simulating {len(simulated)} cameras of "
        f"{len({c.camera.device.lot_id for c in simulated})} lots at {rate}/s",
        err=True,
    )
    try:
        totals = asyncio.run(run())
    except KeyboardInterrupt:
        return
    click.echo(json.dumps(asdict(totals)))
