"""The backup repository on disk: ``<backup dir>/base/<set id>/`` and ``<backup dir>/wal/``.

A set is written under ``<id>.part`` and renamed when complete, so a crashed
backup never looks like one.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from parking.backup.model import BackupSet

_META = "backup.json"


def wal_dir(backup_dir: Path) -> Path:
    return backup_dir / "wal"


def base_dir(backup_dir: Path) -> Path:
    return backup_dir / "base"


def set_dir(backup_dir: Path, set_id: str) -> Path:
    return base_dir(backup_dir) / set_id


def sets(backup_dir: Path) -> list[BackupSet]:
    """Complete sets, oldest first."""
    root = base_dir(backup_dir)
    if not root.is_dir():
        return []
    found = [
        msgspec.json.decode((d / _META).read_bytes(), type=BackupSet)
        for d in root.iterdir()
        if d.is_dir() and not d.name.endswith(".part") and (d / _META).is_file()
    ]
    return sorted(found, key=lambda s: s.finished_at)


def seal(backup_dir: Path, partial: Path, backup: BackupSet) -> Path:
    """Write the set's description and make it visible under its id."""
    (partial / _META).write_bytes(msgspec.json.encode(backup))
    final = set_dir(backup_dir, backup.id)
    partial.rename(final)
    return final


def archived_segments(backup_dir: Path) -> list[str]:
    root = wal_dir(backup_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".part"))


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
