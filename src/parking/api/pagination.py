"""Cursor pagination for list routes: opaque cursors, capped limits.

A route declares ``cursor: CursorParam = None, limit: LimitParam = DEFAULT_LIMIT``,
asks its service for ``limit + 1`` items after ``decode_cursor(cursor)``, and
returns ``page(items, limit, key)``. The cursor is the sort key of the last
item shown, base64url-wrapped with a version so its form can change without
clients noticing; clients must treat it as opaque. It is not signed: it only
says where to continue, and every list query still filters to what the
caller may see, so a forged cursor shows nothing new.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Final, TypeVar

from litestar.params import QueryParameter

from parking.errors import InvalidInput

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
_VERSION: Final = "1:"
_MAX_CURSOR: Final = 200

CursorParam = Annotated[
    str | None,
    QueryParameter(
        max_length=_MAX_CURSOR,
        description="`next_cursor` of the previous page; omit for the first page",
    ),
]
LimitParam = Annotated[
    int,
    QueryParameter(ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}"),
]

T = TypeVar("T")


class InvalidCursor(InvalidInput):
    """A cursor this API did not hand out."""


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode((_VERSION + key).encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> str | None:
    """The sort key a cursor stands for (None for the first page)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor is not one this API handed out") from exc
    if not raw.startswith(_VERSION) or len(raw) == len(_VERSION) or not raw.isprintable():
        raise InvalidCursor("cursor is not one this API handed out")
    return raw[len(_VERSION) :]


def page(items: Sequence[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``limit + 1`` fetched items, and the cursor after them
    (None when there is no further page)."""
    shown = list(items[:limit])
    if len(items) <= limit or not shown:
        return shown, None
    return shown, encode_cursor(key(shown[-1]))
