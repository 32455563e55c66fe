"""Photos with a report (and with a resolution): checked, cleaned, stored outside the
database under their content's name.

A photo is accepted if it is at most ``MAX_BYTES`` and Pillow reads it as a JPEG, PNG
or WebP of sane dimensions (a decompression bomb is refused). It is then decoded and
encoded again, which keeps the pixels (turned upright by its EXIF orientation) and
drops every metadata block: EXIF with its GPS position, XMP, comments. The stored
file is named by the SHA-256 of the cleaned bytes (``ab/abcdef....jpg`` under the
stack's ``photos/``), so the same photo sent twice is stored once and a name says
nothing about who sent it.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Final

import msgspec
from PIL import Image, ImageOps, UnidentifiedImageError

from parking.errors import Conflict, InvalidInput

MAX_BYTES: Final = 8 * 1024 * 1024
MAX_PER_REPORT: Final = 3
#: refuse images larger than this many pixels (Pillow warns at 89 M, errors at 2x)
MAX_PIXELS: Final = 40_000_000
_FORMATS: Final = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}


class NotAnImage(InvalidInput):
    """Not a JPEG, PNG or WebP photo (or one that cannot be read)."""


class PhotoTooLarge(InvalidInput):
    """Over ``MAX_BYTES``, or more pixels than a phone's camera makes."""


class TooManyPhotos(Conflict):
    """A report carries at most ``MAX_PER_REPORT`` photos."""


class Photo(msgspec.Struct, frozen=True, kw_only=True):
    content: bytes
    content_type: str
    sha256: str
    extension: str

    @property
    def ref(self) -> str:
        return f"{self.sha256[:2]}/{self.sha256}.{self.extension}"


def clean(data: bytes) -> Photo:
    """The photo re-encoded without metadata; NotAnImage / PhotoTooLarge otherwise."""
    if len(data) > MAX_BYTES:
        raise PhotoTooLarge(f"a photo is at most {MAX_BYTES // (1024 * 1024)} MB")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format or ""
            width, height = probe.size
            probe.verify()
        if kind not in _FORMATS:
            raise NotAnImage("send a JPEG, PNG or WebP photo")
        if width * height > MAX_PIXELS:
            raise PhotoTooLarge(f"a photo has at most {MAX_PIXELS // 1_000_000} megapixels")
        with Image.open(io.BytesIO(data)) as image:
            upright = ImageOps.exif_transpose(image)
            pixels = upright.convert("RGB") if kind == "JPEG" else upright.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise NotAnImage("send a JPEG, PNG or WebP photo") from exc
    out = io.BytesIO()
    # No exif=, no pnginfo=, no icc_profile=: nothing but the pixels is written.
    pixels.save(out, format=kind, **({"quality": 90} if kind in ("JPEG", "WEBP") else {}))
    content = out.getvalue()
    content_type, extension = _FORMATS[kind]
    return Photo(
        content=content,
        content_type=content_type,
        sha256=hashlib.sha256(content).hexdigest(),
        extension=extension,
    )


def store(root: Path, photo: Photo) -> bool:
    """Write the photo under its name (atomically); False when it was there already."""
    path = root / photo.ref
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(photo.content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def forget(root: Path, photo: Photo) -> None:
    """Remove a photo this request stored, when the database refused its row."""
    (root / photo.ref).unlink(missing_ok=True)
