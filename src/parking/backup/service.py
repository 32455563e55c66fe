"""Use cases: take a backup set, list sets, archive the current WAL, restore to a moment.

Synchronous on purpose: each step drives a server binary (pg_basebackup, psql,
redis-cli, pg_ctl) and waits for it; nothing here runs inside the platform's
event loops.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime

from parking.backup import logic, store
from parking.backup.model import BackupError, BackupSet, RestoreRefused
from parking.config import Settings, read_secrets
from parking.errors import StackError
from parking.stack import binaries
from parking.stack import service as stack
from parking.stack.archiving import (
    RESTORED_CONF,
    base_backup,
    recovery_conf,
    write_archive_conf,
)
from parking.stack.servers import Postgres, Redis

Log = Callable[[str], None]

#: How long a switched WAL segment may take to reach the archive before we say
#: archiving is broken (the archiver retries a failing command every minute).
ARCHIVE_WAIT_S = 60.0
#: How long replaying the archive up to the target may take.
RECOVERY_WAIT_S = 1800.0


def _password(settings: Settings) -> str:
    secret = read_secrets(settings.stack_dir)
    if secret is None:
        raise BackupError(f"no stack at {settings.stack_dir} (no secrets.json)")
    return secret.postgres


def _postgres(settings: Settings, log: Log) -> Postgres:
    return Postgres(settings, binaries.ensure(log=log), log)


def _db_now(pg: Postgres, password: str) -> datetime:
    return datetime.fromtimestamp(
        float(pg.query(password, "SELECT extract(epoch FROM now())")), UTC
    )


def archive_now(settings: Settings, log: Log) -> str:
    """Close the current WAL segment and wait until it is in the archive; its name.

    A commit is written first, so the archive ends with a commit later than any
    moment before this call: a restore to such a moment finds where to stop.
    """
    pg = _postgres(settings, log)
    password = _password(settings)
    if pg.query(password, "SHOW archive_mode") != "on":
        raise BackupError("WAL archiving is off: run `parking stack up --backups` first")
    pg.query(password, "SELECT txid_current()")
    segment = pg.query(password, "SELECT pg_walfile_name(pg_switch_wal())")
    archived = store.wal_dir(settings.backup_dir) / segment
    deadline = time.monotonic() + ARCHIVE_WAIT_S
    while not archived.exists():
        if time.monotonic() > deadline:
            failed = pg.query(
                password, "SELECT coalesce(last_failed_wal, '-') FROM pg_stat_archiver"
            )
            raise BackupError(
                f"{segment} did not reach {archived.parent} within {ARCHIVE_WAIT_S:.0f} s "
                f"(last failed segment: {failed}; see {pg.logfile})"
            )
        time.sleep(0.05)
    return segment


def take(settings: Settings, log: Log) -> BackupSet:
    """A new set: base backup (verified), Redis snapshot, stack files. Safe while the
    platform runs; needs WAL archiving on (a base backup alone restores one moment)."""
    bins = binaries.ensure(log=log)
    pg = Postgres(settings, bins, log)
    password = _password(settings)
    if not pg.running():
        raise BackupError(f"postgres of {settings.stack_dir} is not running")
    if pg.query(password, "SHOW archive_mode") != "on":
        raise BackupError("WAL archiving is off: run `parking stack up --backups` first")
    started = _db_now(pg, password)
    set_id = logic.set_id(started)
    partial = store.base_dir(settings.backup_dir) / f"{set_id}.part"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, mode=0o700)
    log(f"backup {set_id}: base backup of postgres")
    base_backup(pg, password, partial / "pgdata", label=f"parking {set_id}")
    redis = Redis(settings, bins, log)
    secret = read_secrets(settings.stack_dir)
    has_redis = redis.running() and secret is not None
    if has_redis and secret is not None:
        log(f"backup {set_id}: redis snapshot")
        redis.snapshot(secret.redis, partial / "redis" / "dump.rdb")
    copied = []
    for rel in logic.STACK_FILES:
        source = settings.stack_dir / rel
        target = partial / "files" / rel
        if source.is_dir():
            shutil.copytree(source, target)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            continue
        copied.append(rel)
    # The WAL that ends the base backup reaches the archive now, not at the next
    # segment switch: the set is restorable as soon as it is listed.
    archive_now(settings, log)
    backup = BackupSet(
        id=set_id,
        started_at=started,
        finished_at=_db_now(pg, password),
        files=tuple(copied),
        redis=has_redis,
        size_bytes=store.size_of(partial),
    )
    store.seal(settings.backup_dir, partial, backup)
    log(f"backup {set_id}: done ({backup.size_bytes} bytes)")
    return backup


def sets(settings: Settings) -> list[BackupSet]:
    return store.sets(settings.backup_dir)


def archived_segments(settings: Settings) -> list[str]:
    return store.archived_segments(settings.backup_dir)


def restore(source: Settings, target: datetime, into: Settings, log: Log) -> BackupSet:
    """Make ``into.stack_dir`` (new or empty) a running stack holding ``source``'s data
    as it was at ``target``: the newest base backup before it, the archived WAL
    replayed up to it, then Redis, the broker and the secrets of that set.

    The source is only read (its WAL is switched so the archive is current); the
    restored cluster archives nothing. The occupancy core is not rebuilt here: the
    caller does it (``parking restore`` does, from the restored database).
    """
    if into.stack_dir.resolve() == source.stack_dir.resolve():
        raise RestoreRefused("restore into a new stack directory, never over the source")
    if into.stack_dir.exists() and any(into.stack_dir.iterdir()):
        raise RestoreRefused(f"{into.stack_dir} is not empty: restore into a fresh directory")
    bins = binaries.ensure(log=log)
    source_pg = Postgres(source, bins, log)
    password = _password(source)
    if source_pg.running():
        now = _db_now(source_pg, password)
        if target >= now:
            raise RestoreRefused(
                f"{target.isoformat()} is not in the past (the database's clock: {now.isoformat()})"
            )
        archive_now(source, log)
    chosen = logic.choose(store.sets(source.backup_dir), target)
    base = store.set_dir(source.backup_dir, chosen.id)
    log(f"restore: base backup {chosen.id}, WAL up to {target.isoformat()}")
    into.stack_dir.mkdir(parents=True, exist_ok=True)
    for rel in chosen.files:
        copied, to = base / "files" / rel, into.stack_dir / rel
        to.parent.mkdir(parents=True, exist_ok=True)
        if copied.is_dir():
            shutil.copytree(copied, to)
        else:
            shutil.copy2(copied, to)
    if chosen.redis:
        (into.stack_dir / "redis").mkdir(parents=True, exist_ok=True)
        shutil.copy2(base / "redis" / "dump.rdb", into.stack_dir / "redis" / "dump.rdb")
    pg = Postgres(into, bins, log)
    shutil.copytree(base / "pgdata", pg.data)
    pg.data.chmod(0o700)
    write_archive_conf(pg, recovery_conf(store.wal_dir(source.backup_dir), target.isoformat()))
    (pg.data / "recovery.signal").touch()
    pg.own_tree(pg.root)
    pg.start()
    _wait_promoted(pg, password)
    write_archive_conf(pg, RESTORED_CONF)
    stack.up(into, log)
    return chosen


def _wait_promoted(pg: Postgres, password: str) -> None:
    deadline = time.monotonic() + RECOVERY_WAIT_S
    while True:
        if not pg.running():
            raise BackupError(f"the restored postgres stopped during recovery:\n{pg.log_tail()}")
        try:
            if pg.query(password, "SELECT pg_is_in_recovery()") == "f":
                return
        except StackError:
            pass  # not yet consistent: connections are refused until it is
        if time.monotonic() > deadline:
            raise BackupError(f"recovery did not finish within {RECOVERY_WAIT_S:.0f} s")
        time.sleep(0.2)
