"""``parking qr render|decode|keys``: printable codes and their signing keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
import click
import msgspec

from parking import config
from parking.clock import SystemClock
from parking.errors import ParkingError
from parking.qr import keys, logic, service, signs

T = TypeVar("T")


def _with_db(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    settings = config.load()

    async def go() -> T:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except ParkingError as error:
        raise click.ClickException(str(error)) from error


def _keyring_path() -> Path:
    return keys.path_in(config.load().stack_dir)


def _echo_json(value: object) -> None:
    click.echo(json.dumps(msgspec.to_builtins(value), ensure_ascii=False))


@click.group("qr")
def qr() -> None:
    """Signed QR codes for lots, lanes and on-street spaces."""


@qr.command("render")
@click.option("--lot", "lot_id", required=True, help="lot id, e.g. GZ-DEMO-01")
@click.option("--lane", "lane_id", help="lane id (entry or exit), e.g. in1")
@click.option("--space", "space_id", help="on-street space id, e.g. S0001")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="FILE.svg, FILE.png (the code with the lot's name and the place under it) or "
    "FILE.pdf (an A6 sign)",
)
@click.option("--expires-days", type=click.IntRange(min=1), help="default: never expires")
@click.option("--scale", type=click.IntRange(1, 50), default=10, show_default=True)
def render_command(
    lot_id: str,
    lane_id: str | None,
    space_id: str | None,
    out: Path,
    expires_days: int | None,
    scale: int,
) -> None:
    """Sign a code for a place that exists in the database and write it as an image."""
    if out.suffix.lower() not in signs.FORMATS:
        raise click.BadParameter("must end in .svg, .png or .pdf", param_hint="--out")
    keyring = keys.load_or_create(_keyring_path())
    now = SystemClock().now()
    expires_at = None if expires_days is None else now + timedelta(days=expires_days)
    try:
        target = service.target_for(lot_id, lane_id=lane_id, space_id=space_id)
    except ParkingError as error:
        raise click.ClickException(str(error)) from error
    issued = _with_db(
        lambda conn: service.issue(
            conn,
            keyring=keyring,
            target=target,
            now=now,
            prefix=logic.prefix_of(config.load().public_base_url),
            expires_at=expires_at,
        )
    )
    try:
        signs.write([service.sign_of(issued)], out, module=scale)
    except ParkingError as error:
        raise click.ClickException(str(error)) from error
    _echo_json({"out": str(out), "url": issued.url, "place": issued.place})


@qr.command("sheet")
@click.option("--lot", "lot_id", required=True, help="lot id, e.g. GZ-ST-001")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="FILE.pdf"
)
@click.option("--expires-days", type=click.IntRange(min=1), help="default: never expires")
def sheet_command(lot_id: str, out: Path, expires_days: int | None) -> None:
    """Sign a code for every space of a lot and write them on A4 sheets, 12 a page."""
    if out.suffix.lower() != ".pdf":
        raise click.BadParameter("must end in .pdf", param_hint="--out")
    keyring = keys.load_or_create(_keyring_path())
    now = SystemClock().now()
    expires_at = None if expires_days is None else now + timedelta(days=expires_days)
    issued = _with_db(
        lambda conn: service.issue_spaces(
            conn,
            keyring=keyring,
            lot_id=lot_id,
            now=now,
            prefix=logic.prefix_of(config.load().public_base_url),
            expires_at=expires_at,
        )
    )
    if not issued:
        raise click.ClickException(f"lot {lot_id} has no spaces")
    signs.write([service.sign_of(i) for i in issued], out)
    _echo_json({"out": str(out), "codes": len(issued), "pages": -(-len(issued) // 12)})


@qr.command("decode")
@click.argument("code")
def decode_command(code: str) -> None:
    """Verify a scanned code (URL or token) and print what it points at."""
    keyring = keys.load_or_create(_keyring_path())
    resolved = _with_db(
        lambda conn: service.resolve(
            conn,
            keyring=keyring,
            scanned=code,
            now=SystemClock().now(),
            prefix=logic.prefix_of(config.load().public_base_url),
        )
    )
    _echo_json(resolved)


@qr.group("keys")
def keys_group() -> None:
    """The HMAC keys codes are signed with ({stack_dir}/qr-keys.json)."""


@keys_group.command("list")
def keys_list() -> None:
    """Key ids (never the keys) and which one signs."""
    keyring = keys.load_or_create(_keyring_path())
    _echo_json({"signing": keyring.signing, "keys": sorted(keyring.keys)})


@keys_group.command("rotate")
def keys_rotate() -> None:
    """Add a key and sign new codes with it; codes printed earlier keep working."""
    keyring = keys.rotate(_keyring_path())
    _echo_json({"signing": keyring.signing, "keys": sorted(keyring.keys)})


@keys_group.command("retire")
@click.argument("key_id")
def keys_retire(key_id: str) -> None:
    """Stop accepting codes signed with KEY_ID (reprint them first)."""
    try:
        keyring = keys.retire(_keyring_path(), key_id)
    except (KeyError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    _echo_json({"signing": keyring.signing, "keys": sorted(keyring.keys)})
