"""Tariff documents (contract v1, /work/shared/contracts/tariffs.md) and quotes.

The document structs validate themselves in `__post_init__`, so an invalid
tariff cannot exist in memory however it was built: decoded from JSON, from a
dict, by the HTTP layer, or constructed in a test. msgspec runs `__post_init__`
while decoding and prefixes our message with the JSON path, which
`parking.tariffs.decode` turns into `bands[1].tiers[0].unit_minutes: ...`.
"""

import re
from datetime import datetime
from typing import Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from parking.money import Fen

PartialUnit = Literal["charge", "free"]
CapCycle = Literal["rolling_24h", "daily"]

MINUTES_PER_DAY = 24 * 60
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_RESET_AT = "00:00"
# Published tariffs often write a band ending at midnight as "24:00"; as a `to`
# it means the same as "00:00" (the next midnight), and nothing else.
END_OF_DAY = "24:00"

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_CURRENCY = re.compile(r"[A-Z]{3}")
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# IANA keys are ASCII path segments; checking the shape first keeps odd strings
# (NUL, "..", absolute paths) away from zoneinfo's file lookup.
_TZ_KEY = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")


class TariffError(ValueError):
    """A tariff document breaks the contract; `path` names the offending field."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class QuoteError(ValueError):
    """A stay cannot be priced (naive times, exit not after entry)."""


def _fail(path: str, reason: str) -> NoReturn:
    raise TariffError(path, reason)


def minute_of_day(text: str) -> int:
    """Minutes since local midnight of an `HH:MM` clock time (already validated);
    "24:00" is midnight."""
    return (int(text[:2]) * 60 + int(text[3:5])) % MINUTES_PER_DAY


def _check_hhmm(path: str, text: str) -> None:
    if _HHMM.fullmatch(text) is None:
        _fail(path, f"must be a clock time HH:MM from 00:00 to 23:59, got {text!r}")


def _check_non_negative(path: str, value: int) -> None:
    if value < 0:
        _fail(path, f"must be >= 0, got {value}")


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class Tier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    after_minutes: int
    unit_minutes: int
    unit_fen: Fen

    def __post_init__(self) -> None:
        _check_non_negative("after_minutes", self.after_minutes)
        if self.unit_minutes <= 0:
            _fail("unit_minutes", f"must be > 0, got {self.unit_minutes}")
        _check_non_negative("unit_fen", self.unit_fen)


class Band(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")
    flat: Fen | None = None
    tiers: tuple[Tier, ...] | None = None
    # Only meaningful for tiers: a flat fee has no unit to cut short.
    partial_unit: PartialUnit = "charge"
    segment_cap_fen: Fen | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            _fail("name", "must not be empty")
        _check_hhmm("from", self.start)
        if self.end != END_OF_DAY:
            _check_hhmm("to", self.end)
        if (self.flat is None) == (self.tiers is None):
            _fail("", "exactly one of flat or tiers is required")
        if self.flat is not None:
            _check_non_negative("flat", self.flat)
        if self.tiers is not None:
            if not self.tiers:
                _fail("tiers", "must list at least one tier")
            if self.tiers[0].after_minutes != 0:
                _fail("tiers[0].after_minutes", "the first tier must start at 0")
            for i in range(1, len(self.tiers)):
                before, after = self.tiers[i - 1].after_minutes, self.tiers[i].after_minutes
                if after <= before:
                    _fail(
                        f"tiers[{i}].after_minutes",
                        f"must be greater than tiers[{i - 1}].after_minutes "
                        f"({before}), got {after}",
                    )
        if self.segment_cap_fen is not None:
            _check_non_negative("segment_cap_fen", self.segment_cap_fen)

    @property
    def whole_day(self) -> bool:
        return minute_of_day(self.start) == minute_of_day(self.end)


class Grace(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    minutes: int
    # Absent means not deductible, the common Chinese rule (免费时长不抵扣):
    # a stay beyond the free period is billed from entry.
    deductible: bool = False

    def __post_init__(self) -> None:
        _check_non_negative("minutes", self.minutes)


class Cap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fen: Fen
    cycle: CapCycle
    # None means the contract default "00:00"; only a daily cycle has a reset.
    reset_at: str | None = None

    def __post_init__(self) -> None:
        _check_non_negative("fen", self.fen)
        if self.reset_at is not None:
            if self.cycle != "daily":
                _fail("reset_at", "only allowed with cycle 'daily'")
            _check_hhmm("reset_at", self.reset_at)

    @property
    def reset_minute(self) -> int:
        return minute_of_day(self.reset_at or DEFAULT_RESET_AT)


class NevPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Absent fields fall back to the ordinary policy: no NEV grace of its own
    # means the ordinary grace applies, no percent means full price. A policy
    # that only discounts ({"percent": 50}) is common.
    grace_minutes: int | None = None
    grace_deductible: bool | None = None
    percent: int = 100

    def __post_init__(self) -> None:
        if self.grace_minutes is not None:
            _check_non_negative("grace_minutes", self.grace_minutes)
        if not 0 <= self.percent <= 100:
            _fail("percent", f"must be from 0 to 100, got {self.percent}")


class Tariff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    name: str
    currency: str
    timezone: str = DEFAULT_TIMEZONE
    grace: Grace | None = None
    bands: tuple[Band, ...]
    cap: Cap | None = None
    nev: NevPolicy | None = None

    def __post_init__(self) -> None:
        if _SLUG.fullmatch(self.id) is None:
            _fail("id", f"must be a slug (letters, digits, '-', '_', '.'), got {self.id!r}")
        if not self.name.strip():
            _fail("name", "must not be empty")
        if _CURRENCY.fullmatch(self.currency) is None:
            _fail(
                "currency",
                f"must be an ISO 4217 code of 3 uppercase letters, got {self.currency!r}",
            )
        _check_timezone(self.timezone)
        if not self.bands:
            _fail("bands", "must list at least one band")
        seen: dict[str, int] = {}
        for i, band in enumerate(self.bands):
            # Charges name their band, so two bands of one name would make a
            # quote ambiguous to the auditor reading it.
            if band.name in seen:
                _fail(
                    f"bands[{i}].name", f"duplicate of bands[{seen[band.name]}].name {band.name!r}"
                )
            seen[band.name] = i
        _check_coverage(self.bands)

    def zone(self) -> ZoneInfo:
        # ZoneInfo keeps its own per-key cache, so this is a dict lookup.
        return ZoneInfo(self.timezone)


def _check_timezone(key: str) -> None:
    if len(key) <= 64 and _TZ_KEY.fullmatch(key) is not None:
        try:
            ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
        else:
            return
    _fail("timezone", f"unknown IANA time zone {key!r}")


def _check_coverage(bands: tuple[Band, ...]) -> None:
    """Every minute of the day belongs to exactly one band."""
    # Each band as one or two [start, end) minute intervals of one day; walked
    # in order, an interval starting before the previous one ended overlaps
    # it, and one starting after leaves a gap.
    intervals: list[tuple[int, int, int]] = []
    for i, band in enumerate(bands):
        start, end = minute_of_day(band.start), minute_of_day(band.end)
        if start == end:
            intervals.append((0, MINUTES_PER_DAY, i))
        elif start < end:
            intervals.append((start, end, i))
        else:
            intervals.append((start, MINUTES_PER_DAY, i))
            if end > 0:
                intervals.append((0, end, i))
    intervals.sort()
    gaps: list[tuple[int, int]] = []
    covered_to, last = 0, -1
    for start, end, i in intervals:
        if start < covered_to:
            first, second = sorted((i, last))
            _fail(
                f"bands[{second}]",
                f"overlaps bands[{first}] ({bands[first].name!r}) at {_hhmm(start)}",
            )
        if start > covered_to:
            gaps.append((covered_to, start))
        covered_to, last = end, i
    if covered_to < MINUTES_PER_DAY:
        gaps.append((covered_to, MINUTES_PER_DAY))
    if gaps:
        gap_start, gap_end = gaps[-1] if gaps[-1][1] == MINUTES_PER_DAY else gaps[0]
        if gap_end == MINUTES_PER_DAY and gaps[0][0] == 0:
            gap_end = gaps[0][1]  # the gap wraps past midnight
        _fail("bands", f"no band covers {_hhmm(gap_start)} to {_hhmm(gap_end % MINUTES_PER_DAY)}")


# Quotes. Only JSON-friendly fields: the HTTP API returns these structs as is.


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    """One billed unit (or one flat fee), at the instant it started."""

    at: datetime
    band: str
    tier: int | Literal["flat"]
    # The price in the tariff; `fen` is what was charged after the segment cap
    # (and is 0 for a partial unit a band lets go free).
    unit_fen: Fen
    fen: Fen
    partial: bool


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    """A maximal interval of the billable stay during which one band is active."""

    start: datetime
    end: datetime
    band: str
    raw_fen: Fen
    fen: Fen


class CycleSum(msgspec.Struct, frozen=True, kw_only=True):
    """A cap cycle overlapping the billable stay, with its sum before and after the cap."""

    start: datetime
    end: datetime
    raw_fen: Fen
    fen: Fen


class OmittedCharges(msgspec.Struct, frozen=True, kw_only=True):
    """The charges a long quote does not list one by one (see `parking.tariffs.listed`):
    how many, what they add up to, and when the first and the last started."""

    count: int
    fen: Fen
    first_at: datetime
    last_at: datetime


class Quote(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The priced stay, itemised so a driver or auditor can check it line by line.

    Times are local to the tariff's zone, each with the zone's UTC offset at
    that instant as a fixed-offset tzinfo (so they compare by instant even in
    a repeated DST hour). `subtotal_fen` is after segment and cycle caps,
    `total_fen` after the NEV percentage.
    """

    tariff_id: str
    currency: str
    total_fen: Fen
    entry: datetime
    exit: datetime
    nev: bool
    nev_applied: bool
    grace_minutes: int
    grace_deductible: bool
    within_grace: bool
    billable_start: datetime | None
    segments: tuple[Segment, ...]
    charges: tuple[Charge, ...]
    cycles: tuple[CycleSum, ...]
    subtotal_fen: Fen
    nev_percent: int | None
    #: Set only on a quote cut for display: the charges after the listed ones.
    omitted_charges: OmittedCharges | None = None
