"""Types of the sessions of record."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec


class SessionStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    SUPERSEDED = "superseded"
    VOIDED = "voided"


#: Statuses a session never leaves.
TERMINAL: Final = frozenset({SessionStatus.CLOSED, SessionStatus.SUPERSEDED, SessionStatus.VOIDED})


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    """A session as `parking sessions list` and the API show it."""

    id: str
    lot_id: str
    plate: str | None
    status: str
    entry_at: datetime | None
    exit_at: datetime | None
    fee_fen: int | None
    tariff_id: str | None
    tariff_version: int | None
    pricing_reason: str | None
    superseded_by: str | None
    flags: list[str]


class SessionChange(msgspec.Struct, frozen=True, kw_only=True):
    """One fact about a session learned from an applied event; merged into its row.

    Facts arrive in any order (several persisters, one stream per lot shard), so
    merging is order-insensitive: a terminal status wins over open, the first
    terminal status wins over later ones, known fields are never blanked.
    """

    id: str
    lot_id: str
    status: SessionStatus
    plate: str | None = None
    plate_raw: str | None = None
    entry_at: datetime | None = None
    entry_device_id: str | None = None
    entry_seq: int | None = None
    exit_at: datetime | None = None
    exit_device_id: str | None = None
    exit_seq: int | None = None
    vehicle_class: int | None = None
    fee_fen: int | None = None
    tariff_id: str | None = None
    tariff_version: int | None = None
    pricing_reason: str | None = None
    quote: bytes | None = None
    superseded_by: str | None = None
    flags: tuple[str, ...] = ()
    #: the driver's account, for sessions a scan made (unplated entry, space claim)
    account_id: str | None = None


class SessionMoney(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator's decision on a session did to its bills (for the audit line), and
    the refunds to send to the provider once the decision is committed."""

    written_off: list[str] = msgspec.field(default_factory=list)
    #: bills that now bill the right plate
    moved: list[str] = msgspec.field(default_factory=list)
    #: new bills of the right plate for stays paid by the misread plate's mandate
    rebilled: list[str] = msgspec.field(default_factory=list)
    #: refund requests committed with the decision, to submit after the commit
    refunds: list[str] = msgspec.field(default_factory=list)
