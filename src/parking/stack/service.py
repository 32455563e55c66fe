"""Use cases of the local stack: up, down, status, env."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable

from parking.config import APP_DB_USER, DB_NAME, Settings
from parking.devices.messages import Topics
from parking.devices.service import Broker
from parking.stack import binaries
from parking.stack.archiving import archive_conf, write_archive_conf
from parking.stack.cluster import RedisCluster
from parking.stack.replica import PostgresReplica
from parking.stack.servers import Mosquitto, Postgres, Redis, ensure_secrets

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def up(
    settings: Settings,
    log: Log = _stderr,
    *,
    backups: bool = False,
    redis_cluster: bool = False,
    replica: bool = False,
) -> None:
    """Start every server (idempotent) and wait until each one answers.

    With ``backups`` PostgreSQL archives every WAL segment into
    ``<backup dir>/wal`` from now on (a restart when that is new); the setting stays
    in the cluster, so a later ``up`` without it keeps archiving.

    With ``redis_cluster`` the six-node Redis Cluster starts too (`stack.cluster`),
    with ``replica`` a streaming replica of PostgreSQL (`stack.replica`).
    """
    bins = binaries.ensure(log=log)
    secret = ensure_secrets(settings)
    postgres = Postgres(settings, bins, log)
    postgres.up(secret.postgres, secret.postgres_app)
    if backups:
        wal = settings.backup_dir / "wal"
        wal.mkdir(parents=True, exist_ok=True)
        # As root the server runs as postgres, which must pass through the backup
        # directory (not list it: base sets hold secrets) and write the archive.
        settings.backup_dir.chmod(0o711)
        postgres.own_tree(wal)
        if write_archive_conf(postgres, archive_conf(wal)):
            log(f"postgres: archiving WAL into {wal}")
            postgres.restart()
    if replica:
        PostgresReplica(settings, bins, log).up(secret.postgres)
    Redis(settings, bins, log).up(secret.redis)
    if redis_cluster:
        RedisCluster(settings, bins, log).up(secret.redis)
    Mosquitto(settings, bins, log).up(secret.mqtt_platform)
    log(f"ready: {settings.stack_dir}")


def down(settings: Settings, log: Log = _stderr) -> None:
    bins = binaries.ensure(log=log)
    secret = ensure_secrets(settings)
    Mosquitto(settings, bins, log).down()
    RedisCluster(settings, bins, log).down(secret.redis)
    Redis(settings, bins, log).down(secret.redis)
    PostgresReplica(settings, bins, log).down()
    Postgres(settings, bins, log).down()


def status(settings: Settings) -> dict[str, object]:
    bins = binaries.ensure(log=_stderr)
    return {
        "stack_dir": str(settings.stack_dir),
        "postgres": {
            "running": Postgres(settings, bins, _stderr).running(),
            "port": settings.pg_port,
        },
        "postgres_replica": {
            "running": PostgresReplica(settings, bins, _stderr).running(),
            "port": settings.pg_replica_port,
        },
        "redis": {"running": Redis(settings, bins, _stderr).running(), "port": settings.redis_port},
        "redis_cluster": {
            "running": RedisCluster(settings, bins, _stderr).running(),
            "ports": RedisCluster(settings, bins, _stderr).ports(),
        },
        "mosquitto": {
            "running": Mosquitto(settings, bins, _stderr).running(),
            "port": settings.mqtt_port,
        },
    }


def env_lines(settings: Settings) -> list[str]:
    """``export`` lines for psql, redis-cli, mosquitto_pub and the ``parking`` CLI."""
    secret = ensure_secrets(settings)
    values = {
        "PARKING_STACK_DIR": str(settings.stack_dir),
        "PARKING_PG_PORT": str(settings.pg_port),
        "PARKING_REDIS_PORT": str(settings.redis_port),
        "PARKING_MQTT_PORT": str(settings.mqtt_port),
        "PARKING_MQTT_PLATFORM_PORT": str(settings.mqtt_platform_port),
        # The app role: a console that can read everything and cannot edit the
        # ledger. The owner's URL (migrations) stays in secrets.json.
        "PARKING_DATABASE_URL": settings.database_url,
        "PARKING_REDIS_URL": settings.redis_url,
        "PARKING_MQTT_HOST": settings.mqtt_host,
        # libpq reads these, so a bare `psql` lands in the platform database.
        "PGHOST": "127.0.0.1",
        "PGPORT": str(settings.pg_port),
        "PGUSER": APP_DB_USER,
        "PGDATABASE": DB_NAME,
        "PGPASSWORD": secret.postgres_app,
        # redis-cli reads the password from here: `redis-cli -p $PARKING_REDIS_PORT`.
        "REDISCLI_AUTH": secret.redis,
        # For mosquitto_pub/sub: -h $MQTT_HOST -p $MQTT_PORT -u $MQTT_USER -P $MQTT_PASSWORD
        "MQTT_HOST": settings.mqtt_host,
        "MQTT_PORT": str(settings.mqtt_port),
        "MQTT_USER": settings.mqtt_username,
        "MQTT_PASSWORD": secret.mqtt_platform,
    }
    return [f"export {key}={shlex.quote(value)}" for key, value in values.items()]


def mosquitto_broker(settings: Settings) -> Broker:
    """The local stack's Mosquitto as the device registry's broker, with the platform
    user from the settings (the registry writes its password and ACL files)."""

    def quiet(_: str) -> None:
        return None

    return Broker(
        files=Mosquitto(settings, binaries.ensure(log=quiet), quiet),
        topics=Topics(settings.topic_prefix),
        platform_username=settings.mqtt_username,
        platform_password=settings.mqtt_password,
        host=settings.mqtt_host,
        port=settings.mqtt_port,
    )
