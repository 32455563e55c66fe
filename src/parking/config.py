"""Process settings: one frozen object built from ``PARKING_*`` environment variables.

Every variable has a default that points at the local stack (``parking stack up``),
so a newcomer needs no configuration at all. Connection URLs left unset are derived
from the stack directory, its ports and the secrets file the stack generated there;
set them explicitly to point the platform at other servers.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import msgspec

#: (name, default, meaning) — the README's configuration table is generated from this.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("PARKING_STACK_DIR", ".parking/dev", "data, logs and secrets of the local stack"),
    ("PARKING_PG_PORT", "55432", "PostgreSQL port of the local stack"),
    ("PARKING_REDIS_PORT", "56379", "Redis port of the local stack"),
    ("PARKING_MQTT_PORT", "51883", "Mosquitto port of the local stack"),
    ("PARKING_DATABASE_URL", "(from the stack)", "PostgreSQL URL"),
    ("PARKING_REDIS_URL", "(from the stack)", "Redis URL"),
    ("PARKING_MQTT_HOST", "127.0.0.1", "broker host"),
    ("PARKING_MQTT_USERNAME", "platform", "broker user of the platform's processes"),
    ("PARKING_MQTT_PASSWORD", "(from the stack)", "broker password of that user"),
    ("PARKING_TOPIC_PREFIX", "parking/v1", "MQTT topic prefix"),
    ("PARKING_API_HOST", "127.0.0.1", "address the API listens on"),
    ("PARKING_API_PORT", "8000", "port the API listens on"),
    ("PARKING_API_WORKERS", "1", "API worker processes"),
    ("PARKING_SANDBOX_PORT", "8090", "port of the sandbox payment provider (`make run`)"),
    (
        "PARKING_WECHATPAY_CONFIG",
        "(the sandbox's merchant.json)",
        "WeChat Pay merchant config file (JSON: mchid, keys, base_url)",
    ),
    ("PARKING_ALIPAY_CONFIG", "(unset: no Alipay)", "Alipay app config file (JSON)"),
    (
        "PARKING_NOTIFY_BASE_URL",
        "(http://API host:port)",
        "public base URL providers post notifications to",
    ),
    ("PARKING_JWT_KEY", "(from the stack)", "HMAC key that signs the API's access tokens"),
    ("PARKING_LOG_LEVEL", "info", "debug, info, warning or error"),
    ("PARKING_LOG_FORMAT", "json", "json (production) or console (human)"),
    ("PARKING_CITY_SEED", "20261127", "seed of the synthetic city"),
    (
        "PARKING_METRICS_ALLOW",
        "127.0.0.1/32,::1/128",
        "client networks (comma-separated) that may read the API's `/metrics`; others get 404",
    ),
    (
        "PARKING_QUOTE_LIMIT_PER_MINUTE",
        "60",
        "quotes (`POST /v1/tariffs/quote`) one caller may ask for per minute",
    ),
)

DB_NAME = "parking"
DB_USER = "parking"


class Secrets(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Passwords the stack generated on first start; kept under the stack dir, never in git."""

    postgres: str
    redis: str
    mqtt_platform: str
    #: HMAC key of the API's access tokens; added after the first stacks were made,
    #: so an older secrets file gets one on the next `stack up`.
    jwt: str = ""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    stack_dir: Path
    pg_port: int
    redis_port: int
    mqtt_port: int
    database_url: str
    redis_url: str
    mqtt_host: str
    mqtt_username: str
    mqtt_password: str
    topic_prefix: str
    api_host: str
    api_port: int
    api_workers: int
    sandbox_port: int
    jwt_key: str
    log_level: str
    log_format: str
    city_seed: int
    #: networks whose clients may read /metrics (ip_network strings)
    metrics_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    quote_limit_per_minute: int = 60

    @property
    def secrets_path(self) -> Path:
        return self.stack_dir / "secrets.json"


def read_secrets(stack_dir: Path) -> Secrets | None:
    path = stack_dir / "secrets.json"
    if not path.exists():
        return None
    return msgspec.json.decode(path.read_bytes(), type=Secrets)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    defaults = {name: default for name, default, _ in VARIABLES}

    def get(name: str) -> str:
        return env.get(name) or defaults[name]

    stack_dir = Path(get("PARKING_STACK_DIR")).resolve()
    pg_port = int(get("PARKING_PG_PORT"))
    redis_port = int(get("PARKING_REDIS_PORT"))
    secrets = read_secrets(stack_dir)
    pg_password = secrets.postgres if secrets else ""
    redis_password = secrets.redis if secrets else ""
    database_url = env.get("PARKING_DATABASE_URL") or (
        f"postgresql://{DB_USER}:{quote(pg_password, safe='')}@127.0.0.1:{pg_port}/{DB_NAME}"
    )
    redis_url = env.get("PARKING_REDIS_URL") or (
        f"redis://:{quote(redis_password, safe='')}@127.0.0.1:{redis_port}/0"
    )
    return Settings(
        stack_dir=stack_dir,
        pg_port=pg_port,
        redis_port=redis_port,
        mqtt_port=int(get("PARKING_MQTT_PORT")),
        database_url=database_url,
        redis_url=redis_url,
        mqtt_host=get("PARKING_MQTT_HOST"),
        mqtt_username=get("PARKING_MQTT_USERNAME"),
        mqtt_password=env.get("PARKING_MQTT_PASSWORD")
        or (secrets.mqtt_platform if secrets else ""),
        topic_prefix=get("PARKING_TOPIC_PREFIX"),
        api_host=get("PARKING_API_HOST"),
        api_port=int(get("PARKING_API_PORT")),
        api_workers=int(get("PARKING_API_WORKERS")),
        sandbox_port=int(get("PARKING_SANDBOX_PORT")),
        jwt_key=env.get("PARKING_JWT_KEY") or (secrets.jwt if secrets else ""),
        log_level=get("PARKING_LOG_LEVEL"),
        log_format=get("PARKING_LOG_FORMAT"),
        city_seed=int(get("PARKING_CITY_SEED")),
        metrics_allow=_networks(get("PARKING_METRICS_ALLOW")),
        quote_limit_per_minute=int(get("PARKING_QUOTE_LIMIT_PER_MINUTE")),
    )


def _networks(text: str) -> tuple[str, ...]:
    """Comma-separated networks (or single addresses), each checked and normalised."""
    return tuple(
        str(ipaddress.ip_network(part.strip(), strict=False))
        for part in text.split(",")
        if part.strip()
    )


def describe(settings: Settings) -> str:
    """Settings as JSON with passwords masked, for logs and ``parking stack status``."""
    raw = msgspec.to_builtins(settings)
    raw["mqtt_password"] = "***" if raw["mqtt_password"] else ""
    raw["jwt_key"] = "***" if raw["jwt_key"] else ""
    for key in ("database_url", "redis_url"):
        raw[key] = _mask_url(raw[key])
    return json.dumps(raw, ensure_ascii=False, indent=2)


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
