"""The providers' wire formats, as pure functions: no I/O, no clock reads.

``wechat`` and ``alipay`` sign, verify, encrypt, decode and render exactly what
the providers put on the wire (notes/provider-formats.md); ``money`` converts
their yuan strings to integer fen. Adapters, the sandbox provider and the
payment flow are built on top and own every socket, key file and clock.

The error hierarchy lives here so the payment flow and reconciliation can
catch one type whichever provider raised it.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from parking.errors import ParkingError

__all__ = [
    "BEIJING",
    "BadSignature",
    "BillMismatch",
    "MalformedBill",
    "MalformedMessage",
    "NotificationRejected",
    "WireError",
    "format_beijing_time",
    "parse_beijing_time",
]

#: Both providers write wall-clock times in Beijing time without an offset.
BEIJING = ZoneInfo("Asia/Shanghai")


class WireError(ParkingError):
    """A provider message or file cannot be accepted as it is."""


class NotificationRejected(WireError):
    """The notification is not proven authentic and fresh: never act on it.

    The receiver replies with a failure so the provider re-sends it later.
    """


class BadSignature(NotificationRejected):
    """The signature is absent, undecodable or does not verify with the key."""


class MalformedMessage(WireError):
    """An authenticated message whose content does not decode to the expected shape.

    Re-sending will not fix it: record it for a person rather than looping.
    """


class MalformedBill(WireError):
    """A downloaded bill is not in the documented format."""


class BillMismatch(MalformedBill):
    """A bill's detail rows disagree with its own summary (counts or sums).

    The file is truncated or corrupt and must be downloaded again before it is
    used for reconciliation.
    """


_WALL_CLOCK = re.compile(
    r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}))?",
    re.ASCII,
)


def parse_beijing_time(text: str, *, allow_millis: bool = False) -> datetime:
    """``yyyy-MM-dd HH:mm:ss`` (optionally ``.SSS``) in Beijing time, as an aware datetime.

    A strict pattern instead of ``strptime``, which accepts single-digit fields
    and surrounding text that no provider sends. Raises ``ValueError``.
    """
    match = _WALL_CLOCK.fullmatch(text)
    if match is None or (match.group(7) is not None and not allow_millis):
        raise ValueError(f"not a yyyy-MM-dd HH:mm:ss time: {text!r}")
    # Asia/Shanghai has had no DST since 1991, so a wall-clock time is never
    # ambiguous for any date a bill can carry. (The pattern checked it strictly;
    # fromisoformat reads it fast, and raises ValueError for a day that does not exist.)
    return datetime.fromisoformat(text).replace(tzinfo=BEIJING)


def format_beijing_time(value: datetime, *, allow_millis: bool = False) -> str:
    """The inverse of ``parse_beijing_time``; refuses precision the format would drop."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no Beijing wall-clock time")
    local = value.astimezone(BEIJING)
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d} "
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    if local.microsecond == 0:
        return text
    if allow_millis and local.microsecond % 1000 == 0:
        return f"{text}.{local.microsecond // 1000:03d}"
    raise ValueError(f"{value.isoformat()} has sub-second precision the format cannot carry")
