"""What a backup set is, and the errors of backing up and restoring."""

from __future__ import annotations

from datetime import datetime

import msgspec

from parking.errors import ParkingError


class BackupSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``parking backup now``: a base backup of PostgreSQL and copies of the rest.

    ``finished_at`` is the database's clock after the base backup ended: any moment
    after it can be restored from this set and the archived WAL.
    """

    id: str
    started_at: datetime
    finished_at: datetime
    #: stack-relative paths of the copied files (secrets, broker files, keys)
    files: tuple[str, ...]
    redis: bool
    size_bytes: int


class BackupError(ParkingError):
    """A backup or restore cannot be done as asked."""


class NoBackupBefore(BackupError):
    """No base backup finished before the moment to restore."""


class RestoreRefused(BackupError):
    """The restore's target (directory or moment) is not acceptable."""
