"""Start, stop and probe the three servers of the local stack."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from parking.config import (
    APP_DB_USER,
    DB_NAME,
    DB_USER,
    MQTT_PROCESSES,
    Secrets,
    Settings,
    mqtt_identity,
    read_secrets,
)
from parking.devices import broker
from parking.errors import StackError
from parking.stack.binaries import Binaries

Log = Callable[[str], None]

_READY_TIMEOUT_S = 60.0

#: The file of the cluster's data directory that holds WAL archiving and recovery
#: settings; postgresql.conf includes it.
ARCHIVE_CONF = "parking-backups.conf"


def _wait_port(port: int, what: str, timeout: float = _READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise StackError(f"{what} did not open port {port} within {timeout:.0f} s")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def ensure_secrets(settings: Settings) -> Secrets:
    existing = read_secrets(settings.stack_dir)
    if existing is not None and existing.jwt and existing.postgres_app:
        return existing
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    if existing is not None:
        # Secrets added after the first stacks were made; the others stay.
        created = msgspec.structs.replace(
            existing,
            jwt=existing.jwt or secrets.token_urlsafe(32),
            postgres_app=existing.postgres_app or secrets.token_urlsafe(18),
        )
    else:
        created = Secrets(
            postgres=secrets.token_urlsafe(18),
            postgres_app=secrets.token_urlsafe(18),
            redis=secrets.token_urlsafe(18),
            mqtt_platform=secrets.token_urlsafe(18),
            jwt=secrets.token_urlsafe(32),
        )
    path = settings.secrets_path
    path.write_bytes(msgspec.json.encode(created))
    path.chmod(0o600)
    return created


# --------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A PostgreSQL cluster in ``<stack>/postgres``.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the
    ``postgres`` system user that Debian's package creates.
    """

    def __init__(self, settings: Settings, bins: Binaries, log: Log) -> None:
        self.settings = settings
        self.bins = bins
        self.log = log
        self.root = settings.stack_dir / "postgres"
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", "postgres", "--", *argv]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def running(self) -> bool:
        return _pid_alive(self.data / "postmaster.pid") is not None

    def up(self, password: str, app_password: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        if not (self.data / "PG_VERSION").exists():
            self.log("postgres: initdb")
            pwfile = self.root / "pwfile"
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            self._chown(pwfile)
            try:
                subprocess.run(
                    self._as_owner(
                        [
                            str(self.bins.initdb),
                            "-D",
                            str(self.data),
                            f"--username={DB_USER}",
                            f"--pwfile={pwfile}",
                            "--auth=scram-sha-256",
                            "--encoding=UTF8",
                            "--locale=C.UTF-8",
                        ]
                    ),
                    check=True,
                    capture_output=True,
                    text=True,
                )
            except subprocess.CalledProcessError as exc:
                raise StackError(
                    f"initdb failed (is {self.root} reachable by the postgres user?): "
                    f"{exc.stderr.strip()}"
                ) from exc
            finally:
                pwfile.unlink(missing_ok=True)
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# written by `parking stack up`\n"
                    "listen_addresses = '127.0.0.1'\n"
                    # No Unix socket: deep checkout paths overflow sun_path, and
                    # every client here speaks TCP to 127.0.0.1 anyway.
                    "unix_socket_directories = ''\n"
                    "max_connections = 200\n"
                    "shared_buffers = 256MB\n"
                    "timezone = 'UTC'\n"
                    "log_timezone = 'UTC'\n"
                    # WAL archiving and recovery settings (`parking stack up --backups`,
                    # `parking restore`) live in their own file, rewritten whole.
                    f"include_if_exists = '{ARCHIVE_CONF}'\n"
                )
        self.start()
        _wait_port(self.settings.pg_port, "postgres")
        self._create_app_role(password, app_password)
        self._create_database(password)

    def start(self) -> None:
        """Start the cluster unless it runs (in recovery too: ``pg_ctl -w`` returns once
        it accepts read-only connections)."""
        if self.running():
            self.log(f"postgres: already running on {self.settings.pg_port}")
        else:
            if not _port_free(self.settings.pg_port):
                raise StackError(f"port {self.settings.pg_port} is taken by another program")
            self._chown(self.root)
            open(self.logfile, "a").close()
            self._chown(self.logfile)
            self.log(f"postgres: starting on {self.settings.pg_port}")
            result = subprocess.run(
                self._as_owner(
                    [
                        str(self.bins.pg_ctl),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.logfile),
                        "-o",
                        f"-p {self.settings.pg_port}",
                        "-w",
                        "-t",
                        str(int(_READY_TIMEOUT_S)),
                        "start",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(
                    f"postgres did not start: {result.stderr.strip()} (see {self.logfile})"
                )

    def own_tree(self, top: Path) -> None:
        """Hand ``top`` and everything under it to the cluster's owner (as root)."""
        if os.geteuid() != 0:
            return
        self._chown(top)
        for path in top.rglob("*"):
            self._chown(path)

    def restart(self) -> None:
        self.log("postgres: restarting")
        subprocess.run(
            self._as_owner(
                [
                    str(self.bins.pg_ctl),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.logfile),
                    "-o",
                    f"-p {self.settings.pg_port}",
                    "-m",
                    "fast",
                    "-w",
                    "restart",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def query(self, password: str, sql: str) -> str:
        """One statement as the owner in the platform's database; its text output."""
        return self._psql(password, DB_NAME, sql)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _psql(self, password: str, database: str, sql: str) -> str:
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(
            [
                str(self.bins.psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.settings.pg_port),
                "-U",
                DB_USER,
                "-d",
                database,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def _create_database(self, password: str) -> None:
        exists = self._psql(
            # DB_NAME is a constant of ours, not input.
            password,
            "postgres",
            f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'",  # noqa: S608
        )
        if exists != "1":
            self.log(f"postgres: creating database {DB_NAME}")
            self._psql(password, "postgres", f"CREATE DATABASE {DB_NAME}")

    def _create_app_role(self, password: str, app_password: str) -> None:
        """The platform's login role, cluster-wide (so every database cloned from a
        template reaches it); its privileges are granted per database by migration
        0012, which also creates it without a login where no stack did."""
        if not app_password.replace("-", "").replace("_", "").isalnum():
            raise StackError("the app role's password must be URL-safe base64")
        # Both names and the password are ours (a constant, token_urlsafe): no quoting issue.
        self._psql(
            password,
            "postgres",
            f"""DO $$ BEGIN
                  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_DB_USER}') THEN
                      CREATE ROLE {APP_DB_USER};
                  END IF;
                  ALTER ROLE {APP_DB_USER} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                      PASSWORD '{app_password}';
                END $$""",
        )

    def down(self, mode: str = "fast") -> None:
        """Stop the cluster: ``fast`` (sessions rolled back, a checkpoint) or
        ``immediate`` (a crash as far as the data is concerned: recovery on the next
        start; the fault tests' PostgreSQL outage, matrix P1)."""
        if not self.running():
            return
        self.log("postgres: stopping")
        subprocess.run(
            self._as_owner([str(self.bins.pg_ctl), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )


# -------------------------------------------------------------------------- Redis


class Redis:
    def __init__(self, settings: Settings, bins: Binaries, log: Log) -> None:
        self.settings = settings
        self.bins = bins
        self.log = log
        self.root = settings.stack_dir / "redis"
        self.pid_file = self.root / "redis.pid"

    def running(self) -> bool:
        return _pid_alive(self.pid_file) is not None

    def _config(self, password: str) -> str:
        return (
            "# written by `parking stack up`\n"
            "bind 127.0.0.1\n"
            f"port {self.settings.redis_port}\n"
            f"dir {self.root}\n"
            "daemonize yes\n"
            f"pidfile {self.pid_file}\n"
            f"logfile {self.root / 'redis.log'}\n"
            f"requirepass {password}\n"
            # The occupancy core is fast state in front of PostgreSQL: AOF with
            # everysec keeps every acknowledged write through a kill -9 of Redis
            # itself (only an OS crash loses up to ~1 s, which device outboxes
            # re-send). RDB snapshots stay on for fast restarts.
            "appendonly yes\n"
            "appendfsync everysec\n"
            "save 900 1 300 100 60 10000\n"
            # Session and stream keys must never be evicted.
            "maxmemory-policy noeviction\n"
            # DEBUG SLEEP from this machine only: how the fault tests stall Redis
            # (reliability matrix R6). The stack binds to loopback anyway.
            "enable-debug-command local\n"
        )

    def up(self, password: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "redis.conf"
        conf.write_text(self._config(password))
        conf.chmod(0o600)
        if self.running():
            self.log(f"redis: already running on {self.settings.redis_port}")
        else:
            if not _port_free(self.settings.redis_port):
                raise StackError(f"port {self.settings.redis_port} is taken by another program")
            self.log(f"redis: starting on {self.settings.redis_port}")
            subprocess.run([str(self.bins.redis_server), str(conf)], check=True)
        self._wait_ready(password)

    def _cli(self, password: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.bins.redis_cli),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.settings.redis_port),
                *args,
            ],
            env={**os.environ, "REDISCLI_AUTH": password},
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )

    def _wait_ready(self, password: str) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            # PING answers LOADING while the AOF is replayed; wait for PONG.
            if self._cli(password, "PING").stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise StackError(f"redis did not answer PING (see {self.root / 'redis.log'})")

    def _saves(self, password: str) -> tuple[int, bool]:
        """(snapshots taken since start, a snapshot running or scheduled)."""
        fields = dict(
            line.split(":", 1)
            for line in self._cli(password, "INFO", "persistence").stdout.splitlines()
            if ":" in line
        )
        busy = fields.get("rdb_bgsave_in_progress", "0").strip() != "0"
        return int(fields.get("rdb_saves", "0").strip() or 0), busy

    def snapshot(self, password: str, into: Path) -> None:
        """Copy a fresh RDB snapshot to ``into`` (BGSAVE: Redis keeps serving meanwhile)."""
        before, _ = self._saves(password)
        # SCHEDULE: an AOF rewrite in progress delays the save instead of refusing it.
        started = self._cli(password, "BGSAVE", "SCHEDULE")
        if started.returncode != 0 or "ERR" in started.stdout:
            raise StackError(f"redis BGSAVE failed: {started.stdout.strip()} {started.stderr}")
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            saves, busy = self._saves(password)
            if saves > before and not busy:
                break
            if time.monotonic() > deadline:
                raise StackError("redis BGSAVE did not finish in time")
            time.sleep(0.05)
        if "rdb_last_bgsave_status:ok" not in self._cli(password, "INFO", "persistence").stdout:
            raise StackError(f"redis BGSAVE failed (see {self.root / 'redis.log'})")
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.root / "dump.rdb", into)

    def down(self, password: str) -> None:
        if not self.running():
            return
        self.log("redis: stopping")
        self._cli(password, "SHUTDOWN")
        _wait_gone(self.pid_file)


def _wait_gone(pid_file: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid_file) is not None:
        time.sleep(0.1)


# ---------------------------------------------------------------------- Mosquitto


class Mosquitto:
    def __init__(self, settings: Settings, bins: Binaries, log: Log) -> None:
        self.settings = settings
        self.bins = bins
        self.log = log
        self.root = settings.stack_dir / "mosquitto"
        self.pid_file = self.root / "mosquitto.pid"
        self.password_file = self.root / "passwords"
        self.acl_file = self.root / "acl"
        self.platform_password_file = self.root / "platform-passwords"
        self.platform_acl_file = self.root / "platform-acl"

    def running(self) -> bool:
        return _pid_alive(self.pid_file) is not None

    def _config(self) -> str:
        user = "user root\n" if os.geteuid() == 0 else ""
        return (
            "# written by `parking stack up`\n"
            f"{user}"
            f"pid_file {self.pid_file}\n"
            # Two listeners with their own accounts: devices on one, the
            # platform's processes on the other (below).
            "per_listener_settings true\n"
            "persistence true\n"
            f"persistence_location {self.root}/\n"
            "autosave_interval 30\n"
            f"log_dest file {self.root / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "connection_messages true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
            # Manual acks bound a gateway's rate at about inflight / processing
            # time; the default 20 would cap a pipelined gateway far below its
            # Redis throughput, while thousands make paho rescan its in-flight
            # list on every ack. 1000 lets one gateway batch 500+ events.
            "max_inflight_messages 1000\n"
            # The default 1000 silently drops messages for a slow persistent
            # session; a gateway that is down for minutes must find everything
            # queued. 0 = unlimited count, bounded by bytes instead (2 GiB).
            "max_queued_messages 0\n"
            "max_queued_bytes 2147483648\n"
            # Payloads are at most 8 KiB by contract, but a device that sends
            # more must reach the gateway to be dead-lettered, not be cut off
            # silently by the broker; 2 MiB covers the fuzz corpus's 1 MB case.
            "max_packet_size 2097152\n"
            "persistent_client_expiration 7d\n"
            # $SYS counters every 2 s: the fault tests read the dropped-message
            # count (reliability matrix, invariant 5) after each scenario.
            "sys_interval 2\n"
            # Devices (and the operators' console). The client id is the
            # username whatever the client sends: a device cannot take another
            # client's id, so it can neither resume a gateway's persistent
            # session (and its queued deliveries) nor disconnect it.
            f"listener {self.settings.mqtt_port} 127.0.0.1\n"
            "protocol mqtt\n"
            "allow_anonymous false\n"
            "use_username_as_clientid true\n"
            f"password_file {self.password_file}\n"
            f"acl_file {self.acl_file}\n"
            # The platform's processes, each with its own user; they choose
            # their client ids (a gateway's is stable, for its session, and API
            # workers run several publishers). No device account exists here.
            f"listener {self.settings.mqtt_platform_port} 127.0.0.1\n"
            "protocol mqtt\n"
            "allow_anonymous false\n"
            f"password_file {self.platform_password_file}\n"
            f"acl_file {self.platform_acl_file}\n"
        )

    def platform_users(self, console_password: str) -> list[broker.BrokerUser]:
        """The console user and one user per platform process (config.mqtt_identity)."""
        settings = msgspec.structs.replace(self.settings, mqtt_password=console_password)
        processes = [mqtt_identity(settings, process) for process in MQTT_PROCESSES]
        # The console may work under any prefix (tests and simulators use their own).
        console = broker.BrokerUser(
            username=settings.mqtt_username,
            password_hash=broker.hash_password(console_password),
            grants=(("readwrite", "#"), ("read", "$SYS/#")),
        )
        return [
            console,
            *(
                broker.platform_user(name, broker.hash_password(password), settings.topic_prefix)
                for name, password in processes
            ),
        ]

    def write_platform_credentials(self, console_password: str) -> None:
        """The platform listener's files: from the settings alone, so rewritten at every start."""
        self.root.mkdir(parents=True, exist_ok=True)
        users = self.platform_users(console_password)
        broker.write_atomically(self.platform_password_file, broker.render_password_file(users))
        broker.write_atomically(self.platform_acl_file, broker.render_acl_file(users))

    def write_credentials(self, users: list[broker.BrokerUser]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        broker.write_atomically(self.password_file, broker.render_password_file(users))
        broker.write_atomically(self.acl_file, broker.render_acl_file(users))

    def reload(self) -> None:
        """Make a running broker re-read its password and ACL files (no restart)."""
        if (pid := _pid_alive(self.pid_file)) is not None:
            os.kill(pid, signal.SIGHUP)

    def save(self, timeout: float = 10.0) -> bool:
        """Persist now (SIGUSR1; a kill -9 restarts from the file); False if not running."""
        if (pid := _pid_alive(self.pid_file)) is None:
            return False
        db = self.root / "mosquitto.db"
        before = (db.stat().st_ino, db.stat().st_mtime_ns) if db.exists() else None
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                if (db.stat().st_ino, db.stat().st_mtime_ns) != before:
                    return True
            time.sleep(0.02)
        raise StackError(f"mosquitto did not write {db} within {timeout:.0f} s")

    def up(self, platform_password: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "mosquitto.conf"
        wanted = self._config()
        changed = conf.exists() and conf.read_text() != wanted
        conf.write_text(wanted)
        console_password = self.settings.mqtt_password or platform_password
        if not self.password_file.exists():
            user = broker.platform_user(
                self.settings.mqtt_username,
                broker.hash_password(console_password),
                self.settings.topic_prefix,
            )
            self.write_credentials([user])
        self.write_platform_credentials(console_password)
        if self.running() and changed:
            # Listeners are read only at start; clients reconnect, sessions persist.
            self.log("mosquitto: configuration changed, restarting")
            self.down()
        if self.running():
            self.log(f"mosquitto: already running on {self.settings.mqtt_port}")
            self.reload()
        else:
            for port in (self.settings.mqtt_port, self.settings.mqtt_platform_port):
                if not _port_free(port):
                    raise StackError(f"port {port} is taken by another program")
            self.log(
                f"mosquitto: starting on {self.settings.mqtt_port} "
                f"(platform {self.settings.mqtt_platform_port})"
            )
            subprocess.run([str(self.bins.mosquitto), "-c", str(conf), "-d"], check=True)
        _wait_port(self.settings.mqtt_port, "mosquitto")
        _wait_port(self.settings.mqtt_platform_port, "mosquitto")
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while self.pid_file.exists() is False and time.monotonic() < deadline:
            time.sleep(0.05)

    def down(self) -> None:
        pid = _pid_alive(self.pid_file)
        if pid is None:
            return
        self.log("mosquitto: stopping")
        os.kill(pid, signal.SIGTERM)
        _wait_gone(self.pid_file)
