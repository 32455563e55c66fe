"""Identifiers: ULIDs (time-sortable, 26 Crockford base32 characters) with a kind prefix.

``new_id("s")`` -> ``"s-01JD3K..."``. Sortable ids keep B-tree inserts local and
make logs readable in time order; the prefix tells a session from a bill.
"""

from __future__ import annotations

import os
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(at: datetime, randomness: bytes | None = None) -> str:
    if at.tzinfo is None:
        raise ValueError("ulid needs an aware datetime")
    millis = int(at.timestamp() * 1000)
    rand = os.urandom(10) if randomness is None else randomness
    value = (millis << 80) | int.from_bytes(rand, "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, at: datetime) -> str:
    return f"{prefix}-{ulid(at)}"
