"""Pure retention decisions: cutoffs, which monthly partitions are past them, and the
pseudonym a plate becomes."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Final

#: a monthly partition of passages, space_events, sessions or audit_log: <parent>_YYYY_MM
_PARTITION: Final = re.compile(r"^(passages|space_events|sessions|audit_log)_(\d{4})_(\d{2})$")
#: a pseudonymised plate: "#" and 12 hex characters (no plate looks like it)
PSEUDONYM: Final = re.compile(r"^#[0-9a-f]{12}$")


def months_before(at: datetime, months: int) -> datetime:
    """The same instant ``months`` calendar months earlier (UTC; the day clipped to the
    month's length)."""
    at = at.astimezone(UTC)
    index = at.year * 12 + (at.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30,
            31, 30, 31, 31, 30, 31, 30, 31][month - 1]  # fmt: skip
    return at.replace(year=year, month=month, day=min(at.day, days))


def partitions_past(names: list[str], parent: str, cutoff: datetime) -> list[str]:
    """The monthly partitions of ``parent`` whose whole month ended at or before
    ``cutoff`` (a partition still holding a row after the cutoff stays)."""
    out = []
    for name in names:
        found = _PARTITION.match(name)
        if found is None or found[1] != parent:
            continue
        year, month = int(found[2]), int(found[3])
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if end <= cutoff:
            out.append(name)
    return sorted(out)


def pseudonym(key: bytes, plate: str) -> str:
    """What a plate becomes once its legal period is over: the same for one plate (its
    records stay linked), unreadable without the key."""
    digest = hmac.new(key, plate.encode("utf-8"), hashlib.sha256).hexdigest()
    return "#" + digest[:12]


def partition_month(name: str) -> tuple[str, datetime] | None:
    """``(parent, first instant of its month)`` of a monthly partition's name."""
    found = _PARTITION.match(name)
    if found is None:
        return None
    return found[1], datetime(int(found[2]), int(found[3]), 1, tzinfo=UTC)
