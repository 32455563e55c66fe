"""Process settings: one frozen object built from ``PARKING_*`` environment variables.

Every variable has a default that points at the local stack (``parking stack up``),
so a newcomer needs no configuration at all. Connection URLs left unset are derived
from the stack directory, its ports and the secrets file the stack generated there;
set them explicitly to point the platform at other servers. Kept whole (over 600
lines): the one module that reads the environment, its table beside its parsing.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec

#: (name, default, meaning) — the README's configuration table is generated from this.
VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("PARKING_STACK_DIR", ".parking/dev", "data, logs and secrets of the local stack"),
    ("PARKING_PG_PORT", "25432", "PostgreSQL port of the local stack"),
    ("PARKING_REDIS_PORT", "26379", "Redis port of the local stack"),
    ("PARKING_MQTT_PORT", "21883", "Mosquitto port of the local stack (devices)"),
    (
        "PARKING_MQTT_PLATFORM_PORT",
        "(PARKING_MQTT_PORT + 10000)",
        "Mosquitto port of the platform's own processes (no device account is valid there)",
    ),
    (
        "PARKING_DATABASE_URL",
        "(from the stack)",
        "PostgreSQL URL of the platform's processes (the app role: ledger rows insert-only)",
    ),
    (
        "PARKING_OWNER_DATABASE_URL",
        "(the database URL as the owner)",
        "PostgreSQL URL of the schema owner: `parking db migrate`, `parking run`'s migration",
    ),
    (
        "PARKING_PG_REPLICA_PORT",
        "(PARKING_PG_PORT + 1)",
        "port of the stack's streaming replica of PostgreSQL (`parking stack up --replica`)",
    ),
    (
        "PARKING_REPLICA_DATABASE_URL",
        "(none)",
        "PostgreSQL URL of a streaming replica: the dashboard's figures are read there "
        "(the primary whenever it does not answer)",
    ),
    ("PARKING_REDIS_URL", "(from the stack)", "Redis URL (with the cluster: any one node's)"),
    (
        "PARKING_REDIS_CLUSTER",
        "0",
        "1: every process uses the stack's Redis Cluster (`parking stack up --redis-cluster`)",
    ),
    (
        "PARKING_REDIS_CLUSTER_PORT",
        "(PARKING_REDIS_PORT + 1)",
        "first of the six ports of that cluster's nodes; their bus ports are these + 20",
    ),
    ("PARKING_MQTT_HOST", "127.0.0.1", "broker host"),
    (
        "PARKING_MQTT_USERNAME",
        "platform",
        "broker user of the operators' console; each process is `<it>-<process>`",
    ),
    (
        "PARKING_MQTT_PASSWORD",
        "(from the stack)",
        "broker password of that user; each process's is derived from it",
    ),
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
    (
        "PARKING_ALIPAY_CONFIG",
        "(the sandbox's alipay.json)",
        "Alipay app config file (JSON: app_id, keys, gateway_url); no Alipay when it is missing",
    ),
    (
        "PARKING_NOTIFY_BASE_URL",
        "(http://API host:port)",
        "public base URL providers post notifications to",
    ),
    ("PARKING_JWT_KEY", "(from the stack)", "HMAC key that signs the API's access tokens"),
    (
        "PARKING_NOTIFIER",
        "local",
        "how login codes reach drivers; `local` writes them under the stack dir (local stack only)",
    ),
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
    (
        "PARKING_GATEWAY_CLIENT_ID",
        "gateway-1",
        "the gateway's MQTT client id: stable across restarts, different for each gateway",
    ),
    (
        "PARKING_GATEWAY_SESSION_EXPIRY",
        "15",
        "seconds the broker keeps a gone gateway's session (it takes its share of traffic "
        "until then)",
    ),
    (
        "PARKING_PERSISTER_CONSUMER",
        "persister-1",
        "the persister's consumer name in the streams' group: stable, different for each",
    ),
    (
        "PARKING_PERSISTER_RECLAIM_IDLE_MS",
        "30000",
        "a persister claims another's pending entries after they were idle this long",
    ),
    (
        "PARKING_PERSISTER_MAX_DELIVERIES",
        "5",
        "an entry still not written after this many deliveries is dead-lettered",
    ),
    (
        "PARKING_RUN_ONLY",
        "(all)",
        "`parking run` starts only these children (comma-separated, e.g. `api,sandbox-pay`)",
    ),
    (
        "PARKING_GATEWAY_CRASH_AFTER",
        "(unset)",
        "fault-injection tests only: the gateway exits after this many applied events",
    ),
    (
        "PARKING_PERSISTER_CRASH_AFTER",
        "(unset)",
        "fault-injection tests only: the persister exits after this many written entries",
    ),
    (
        "PARKING_FEE_RATES",
        "wechat=0.60%,alipay=0.60%",
        "each provider's contracted fee rate; a statement fee off it by over 1 fen is a "
        "`fee_mismatch`",
    ),
    (
        "PARKING_STREAM_MAX_SECONDS",
        "300",
        "a `/v1/city/stream` connection ends after this long (the browser reconnects at once)",
    ),
    (
        "PARKING_PUBLIC_BASE_URL",
        "(http://API host:port)",
        "where the platform is reached from a phone: printed QR codes are "
        "`<this>/q/<token>` and open the driver's page there",
    ),
    (
        "PARKING_DEVICE_SILENT_AFTER_S",
        "1800",
        "a device not heard from for this many seconds is silent: reported as an anomaly "
        "and counted offline in the city's device online rate",
    ),
    (
        "PARKING_ROLLUP_EVERY_S",
        "30",
        "how often `parking run`'s rollup job refreshes the city's hourly and daily figures",
    ),
    (
        "PARKING_CASES_EVERY_S",
        "30",
        "how often `parking run`'s clock job escalates 码上反映 cases whose clocks ran out",
    ),
    (
        "PARKING_RETENTION",
        "passages_months=6,sensor_months=3,dead_letter_days=90,plate_months=36,hot_months=2,"
        "audit_hot_months=12",
        "how long each kind of data lives (docs/privacy.md); the job "
        "`parking retention apply` removes or pseudonymises what is past it",
    ),
    (
        "PARKING_ARCHIVE_DIR",
        "(<stack dir>/archive)",
        "where the retention job moves months of passages and sensor readings older "
        "than `hot_months`, of the audit log older than `audit_hot_months` and of "
        "finished sessions past `plate_months` (gzip'd CSV, one file per month)",
    ),
    (
        "PARKING_RETENTION_EVERY_S",
        "21600",
        "how often `parking run`'s retention job runs",
    ),
    (
        "PARKING_CASES_NOTIFY_CONFIG",
        "(none: local only)",
        "码上反映's SMS and WeChat template-message channels and contacts (JSON, see "
        "docs/cases.md); unset, notifications are only logged and kept in "
        "`case_notifications`",
    ),
    (
        "PARKING_RECONCILE_AT",
        "10:00",
        "time of day (Asia/Shanghai) after which `parking run`'s reconciler fetches and "
        "reconciles the day before",
    ),
    (
        "PARKING_CAMERA_HOST",
        "127.0.0.1",
        "address the camera adapter (`parking cameras serve`) listens on for cameras' pushes",
    ),
    ("PARKING_CAMERA_PORT", "8030", "port the camera adapter listens on"),
    (
        "PARKING_CAMERA_PUBLIC_URL",
        "(http://camera host:port)",
        "the camera adapter's address as cameras reach it: `parking devices add --vendor` "
        "prints push URLs under it",
    ),
    (
        "PARKING_CAMERA_TLS",
        "(none: plain HTTP)",
        "`CERT_FILE,KEY_FILE` (PEM): the camera adapter serves HTTPS, for cameras that push "
        "over SSL",
    ),
    (
        "PARKING_IMAGE_DIR",
        "(<stack dir>/images)",
        "where cameras' pictures are kept (content-addressed files, a folder per day)",
    ),
    (
        "PARKING_IMAGE_RETENTION_DAYS",
        "180",
        "days a camera picture is kept; older days are removed by the camera adapter",
    ),
    (
        "PARKING_BACKUP_DIR",
        "(<stack dir>/backups)",
        "where `parking backup` keeps base backups, archived WAL and copies of Redis, the "
        "broker's files and secrets; put it on another disk (`docs/operations.md`)",
    ),
)


class ConfigError(ValueError):
    """A setting (an environment variable) has a value the platform cannot use."""


DB_NAME = "parking"
#: The cluster's superuser and owner of the schema: migrations, and the test
#: harness's CREATE DATABASE. Never used by a running platform process.
DB_USER = "parking"
#: The role every platform process connects as. It owns nothing, so it cannot
#: ALTER, DISABLE TRIGGER or TRUNCATE; on ledger tables it may only INSERT and
#: SELECT (migrations/0012_app_role.sql grants exactly that).
APP_DB_USER = "parking_app"


class Secrets(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Passwords the stack generated on first start; kept under the stack dir, never in git."""

    postgres: str
    redis: str
    #: password of APP_DB_USER; added after the first stacks were made, so an
    #: older secrets file gets one on the next `stack up`.
    postgres_app: str = ""
    mqtt_platform: str
    #: HMAC key of the API's access tokens; added after the first stacks were made,
    #: so an older secrets file gets one on the next `stack up`.
    jwt: str = ""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    stack_dir: Path
    pg_port: int
    redis_port: int
    mqtt_port: int
    mqtt_platform_port: int
    database_url: str
    owner_database_url: str
    #: the stack's streaming replica (`parking stack up --replica`)
    pg_replica_port: int
    #: where the dashboard's figures are read ("" = the primary)
    replica_database_url: str
    redis_url: str
    #: the stack's Redis Cluster: 6 nodes on redis_cluster_port .. + 5
    redis_cluster_port: int
    #: every Redis client talks to the cluster (redis_url names one of its nodes)
    redis_cluster: bool
    mqtt_host: str
    mqtt_username: str
    mqtt_password: str
    topic_prefix: str
    api_host: str
    api_port: int
    api_workers: int
    sandbox_port: int
    jwt_key: str
    notifier: str
    log_level: str
    log_format: str
    city_seed: int
    #: networks whose clients may read /metrics (ip_network strings)
    metrics_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    quote_limit_per_minute: int = 60
    #: WeChat Pay merchant config; the local sandbox's ``merchant.json`` unless set
    wechatpay_config: Path = Path("sandbox-pay/merchant.json")
    #: Alipay app config; the local sandbox's ``alipay.json`` unless set (no Alipay when
    #: the file is missing)
    alipay_config: Path | None = None
    #: where providers post notifications ("" means the API's own address)
    notify_base_url: str = ""
    gateway_client_id: str = "gateway-1"
    gateway_session_expiry: int = 15
    persister_consumer: str = "persister-1"
    persister_reclaim_idle_ms: int = 30_000
    persister_max_deliveries: int = 5
    #: children of ``parking run`` to start; empty: all
    run_only: tuple[str, ...] = ()
    #: fault injection for tests: exit after this many events (None: never)
    gateway_crash_after: int | None = None
    persister_crash_after: int | None = None
    #: provider -> contracted fee rate in parts per million (0.60 % is 6000)
    fee_rates: tuple[tuple[str, int], ...] = (("wechat", 6000), ("alipay", 6000))
    #: (hour, minute), Asia/Shanghai: the reconciler's daily start
    reconcile_at: tuple[int, int] = (10, 0)
    #: seconds a city stream connection lives before the client reconnects
    stream_max_seconds: float = 300.0
    #: printed codes are <public_base_url>/q/<token> (default: the API's own address)
    public_base_url: str = ""
    #: a device not heard from for this long is silent (anomaly; offline in the figures)
    device_silent_after_s: float = 1800.0
    #: the rollup job's period
    rollup_every_s: float = 30.0
    cases_every_s: float = 30.0
    #: ``kind=amount`` pairs, parsed by ``parking.retention`` (its defaults otherwise)
    retention: str = ""
    retention_every_s: float = 21600.0
    #: archived months of passages and sensor readings (``parking.retention``)
    archive_dir: Path = Path(".parking/dev/archive")
    #: 码上反映's notification channels (SMS, WeChat template messages) and contacts;
    #: None: notifications stay in ``case_notifications`` and the log
    cases_notify_config: Path | None = None
    #: the camera adapter's listening address, and as cameras reach it
    camera_host: str = "127.0.0.1"
    camera_port: int = 8030
    camera_public_url: str = "http://127.0.0.1:8030"
    #: (certificate, key) PEM files: the camera adapter serves HTTPS
    camera_tls: tuple[Path, Path] | None = None
    #: cameras' pictures (content-addressed, a folder per day) and how long they stay
    image_dir: Path = Path("images")
    image_retention_days: int = 180
    #: base backups, archived WAL and the other servers' copies (``parking backup``)
    backup_dir: Path = Path("backups")

    def fee_rate_ppm(self, provider: str) -> int:
        """The provider's contracted fee rate; ConfigError when none is configured."""
        rates = dict(self.fee_rates)
        if provider not in rates:
            raise ConfigError(
                f"no fee rate for {provider!r} in PARKING_FEE_RATES ({_rates_text(self.fee_rates)})"
            )
        return rates[provider]

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
    mqtt_port = int(get("PARKING_MQTT_PORT"))
    secrets = read_secrets(stack_dir)
    owner_password = secrets.postgres if secrets else ""
    app_password = secrets.postgres_app if secrets else ""
    redis_password = secrets.redis if secrets else ""
    database_url = env.get("PARKING_DATABASE_URL") or (
        f"postgresql://{APP_DB_USER}:{quote(app_password, safe='')}@127.0.0.1:{pg_port}/{DB_NAME}"
    )
    # The same server and database as the processes use (tests and `parking run`
    # point PARKING_DATABASE_URL at one database), reached as the owner.
    owner_database_url = env.get("PARKING_OWNER_DATABASE_URL") or with_credentials(
        database_url, DB_USER, owner_password
    )
    redis_cluster = get("PARKING_REDIS_CLUSTER") == "1"
    redis_cluster_port = int(env.get("PARKING_REDIS_CLUSTER_PORT") or redis_port + 1)
    redis_url = env.get("PARKING_REDIS_URL") or (
        f"redis://:{quote(redis_password, safe='')}@127.0.0.1:"
        f"{redis_cluster_port if redis_cluster else redis_port}/0"
    )
    return Settings(
        stack_dir=stack_dir,
        pg_port=pg_port,
        redis_port=redis_port,
        mqtt_port=mqtt_port,
        mqtt_platform_port=int(env.get("PARKING_MQTT_PLATFORM_PORT") or mqtt_port + 10_000),
        database_url=database_url,
        owner_database_url=owner_database_url,
        pg_replica_port=int(env.get("PARKING_PG_REPLICA_PORT") or pg_port + 1),
        replica_database_url=env.get("PARKING_REPLICA_DATABASE_URL", ""),
        redis_url=redis_url,
        redis_cluster_port=redis_cluster_port,
        redis_cluster=redis_cluster,
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
        notifier=get("PARKING_NOTIFIER"),
        log_level=get("PARKING_LOG_LEVEL"),
        log_format=get("PARKING_LOG_FORMAT"),
        city_seed=int(get("PARKING_CITY_SEED")),
        metrics_allow=_networks(get("PARKING_METRICS_ALLOW")),
        quote_limit_per_minute=int(get("PARKING_QUOTE_LIMIT_PER_MINUTE")),
        wechatpay_config=Path(
            env.get("PARKING_WECHATPAY_CONFIG") or stack_dir / "sandbox-pay" / "merchant.json"
        ),
        alipay_config=Path(
            env.get("PARKING_ALIPAY_CONFIG") or stack_dir / "sandbox-pay" / "alipay.json"
        ),
        notify_base_url=env.get("PARKING_NOTIFY_BASE_URL")
        or f"http://{get('PARKING_API_HOST')}:{get('PARKING_API_PORT')}",
        gateway_client_id=get("PARKING_GATEWAY_CLIENT_ID"),
        gateway_session_expiry=int(get("PARKING_GATEWAY_SESSION_EXPIRY")),
        persister_consumer=get("PARKING_PERSISTER_CONSUMER"),
        persister_reclaim_idle_ms=int(get("PARKING_PERSISTER_RECLAIM_IDLE_MS")),
        persister_max_deliveries=int(get("PARKING_PERSISTER_MAX_DELIVERIES")),
        run_only=tuple(n for n in env.get("PARKING_RUN_ONLY", "").split(",") if n.strip()),
        gateway_crash_after=_count(env.get("PARKING_GATEWAY_CRASH_AFTER")),
        persister_crash_after=_count(env.get("PARKING_PERSISTER_CRASH_AFTER")),
        fee_rates=_fee_rates(get("PARKING_FEE_RATES")),
        reconcile_at=_time_of_day(get("PARKING_RECONCILE_AT")),
        stream_max_seconds=float(get("PARKING_STREAM_MAX_SECONDS")),
        public_base_url=_public_base_url(
            env.get("PARKING_PUBLIC_BASE_URL"), get("PARKING_API_HOST"), get("PARKING_API_PORT")
        ),
        device_silent_after_s=_positive("PARKING_DEVICE_SILENT_AFTER_S", get),
        rollup_every_s=_positive("PARKING_ROLLUP_EVERY_S", get),
        cases_every_s=_positive("PARKING_CASES_EVERY_S", get),
        retention=get("PARKING_RETENTION"),
        retention_every_s=_positive("PARKING_RETENTION_EVERY_S", get),
        archive_dir=Path(env.get("PARKING_ARCHIVE_DIR") or stack_dir / "archive"),
        cases_notify_config=_path(env.get("PARKING_CASES_NOTIFY_CONFIG")),
        camera_host=get("PARKING_CAMERA_HOST"),
        camera_port=int(get("PARKING_CAMERA_PORT")),
        camera_public_url=_public_url(
            "PARKING_CAMERA_PUBLIC_URL",
            env.get("PARKING_CAMERA_PUBLIC_URL"),
            get("PARKING_CAMERA_HOST"),
            get("PARKING_CAMERA_PORT"),
        ),
        camera_tls=_tls(env.get("PARKING_CAMERA_TLS")),
        image_dir=Path(env.get("PARKING_IMAGE_DIR") or stack_dir / "images"),
        image_retention_days=int(_positive("PARKING_IMAGE_RETENTION_DAYS", get)),
        backup_dir=Path(env.get("PARKING_BACKUP_DIR") or stack_dir / "backups").resolve(),
    )


