"""Cameras' pictures, stored outside the database: content-addressed files by day.

A picture is kept as ``<root>/<YYYYMMDD>/<sha256>.jpg`` (the business day in
Asia/Shanghai it arrived) and referenced from its passage as
``cam/<lot>/<YYYYMMDD>/<sha256>.jpg``: the lot says whose operators may look at it,
the day and hash find the file. One folder per day makes retention a matter of
removing whole folders (a city stores ~1.3 M pictures a day; walking them file by
file would not keep up), and the hash makes a vendor's retry of the same picture
one file. A picture is written to a temporary name, flushed and renamed, so a
reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final

from parking.clock import SHANGHAI
from parking.errors import InvalidInput

#: A single picture above this is refused: a 4K scene JPEG is ~1 MB; more is not a picture.
MAX_IMAGE_BYTES: Final = 4 * 1024 * 1024
_JPEG: Final = b"\xff\xd8\xff"
_REF: Final = re.compile(r"cam/([A-Za-z0-9_-]{1,64})/(\d{8})/([0-9a-f]{64})\.jpg")


class ImageRefused(InvalidInput):
    """Not a picture the platform keeps (not a JPEG, or too large)."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    lot_id: str
    day: date
    digest: str

    @property
    def text(self) -> str:
        return f"cam/{self.lot_id}/{self.day:%Y%m%d}/{self.digest}.jpg"


def parse_ref(text: str) -> ImageRef | None:
    """The reference of a stored camera picture, or None when ``text`` is not one."""
    match = _REF.fullmatch(text)
    if match is None:
        return None
    day = _day(match.group(2))
    if day is None:
        return None
    return ImageRef(match.group(1), day, match.group(3))


def _day(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, ref: ImageRef) -> Path:
        return self.root / f"{ref.day:%Y%m%d}" / f"{ref.digest}.jpg"

    def put(self, data: bytes, *, lot_id: str, at: datetime) -> ImageRef:
        """Keep a JPEG of lot ``lot_id`` that arrived at ``at``; the same bytes on the same
        day are one file. Raises ImageRefused for anything that is not a JPEG."""
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageRefused(f"picture of {len(data)} bytes > {MAX_IMAGE_BYTES}")
        if not data.startswith(_JPEG):
            raise ImageRefused("picture is not a JPEG (no FF D8 FF)")
        ref = ImageRef(lot_id, at.astimezone(SHANGHAI).date(), hashlib.sha256(data).hexdigest())
        path = self.path_of(ref)
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ref

    def read(self, ref: ImageRef) -> bytes | None:
        try:
            return self.path_of(ref).read_bytes()
        except FileNotFoundError:
            return None

    def sweep(
        self, now: datetime, *, keep: timedelta, hold: frozenset[str] = frozenset()
    ) -> list[str]:
        """Remove the days older than ``keep`` (whole folders), except the pictures named
        in ``hold`` (refs of evidence: a stay under an open dispute); return the days
        removed."""
        oldest = (now.astimezone(SHANGHAI) - keep).date()
        held = {(f"{r.day:%Y%m%d}", f"{r.digest}.jpg") for r in map(parse_ref, hold) if r}
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for entry in sorted(self.root.iterdir()):
            day = _day(entry.name) if re.fullmatch(r"\d{8}", entry.name) else None
            if day is None or not entry.is_dir() or day >= oldest:
                continue
            kept = {name for folder, name in held if folder == entry.name}
            if not kept:
                shutil.rmtree(entry, ignore_errors=True)
            else:
                for picture in entry.iterdir():
                    if picture.name not in kept:
                        picture.unlink(missing_ok=True)
            removed.append(entry.name)
        return removed
