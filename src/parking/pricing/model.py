from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from parking.errors import ParkingError
from parking.tariffs import Quote, Tariff
from parking.tariffs.calendar import Calendar


class PricingError(ParkingError):
    """A stay cannot be priced (no tariff assigned, no version in force, bad times)."""


class PricedStay(msgspec.Struct, frozen=True, kw_only=True):
    """What a stay costs and why.

    ``reason`` is ``tariff`` for an ordinary priced stay, ``exempt:<why>`` for a
    whitelisted plate or exempt plate kind, ``monthly_pass:<pass id>`` for a
    stay covered by a pass (or ``monthly_pass_tail:<pass id>`` when the pass
    ended during the stay and only the rest was priced).
    """

    fee_fen: int
    tariff_id: str | None
    tariff_version: int | None
    vehicle_class: int
    reason: str
    quote: Quote | None


@dataclass(frozen=True, slots=True)
class TariffVersion:
    tariff_id: str
    version: int
    effective_from: datetime
    tariff: Tariff


@dataclass(frozen=True, slots=True)
class MonthlyPass:
    id: str
    lots: frozenset[str]
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything pricing needs, as of one load."""

    #: lot -> vehicle class (1..5) -> tariff id
    lot_tariffs: dict[str, dict[int, str]] = field(default_factory=dict)
    #: tariff id -> versions sorted by effective_from
    versions: dict[str, tuple[TariffVersion, ...]] = field(default_factory=dict)
    #: normalised plate -> company whose lots it parks free at (None: every lot) -> reason
    exempt_plates: dict[str, dict[str | None, str]] = field(default_factory=dict)
    #: plate kind (parking.plates.PlateKind value) -> company (None: every lot) -> reason
    exempt_kinds: dict[str, dict[str | None, str]] = field(default_factory=dict)
    #: lot -> the operator company that owns it (lots with an owner)
    lot_companies: dict[str, str] = field(default_factory=dict)
    #: normalised plate -> vehicle class
    class_overrides: dict[str, int] = field(default_factory=dict)
    #: normalised plate -> passes (not revoked)
    passes: dict[str, tuple[MonthlyPass, ...]] = field(default_factory=dict)
    #: calendar editions, the newest import first (for a date, the first covering it)
    calendars: list[Calendar] = field(default_factory=list)