def _public_url(name: str, text: str | None, host: str, port: str) -> str:
    if not text:
        return f"http://{host}:{port}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name}: {text!r} is not an http(s) URL without query or fragment")
    return text.rstrip("/")


def _tls(text: str | None) -> tuple[Path, Path] | None:
    if not text:
        return None
    cert, sep, key = text.partition(",")
    if not sep or not cert.strip() or not key.strip():
        raise ConfigError(f"PARKING_CAMERA_TLS: {text!r} is not CERT_FILE,KEY_FILE")
    return Path(cert.strip()), Path(key.strip())


def _public_base_url(text: str | None, host: str, port: str) -> str:
    if not text:
        return f"http://{host}:{port}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"PARKING_PUBLIC_BASE_URL: {text!r} is not an http(s) URL without query or fragment"
        )
    return text.rstrip("/")


def _positive(name: str, get: Callable[[str], str]) -> float:
    text = get(name)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a number of seconds") from None
    if not value > 0:
        raise ConfigError(f"{name}: {text!r} must be above 0")
    return value


def _fee_rates(text: str) -> tuple[tuple[str, int], ...]:
    """``wechat=0.60%,alipay=0.55%`` -> ((provider, parts per million), ...)."""
    rates = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        provider, sep, rate = part.partition("=")
        whole, _, fraction = rate.strip().removesuffix("%").partition(".")
        if (
            not sep
            or not provider.strip()
            or not whole.isdigit()
            or len(fraction) > 4
            or (fraction and not fraction.isdigit())
        ):
            raise ConfigError(f"PARKING_FEE_RATES: {part!r} is not provider=rate% (e.g. 0.60%)")
        rates.append((provider.strip(), int(whole) * 10_000 + int((fraction + "0000")[:4])))
    return tuple(rates)


