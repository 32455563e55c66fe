"""``parking devices add|revoke|list|provision-city|sync-broker``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import click
import msgspec

from parking import config
from parking.clock import SystemClock
from parking.devices import cameras, service
from parking.devices.model import BrokerSync, DeviceKind, Vendor
from parking.errors import ParkingError
from parking.stack import service as stack_service

T = TypeVar("T")


def _run(work: Callable[[asyncpg.Connection, service.Broker], Awaitable[T]]) -> T:
    settings = config.load()

    async def go() -> T:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await work(conn, stack_service.mosquitto_broker(settings))
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except ParkingError as error:
        raise click.ClickException(str(error)) from error


def _echo_json(value: object) -> None:
    click.echo(json.dumps(msgspec.to_builtins(value), ensure_ascii=False))


@click.group()
def devices() -> None:
    """Gates, sensors and signs: credentials and broker access."""


@devices.command("add")
@click.option("--lot", "lot_id", required=True, help="lot id, e.g. GZ-DEMO-01")
@click.option("--lane", "lane_id", help="lane id (a gate), e.g. in1")
@click.option("--space", "space_id", help="space id (a sensor), e.g. S0001")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in DeviceKind]),
    help="default: gate for --lane, sensor for --space",
)
@click.option("--id", "device_id", help="device id; default {lot}-{lane|space} lowercased")
@click.option(
    "--vendor",
    type=click.Choice([v.value for v in Vendor]),
    help="the gate is a camera that pushes in its maker's protocol (no MQTT account)",
)
@click.option("--serial", help="the camera's serial number (Vzenith serialno, Hikvision's serial)")
@click.option(
    "--control-url",
    help="Hikvision: the camera's ISAPI address (http://<camera>[:port]), where the "
    "platform opens its barrier",
)
def add_command(
    lot_id: str,
    lane_id: str | None,
    space_id: str | None,
    kind: str | None,
    device_id: str | None,
    vendor: str | None,
    serial: str | None,
    control_url: str | None,
) -> None:
    """Provision a device and print its id and secret (shown once, stored hashed).

    A camera (--vendor, --serial) gets the push_url to configure in it, its secret in the
    path; a Hikvision camera also gets the ISAPI user and password to create on it (the
    platform signs its barrier calls with them)."""
    settings = config.load()
    camera = None
    if vendor is not None:
        camera = service.CameraSpec(
            vendor=Vendor(vendor),
            serial=serial or "",
            push_base_url=settings.camera_public_url,
            control_secrets=cameras.control_secrets_path(settings.stack_dir),
            control_url=control_url,
        )
    elif serial is not None or control_url is not None:
        raise click.UsageError("--serial and --control-url describe a camera: give --vendor")
    provisioned = _run(
        lambda conn, broker: service.add_device(
            conn,
            lot_id=lot_id,
            lane_id=lane_id,
            space_id=space_id,
            kind=DeviceKind(kind) if kind else None,
            device_id=device_id,
            broker=broker,
            camera=camera,
        )
    )
    _echo_json(provisioned)


@devices.command("revoke")
@click.argument("device_id")
def revoke_command(device_id: str) -> None:
    """Revoke a device: the broker refuses it from now on, without a restart."""
    device = _run(
        lambda conn, broker: service.revoke_device(
            conn, device_id, at=SystemClock().now(), broker=broker
        )
    )
    _echo_json(device)


@devices.command("list")
@click.option("--lot", "lot_id", help="only this lot's devices")
@click.option("--live", is_flag=True, help="leave out revoked devices")
@click.option("--json", "as_json", is_flag=True, help="JSON array instead of a table")
def list_command(lot_id: str | None, live: bool, as_json: bool) -> None:
    """The registered devices (never their secrets)."""

    async def work(conn: asyncpg.Connection, _: service.Broker) -> list[object]:
        return list(await service.list_devices(conn, lot_id=lot_id, live_only=live))

    found = _run(work)
    if as_json:
        _echo_json(found)
        return
    for raw in msgspec.to_builtins(found):
        where = raw.get("lane_id") or raw.get("space_id") or "-"
        state = f"revoked {raw['revoked_at']}" if raw.get("revoked_at") else "live"
        click.echo(
            f"{raw['device_id']:<32} {raw['kind']:<6} {raw['lot_id']:<14} {where:<8} {state}"
        )


@devices.command("provision-city")
def provision_city_command() -> None:
    """A gate per lane and a sensor per on-street space where none was ever installed.

    Secrets go to <stack dir>/device-secrets.json (0600) for the simulators.
    Idempotent; then the broker files are rewritten and reloaded.
    """
    settings = config.load()
    started = time.monotonic()

    def progress(message: str) -> None:
        click.echo(f"[devices {time.monotonic() - started:5.1f}s] {message}", err=True)

    report = _run(
        lambda conn, broker: service.provision_city(
            conn,
            secrets_file=service.secrets_path(settings.stack_dir),
            broker=broker,
            progress=progress,
        )
    )
    _echo_json(report)


@devices.command("sync-broker")
def sync_broker_command() -> None:
    """Rewrite the broker's password and ACL files from the registry; wait for the reload."""

    async def work(conn: asyncpg.Connection, broker: service.Broker) -> BrokerSync:
        return await service.sync_broker(conn, broker)

    _echo_json(_run(work))
