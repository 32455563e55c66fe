"""Pure decisions of backing up and restoring."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from parking.backup.model import BackupSet, NoBackupBefore, RestoreRefused

#: A moment without an offset is read as the city's time (what operators and
#: the dashboard show), never the machine's.
CITY_TZ = ZoneInfo("Asia/Shanghai")

#: Stack-relative files a backup set copies when they exist: the stack's passwords
#: (the restored cluster keeps its roles' passwords, so they must match), the
#: device secrets the simulators use, the QR signing keys (printed codes must keep
#: verifying), the sandbox's keys, and the broker's device password and ACL files
#: (the platform listener's are regenerated at every start).
STACK_FILES: tuple[str, ...] = (
    "secrets.json",
    "device-secrets.json",
    "qr-keys.json",
    "sandbox-pay",
    "mosquitto/passwords",
    "mosquitto/acl",
)


def set_id(now: datetime) -> str:
    """Sortable and readable: the UTC second the backup started."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_moment(text: str) -> datetime:
    """An ISO 8601 moment; without an offset it is Asia/Shanghai time."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RestoreRefused(
            f"{text!r} is not an ISO 8601 time (2026-05-01T14:30:00+08:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CITY_TZ)
    return moment


def choose(sets: Sequence[BackupSet], target: datetime) -> BackupSet:
    """The newest set that finished before ``target`` (the least WAL to replay)."""
    usable = [s for s in sets if s.finished_at < target]
    if not usable:
        earliest = min((s.finished_at for s in sets), default=None)
        raise NoBackupBefore(
            f"no base backup finished before {target.isoformat()}"
            + (f" (the earliest finished {earliest.isoformat()})" if earliest else " (none taken)")
        )
    return max(usable, key=lambda s: s.finished_at)
