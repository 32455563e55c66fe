"""The stack's streaming replica of PostgreSQL (``parking stack up --replica``).

A hot standby of the stack's cluster in ``<stack>/postgres-replica`` on
``PARKING_PG_REPLICA_PORT``: made once with ``pg_basebackup -R`` (WAL streamed
from the primary as the owner role, which initdb made a superuser; the default
``pg_hba.conf`` admits replication from 127.0.0.1 with a password), then started
and stopped like the primary. The dashboard's figures are read there when
``PARKING_REPLICA_DATABASE_URL`` points at it (``api.infra.on_replica``).
"""

from __future__ import annotations

import os
import subprocess

from parking.config import DB_USER, Settings
from parking.errors import StackError
from parking.stack.binaries import Binaries
from parking.stack.servers import _READY_TIMEOUT_S, Log, Postgres, _pid_alive, _port_free


class PostgresReplica:
    def __init__(self, settings: Settings, bins: Binaries, log: Log) -> None:
        self.settings = settings
        self.bins = bins
        self.log = log
        self.primary = Postgres(settings, bins, log)
        self.root = settings.stack_dir / "postgres-replica"
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"

    @property
    def port(self) -> int:
        return self.settings.pg_replica_port

    def running(self) -> bool:
        return _pid_alive(self.data / "postmaster.pid") is not None

    def up(self, password: str) -> None:
        """Make the replica once (the primary must run), then start it (idempotent)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.primary._chown(self.root)
        if not (self.data / "PG_VERSION").exists():
            self.log("postgres replica: base backup from the primary")
            made = subprocess.run(
                self.primary._as_owner(
                    [
                        str(self.bins.pg_basebackup),
                        *("-h", "127.0.0.1", "-p", str(self.settings.pg_port)),
                        *("-U", DB_USER, "-D", str(self.data)),
                        "--write-recovery-conf",
                        "--wal-method=stream",
                        "--checkpoint=fast",
                    ]
                ),
                env={**os.environ, "PGPASSWORD": password},
                capture_output=True,
                text=True,
                check=False,
            )
            if made.returncode != 0:
                raise StackError(f"pg_basebackup failed: {made.stderr.strip()}")
        self.start()

    def start(self) -> None:
        if self.running():
            self.log(f"postgres replica: already running on {self.port}")
            return
        if not _port_free(self.port):
            raise StackError(f"port {self.port} is taken by another program")
        open(self.logfile, "a").close()
        self.primary._chown(self.logfile)
        self.log(f"postgres replica: starting on {self.port}")
        started = subprocess.run(
            self.primary._as_owner(
                [
                    str(self.bins.pg_ctl),
                    *("-D", str(self.data), "-l", str(self.logfile)),
                    *("-o", f"-p {self.port}"),
                    *("-w", "-t", str(int(_READY_TIMEOUT_S)), "start"),
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            raise StackError(
                f"the replica did not start: {started.stderr.strip()} (see {self.logfile})"
            )

    def down(self) -> None:
        if not self.running():
            return
        self.log("postgres replica: stopping")
        subprocess.run(
            self.primary._as_owner(
                [str(self.bins.pg_ctl), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )
