"""WAL archiving, base backups and recovery settings of the stack's PostgreSQL.

The settings live in ``parking-backups.conf`` in the data directory (included by
postgresql.conf): ``parking stack up --backups`` writes the archiving ones,
``parking restore`` the recovery ones into a restored cluster.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from parking.config import DB_USER
from parking.errors import StackError
from parking.stack.servers import ARCHIVE_CONF, Postgres


def _conf_string(value: str) -> str:
    """``value`` as a postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _shell_path(path: Path) -> str:
    # PostgreSQL expands %-escapes in archive and restore commands: a literal % is %%.
    return shlex.quote(str(path)).replace("%", "%%")


def archive_conf(wal_dir: Path) -> str:
    """Settings that copy every completed WAL segment into ``wal_dir``.

    A segment already there is accepted again only if it is the same (a retry after
    a crash between copy and acknowledgement), never overwritten; the copy lands
    under a temporary name and is renamed, so a restore never reads half a file.
    """
    d = _shell_path(wal_dir)
    command = (
        f"if [ -f {d}/%f ]; then cmp -s %p {d}/%f; "
        f"else cp %p {d}/%f.part && mv {d}/%f.part {d}/%f; fi"
    )
    return (
        "# written by `parking stack up --backups`\n"
        "wal_level = replica\n"
        "archive_mode = on\n"
        f"archive_command = {_conf_string(command)}\n"
        # A quiet hour still reaches the archive within a minute (the recovery point
        # objective); segments are only switched when something was written.
        "archive_timeout = 60\n"
        "wal_compression = on\n"
    )


def recovery_conf(wal_dir: Path, target: str) -> str:
    """Settings of a cluster restored from a base backup: replay archived WAL up to
    ``target`` (an ISO timestamp with offset), then open for writes. It archives
    nothing: the restored cluster must never write into the source's archive."""
    command = f"cp {_shell_path(wal_dir)}/%f %p"
    return (
        "# written by `parking restore`\n"
        "archive_mode = off\n"
        f"restore_command = {_conf_string(command)}\n"
        f"recovery_target_time = {_conf_string(target)}\n"
        "recovery_target_action = 'promote'\n"
    )


RESTORED_CONF = "# written by `parking restore`: no archiving until `parking stack up --backups`\n"


def base_backup(pg: Postgres, password: str, into: Path, label: str) -> None:
    """A plain-format base backup with the WAL it needs (streamed), then verified."""
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    result = subprocess.run(
        [
            str(pg.bins.pg_basebackup),
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.settings.pg_port),
            "-U",
            DB_USER,
            "-D",
            str(into),
            "--format=plain",
            "--wal-method=stream",
            # An immediate checkpoint: the backup starts now rather than at the
            # next scheduled one (up to checkpoint_timeout away).
            "--checkpoint=fast",
            f"--label={label}",
            "--no-password",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"pg_basebackup failed: {result.stderr.strip()}")
    verified = subprocess.run(
        [str(pg.bins.pg_verifybackup), "--quiet", str(into)],
        capture_output=True,
        text=True,
        check=False,
    )
    if verified.returncode != 0:
        raise StackError(f"pg_verifybackup refused {into}: {verified.stderr.strip()}")


def write_archive_conf(pg: Postgres, text: str) -> bool:
    """Make ``parking-backups.conf`` hold ``text``; True when it changed. Clusters made
    before the include line existed get it appended once."""
    conf = pg.data / "postgresql.conf"
    include = f"include_if_exists = '{ARCHIVE_CONF}'"
    if include not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n# written by `parking stack up --backups`\n{include}\n")
    path = pg.data / ARCHIVE_CONF
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    pg.own_tree(path)
    return True
