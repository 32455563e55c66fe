"""``parking config check``: refuse settings a production platform must not run with.

Every default points at the local stack (``make run`` needs no configuration), so
a production host that forgot a variable would quietly run on development
choices. The check names each one, one line per problem, and exits non-zero;
the systemd units run it before migrating (``deploy/systemd``). It checks
values, and the files they name when present; it cannot prove a provider's
keys are the right ones.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import click

from parking import config

#: Words a value still holding the example's placeholder contains.
_PLACEHOLDERS = ("change-me", "changeme")
#: Shortest acceptable signing key (HMAC-SHA256 wants at least 32 bytes of entropy).
_MIN_KEY_CHARS = 32
_SECRETS = ("PARKING_JWT_KEY", "PARKING_MQTT_PASSWORD")
_URLS_WITH_PASSWORDS = ("PARKING_DATABASE_URL", "PARKING_OWNER_DATABASE_URL", "PARKING_REDIS_URL")


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _stack_secrets(settings: config.Settings) -> set[str]:
    secret = config.read_secrets(settings.stack_dir)
    if secret is None:
        return set()
    return {
        v
        for v in (
            secret.postgres,
            secret.postgres_app,
            secret.redis,
            secret.mqtt_platform,
            secret.jwt,
        )
        if v
    }


def problems(env: Mapping[str, str]) -> list[str]:
    """One line per thing that must change before ``env`` runs in production."""
    try:
        settings = config.load(env)
    except (config.ConfigError, ValueError) as exc:
        return [f"configuration does not load: {exc}"]
    out: list[str] = []
    generated = _stack_secrets(settings)
    for name in (*_SECRETS, *_URLS_WITH_PASSWORDS):
        value = env.get(name, "")
        if not value:
            out.append(f"{name} is unset: the local stack's generated value would be used")
        elif any(p in value.lower() for p in _PLACEHOLDERS):
            out.append(f"{name} still holds the example's placeholder")
        elif any(s in value for s in generated):
            out.append(f"{name} holds a secret of the local stack ({settings.stack_dir})")
    if env.get("PARKING_JWT_KEY") and len(env["PARKING_JWT_KEY"]) < _MIN_KEY_CHARS:
        out.append(f"PARKING_JWT_KEY is shorter than {_MIN_KEY_CHARS} characters")
    if settings.notifier == "local":
        out.append("PARKING_NOTIFIER=local writes login codes to files: set the SMS notifier")
    sandbox = settings.stack_dir / "sandbox-pay"
    if not env.get("PARKING_WECHATPAY_CONFIG") or settings.wechatpay_config.is_relative_to(sandbox):
        out.append("PARKING_WECHATPAY_CONFIG is the sandbox provider's: set the merchant's config")
    elif settings.wechatpay_config.is_file():
        base = str(json.loads(settings.wechatpay_config.read_text()).get("base_url", ""))
        parts = urlsplit(base)
        if parts.scheme != "https" or _loopback(parts.hostname or ""):
            out.append(f"PARKING_WECHATPAY_CONFIG's base_url {base!r} is not the provider (https)")
    alipay = settings.alipay_config
    if (
        alipay is not None
        and alipay.is_relative_to(sandbox)
        and (alipay.exists() or not env.get("PARKING_ALIPAY_CONFIG"))
    ):
        out.append(
            "PARKING_ALIPAY_CONFIG is the sandbox's: set the app's config "
            "(or a path that does not exist: no Alipay)"
        )
    for network in settings.metrics_allow:
        net = ipaddress.ip_network(network)
        if not (net.is_private or net.is_loopback):
            out.append(f"PARKING_METRICS_ALLOW includes {network}: /metrics would be public")
    for name, url in (
        ("PARKING_NOTIFY_BASE_URL", settings.notify_base_url),
        ("PARKING_PUBLIC_BASE_URL", settings.public_base_url),
    ):
        parts = urlsplit(url)
        if parts.scheme != "https" or _loopback(parts.hostname or ""):
            out.append(f"{name}={url} is not a public https address")
    db = urlsplit(settings.database_url)
    if db.username == config.DB_USER:
        out.append(
            f"PARKING_DATABASE_URL connects as the schema owner {config.DB_USER!r}: "
            f"use {config.APP_DB_USER!r} (ledger rows insert-only)"
        )
    for name, url in (("PARKING_DATABASE_URL", settings.database_url),):
        parts = urlsplit(url)
        mode = parse_qs(parts.query).get("sslmode", [""])[0]
        if not _loopback(parts.hostname or "") and mode not in (
            "require",
            "verify-ca",
            "verify-full",
        ):
            out.append(f"{name} reaches {parts.hostname} without sslmode=verify-full (or require)")
    redis = urlsplit(settings.redis_url)
    if not _loopback(redis.hostname or "") and redis.scheme != "rediss":
        out.append(f"PARKING_REDIS_URL reaches {redis.hostname} without TLS (rediss://)")
    if settings.log_format != "json":
        out.append("PARKING_LOG_FORMAT must be json (one object per line for the log shipper)")
    if settings.log_level == "debug":
        out.append("PARKING_LOG_LEVEL=debug: production logs at info or above")
    out.extend(
        f"{name} is set: fault injection for tests only"
        for name in ("PARKING_GATEWAY_CRASH_AFTER", "PARKING_PERSISTER_CRASH_AFTER")
        if env.get(name)
    )
    if not env.get("PARKING_BACKUP_DIR") or settings.backup_dir.is_relative_to(settings.stack_dir):
        out.append("PARKING_BACKUP_DIR is inside the stack directory: keep backups on another disk")
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile reads them (# comments, quotes)."""
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@click.group("config")
def config_group() -> None:
    """The platform's settings."""


@config_group.command("check")
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="check these files' variables instead of the environment (later files win)",
)
def check(env_files: Sequence[Path]) -> None:
    """Fail, one line per problem, on settings a production platform must not run with."""
    env: dict[str, str] = {}
    if env_files:
        for path in env_files:
            env.update(read_env_file(path))
    else:
        env = {**os.environ}
    found = problems(env)
    for line in found:
        click.echo(line)
    if found:
        sys.exit(1)
    click.echo("ok: nothing a production platform must not run with")