def _rates_text(rates: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{p}={r / 10_000:g}%" for p, r in rates) or "none"


def _time_of_day(text: str) -> tuple[int, int]:
    hour, sep, minute = text.strip().partition(":")
    if not sep or not hour.isdigit() or not minute.isdigit():
        raise ConfigError(f"PARKING_RECONCILE_AT: {text!r} is not HH:MM")
    if not (0 <= int(hour) < 24 and 0 <= int(minute) < 60):
        raise ConfigError(f"PARKING_RECONCILE_AT: {text!r} is not a time of day")
    return int(hour), int(minute)


def _path(text: str | None) -> Path | None:
    return Path(text).resolve() if text else None


def _count(text: str | None) -> int | None:
    return int(text) if text else None


def _networks(text: str) -> tuple[str, ...]:
    """Comma-separated networks (or single addresses), each checked and normalised."""
    return tuple(
        str(ipaddress.ip_network(part.strip(), strict=False))
        for part in text.split(",")
        if part.strip()
    )


#: The platform's processes that connect to the broker, each as its own user.
MQTT_PROCESSES: tuple[str, ...] = ("gateway", "persister", "api")


def mqtt_identity(settings: Settings, process: str) -> tuple[str, str]:
    """(username, password) of ``process`` on the broker's platform listener.

    Each process has its own user, so the broker's log names who did what and a
    process's password opens nothing else; the password is derived from the
    console's (one secret to keep, none written for each process).
    """
    if process not in MQTT_PROCESSES:
        raise ValueError(f"{process!r} is not a platform process on the broker")
    username = f"{settings.mqtt_username}-{process}"
    mac = hmac.new(settings.mqtt_password.encode(), f"changbo/mqtt/{username}".encode(), "sha256")
    return username, base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def mqtt_share_group(settings: Settings, name: str) -> str:
    """The broker-side name of gateway share group ``name``: it carries a tag derived
    from the platform's secret.

    Mosquitto 2.0's ACL file never refuses a SUBSCRIBE (it checks reads only at
    delivery), so a device that subscribed to ``$share/<group>/...`` would join the
    gateways' group and the broker would route a share of every device's passages
    to it, where the read check then drops them. A group name no device can know
    closes that until the broker has a subscribe ACL (a plugin or dynamic security).
    """
    mac = hmac.new(settings.mqtt_password.encode(), f"changbo/mqtt/share/{name}".encode(), "sha256")
    return f"{name}-{mac.hexdigest()[:20]}"


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with its user and password replaced (host, port, database and query kept)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def describe(settings: Settings) -> str:
    """Settings as JSON with passwords masked, for logs and ``parking stack status``."""
    raw = msgspec.to_builtins(settings)
    raw["mqtt_password"] = "***" if raw["mqtt_password"] else ""
    raw["jwt_key"] = "***" if raw["jwt_key"] else ""
    for key in ("database_url", "owner_database_url", "redis_url"):
        raw[key] = _mask_url(raw[key])
    return json.dumps(raw, ensure_ascii=False, indent=2)


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
