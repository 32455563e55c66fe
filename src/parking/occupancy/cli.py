"""``parking occupancy ...``, ``parking deadletters ...`` and ``parking anomalies ...``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import click
import msgspec

from parking import config, redisclient
from parking.clock import SystemClock
from parking.occupancy import rebuild as rebuilding
from parking.occupancy import records, store


@click.group()
def occupancy() -> None:
    """The live occupancy core in Redis."""


@occupancy.command("rebuild")
@click.option(
    "--force",
    is_flag=True,
    help="do not wait for the persister to write what the streams still hold (it is lost)",
)
@click.option("--drain-timeout", type=float, default=60.0, show_default=True)
def rebuild_command(force: bool, drain_timeout: float) -> None:
    """Restore occupancy, open sessions, seq marks and plate flags from PostgreSQL."""

    async def run() -> rebuilding.RebuildReport:
        settings = config.load()
        conn = await asyncpg.connect(settings.database_url)
        redis = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
        try:
            return await rebuilding.rebuild(
                conn, redis, now=SystemClock().now(), drain_timeout=drain_timeout, force=force
            )
        finally:
            await conn.close()
            await redis.aclose()

    try:
        report = asyncio.run(run())
    except rebuilding.NotDrained as error:
        raise click.ClickException(str(error)) from error
    click.echo(msgspec.json.encode(msgspec.structs.asdict(report)).decode())  # type: ignore[arg-type]


@occupancy.command("lot")
@click.argument("lot_id")
def lot_command(lot_id: str) -> None:
    """A lot's live counts as the core holds them."""

    async def run() -> dict[str, Any]:
        settings = config.load()
        redis = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
        try:
            counts = await store.lot_counts(redis, lot_id)
            sessions = await store.lot_sessions(redis, lot_id)
        finally:
            await redis.aclose()
        return {"lot_id": lot_id, **counts, "open_plates": sorted(sessions)}

    click.echo(json.dumps(asyncio.run(run()), ensure_ascii=False))


def _rows(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, bytes):
                item[key] = value.decode("utf-8", "replace")
                item[f"{key}_hex"] = value.hex() if len(value) <= 4096 else value[:4096].hex()
                item[f"{key}_bytes"] = len(value)
            elif hasattr(value, "isoformat"):
                item[key] = value.isoformat()
            else:
                item[key] = value
        out.append(item)
    return out


async def _query(sql_call: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(config.load().database_url)
    try:
        result: list[asyncpg.Record] = await sql_call(conn)
        return result
    finally:
        await conn.close()


@click.group()
def deadletters() -> None:
    """Device messages that were refused, kept verbatim with the reason."""


@deadletters.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON array (payload as text and hex)")
def deadletters_list(limit: int, as_json: bool) -> None:
    """The newest dead letters first."""
    rows = _rows(asyncio.run(_query(lambda c: records.dead_letters(c, limit=limit))))
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        payload = row["payload"][:60].replace("\n", " ")
        click.echo(
            f"{row['id']:>6} {row['received_at']} {row['device_id'] or '-':<24} "
            f"{row['reason'][:80]}  {row['topic']}  {payload!r}"
        )


@click.group()
def anomalies() -> None:
    """Real-world anomalies recorded for review."""


@anomalies.command("list")
@click.option("--kind", default=None)
@click.option("--status", type=click.Choice(["open", "resolved"]), default=None)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def anomalies_list(kind: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """The newest anomalies first."""
    rows = _rows(
        asyncio.run(_query(lambda c: records.anomalies(c, kind=kind, status=status, limit=limit)))
    )
    if as_json:
        for row in rows:
            row["details"] = json.loads(row["details"])
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        click.echo(
            f"{row['created_at']} {row['status']:<8} {row['kind']:<20} {row['lot_id'] or '-':<14} "
            f"{row['device_id'] or '-':<20} {row['plate'] or '-':<10} {row['details']}"
        )
