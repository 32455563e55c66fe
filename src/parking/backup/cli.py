"""``parking backup now|list`` and ``parking restore --to TIME --into DIR``."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import asyncpg
import click
import msgspec

from parking import config, redisclient
from parking.backup import logic, service
from parking.backup.model import BackupSet
from parking.clock import SystemClock
from parking.errors import ParkingError
from parking.occupancy import rebuild


def _log(message: str) -> None:
    print(f"[backup] {message}", file=sys.stderr, flush=True)


def _describe(backup: BackupSet) -> dict[str, object]:
    return msgspec.to_builtins(backup)  # type: ignore[no-any-return]


@click.group("backup")
def backup() -> None:
    """Base backups of PostgreSQL (with archived WAL), Redis and the stack's files."""


@backup.command("now")
def backup_now() -> None:
    """Take a backup set into PARKING_BACKUP_DIR (needs `parking stack up --backups`)."""
    try:
        made = service.take(config.load(), _log)
    except ParkingError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(_describe(made), ensure_ascii=False))


@backup.command("list")
def backup_list() -> None:
    """The sets (oldest first) and the archived WAL: any moment after a set's
    finished_at up to the newest archived segment can be restored."""
    settings = config.load()
    segments = service.archived_segments(settings)
    click.echo(
        json.dumps(
            {
                "backup_dir": str(settings.backup_dir),
                "sets": [_describe(s) for s in service.sets(settings)],
                "wal": {
                    "segments": len(segments),
                    "first": segments[0] if segments else None,
                    "last": segments[-1] if segments else None,
                },
            },
            ensure_ascii=False,
            indent=2,
        )
    )


#: Variables that name the source stack's servers; the restored stack derives its own.
_SOURCE_ONLY = (
    "PARKING_DATABASE_URL",
    "PARKING_OWNER_DATABASE_URL",
    "PARKING_REDIS_URL",
    "PARKING_MQTT_PASSWORD",
    "PARKING_MQTT_PLATFORM_PORT",
    "PARKING_JWT_KEY",
    "PARKING_BACKUP_DIR",
    "PARKING_IMAGE_DIR",
    "PARKING_WECHATPAY_CONFIG",
    "PARKING_ALIPAY_CONFIG",
)


def _restored_env(
    into: str, pg_port: int, redis_port: int, mqtt_port: int, platform_port: int
) -> dict[str, str]:
    env = {**os.environ}
    for name in _SOURCE_ONLY:
        env.pop(name, None)
    env.update(
        PARKING_STACK_DIR=into,
        PARKING_PG_PORT=str(pg_port),
        PARKING_REDIS_PORT=str(redis_port),
        PARKING_MQTT_PORT=str(mqtt_port),
        PARKING_MQTT_PLATFORM_PORT=str(platform_port),
    )
    return env


async def _rebuild(settings: config.Settings) -> rebuild.RebuildReport:
    conn = await asyncpg.connect(settings.database_url)
    redis = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        # The restored Redis holds the set's snapshot, older than the target: every
        # shard is replaced with what the restored database says (force: no
        # persister ever read these streams).
        return await rebuild.rebuild(conn, redis, now=SystemClock().now(), force=True)
    finally:
        await redis.aclose()
        await conn.close()


@click.command("restore")
@click.option("--to", "moment", required=True, help="ISO time; without offset Asia/Shanghai")
@click.option("--into", "into", required=True, help="a new (or empty) stack directory")
@click.option("--port-offset", default=100, show_default=True, help="restored ports = source's + N")
@click.option("--pg-port", type=int, default=None)
@click.option("--redis-port", type=int, default=None)
@click.option("--mqtt-port", type=int, default=None)
@click.option("--mqtt-platform-port", type=int, default=None)
def restore(
    moment: str,
    into: str,
    port_offset: int,
    pg_port: int | None,
    redis_port: int | None,
    mqtt_port: int | None,
    mqtt_platform_port: int | None,
) -> None:
    """Restore this stack's backups as they were at --to into a fresh stack directory,
    start it on its own ports and rebuild its occupancy core from the restored database.
    The source stack keeps running untouched."""
    source = config.load()
    env = _restored_env(
        into,
        pg_port or source.pg_port + port_offset,
        redis_port or source.redis_port + port_offset,
        mqtt_port or source.mqtt_port + port_offset,
        mqtt_platform_port or source.mqtt_platform_port + port_offset,
    )
    try:
        target = logic.parse_moment(moment)
        chosen = service.restore(source, target, config.load(env), _log)
        # Secrets were copied into the new directory: load again to reach its servers.
        restored = config.load(env)
        report = asyncio.run(_rebuild(restored))
    except ParkingError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps(
            {
                "restored_to": target.isoformat(),
                "base_backup": chosen.id,
                "stack_dir": str(restored.stack_dir),
                "ports": {
                    "postgres": restored.pg_port,
                    "redis": restored.redis_port,
                    "mqtt": restored.mqtt_port,
                    "mqtt_platform": restored.mqtt_platform_port,
                },
                "occupancy_rebuilt": {
                    "lots": report.lots,
                    "open_sessions": report.open_sessions,
                    "spaces": report.spaces,
                },
                "use": " ".join(
                    f"{k}={env[k]}"
                    for k in sorted(env)
                    if k.startswith("PARKING_")
                    and k
                    in (
                        "PARKING_STACK_DIR",
                        "PARKING_PG_PORT",
                        "PARKING_REDIS_PORT",
                        "PARKING_MQTT_PORT",
                        "PARKING_MQTT_PLATFORM_PORT",
                    )
                )
                + " uv run parking stack env",
            },
            ensure_ascii=False,
            indent=2,
        )
    )
