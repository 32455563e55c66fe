"""Tariff documents (contract v2, /work/shared/contracts/tariffs.md) and quotes.

The document structs validate themselves in `__post_init__`, so an invalid
tariff cannot exist in memory however it was built: decoded from JSON, from a
dict, by the HTTP layer, or constructed in a test. msgspec runs `__post_init__`
while decoding and prefixes our message with the JSON path, which
`parking.tariffs.decode` turns into `bands[1].tiers[0].unit_minutes: ...`.

Every v1 document is a v2 document with the same meaning. The fields v2 adds
default to `msgspec.UNSET`, so a v1 document encodes exactly as it did before
v2 (stored documents are these structs encoded) and a field the author wrote
is told apart from one left out: a document using any v2 field must declare
`"version": 2`. Read the resolved values through the properties
(`Tariff.restart`, `Tariff.group`, `Cap.amounts`, ...).
"""

import re
from datetime import date, datetime
from functools import lru_cache
from typing import Final, Literal, NoReturn, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import UNSET, UnsetType

from parking.money import Fen

PartialUnit = Literal["charge", "free"]
CapCycle = Literal["rolling_24h", "daily"]
#: Where a unit's tier position is counted from (contract v2 `tiers_restart`).
TiersRestart = Literal["stay", "cycle", "segment"]
#: The kind of a local date, from a calendar (`parking.tariffs.calendar`).
DayType = Literal["workday", "rest_day", "holiday"]
DAY_TYPES: Final[tuple[DayType, ...]] = get_args(DayType)
ContractVersion = Literal[1, 2]
# A quote's segment has a field named `date`, which would shadow the type.
LocalDate = date

MINUTES_PER_DAY = 24 * 60
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_RESET_AT = "00:00"
# Published tariffs often write a band ending at midnight as "24:00"; as a `to`
# it means the same as "00:00" (the next midnight), and nothing else.
END_OF_DAY = "24:00"

_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_DATE_RANGE = re.compile(r"(\d{4}-\d{2}-\d{2})/(\d{4}-\d{2}-\d{2})")
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


class FreeRemainder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`partial_unit: {"free_up_to_minutes": N}` (v2): a unit cut short by the
    segment's end is free when it lasted at most N minutes, else charged in full."""

    free_up_to_minutes: int

    def __post_init__(self) -> None:
        _check_non_negative("free_up_to_minutes", self.free_up_to_minutes)


class Band(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")
    flat: Fen | None = None
    tiers: tuple[Tier, ...] | None = None
    # Only meaningful for tiers: a flat fee has no unit to cut short.
    partial_unit: PartialUnit | FreeRemainder = "charge"
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
    # v1: one amount for every cycle. v2: a list, the n-th cycle of the stay
    # capped at the n-th amount and the last repeating; or absent, when the
    # cycles only count `tiers_restart: "cycle"` and nothing is capped.
    fen: Fen | tuple[Fen, ...] | UnsetType = UNSET
    cycle: CapCycle
    # None means the contract default "00:00"; only a daily cycle has a reset.
    reset_at: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fen, int):
            _check_non_negative("fen", self.fen)
        elif isinstance(self.fen, tuple):
            if not self.fen:
                _fail("fen", "must list at least one amount")
            for i, amount in enumerate(self.fen):
                _check_non_negative(f"fen[{i}]", amount)
        if self.reset_at is not None:
            if self.cycle != "daily":
                _fail("reset_at", "only allowed with cycle 'daily'")
            _check_hhmm("reset_at", self.reset_at)

    @property
    def reset_minute(self) -> int:
        return minute_of_day(self.reset_at or DEFAULT_RESET_AT)

    @property
    def amounts(self) -> tuple[Fen, ...]:
        """The caps of cycles 1, 2, ... (the last repeats); empty when nothing is capped."""
        if isinstance(self.fen, int):
            return (self.fen,)
        if isinstance(self.fen, tuple):
            return self.fen
        return ()

    def fen_of_cycle(self, number: int) -> Fen | None:
        """The cap of the stay's cycle `number` (1-based), None when uncapped."""
        amounts = self.amounts
        if not amounts:
            return None
        return amounts[min(number, len(amounts)) - 1]


class NevPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Absent fields fall back to the ordinary policy: no NEV grace of its own
    # means the ordinary grace applies, no percent means full price. A policy
    # that only discounts ({"percent": 50}) is common.
    grace_minutes: int | None = None
    grace_deductible: bool | None = None
    percent: int = 100
    # v2: a whole document pricing new-energy vehicles instead of this one.
    tariff: "Tariff | UnsetType" = UNSET
    # v2: the grace of the plate's 1st, 2nd, ... stay of the local day (in the
    # document's grace_group); stays beyond the list use grace_minutes.
    daily_grace: tuple[Grace, ...] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.grace_minutes is not None:
            _check_non_negative("grace_minutes", self.grace_minutes)
        if not 0 <= self.percent <= 100:
            _fail("percent", f"must be from 0 to 100, got {self.percent}")
        if isinstance(self.daily_grace, tuple) and not self.daily_grace:
            _fail("daily_grace", "must list at least one grace")
        if isinstance(self.tariff, Tariff):
            if self.tariff.nev is not None:
                _fail("tariff.nev", "the tariff for new-energy vehicles has no nev of its own")
            if self.daily_grace is UNSET:
                # The contract prices an NEV by nev.tariff's own grace; a
                # second grace here would give the document two meanings.
                for field, value in (
                    ("grace_minutes", self.grace_minutes),
                    ("grace_deductible", self.grace_deductible),
                ):
                    if value is not None:
                        _fail(
                            field,
                            "with tariff, new-energy vehicles get tariff.grace; set it there "
                            "(or give daily_grace, whose later stays use this field)",
                        )


# Bounded: the entries come from uploaded documents.
@lru_cache(maxsize=1024)
def day_entry(text: str) -> DayType | tuple[date, date] | None:
    """A schedule's `days` entry: a day type, an inclusive (first, last) local
    date range, or None when it is neither."""
    for kind in DAY_TYPES:
        if text == kind:
            return kind
    found = _DATE_RANGE.fullmatch(text)
    if found is None:
        return None
    try:
        first, last = date.fromisoformat(found[1]), date.fromisoformat(found[2])
    except ValueError:
        return None
    return None if last < first else (first, last)


class Schedule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """v2 `schedules` entry: the bands of the local dates one of `days` matches."""

    days: tuple[str, ...]
    bands: tuple[Band, ...]

    def __post_init__(self) -> None:
        if not self.days:
            _fail("days", "must list at least one day type or date range")
        for i, entry in enumerate(self.days):
            if day_entry(entry) is None:
                _fail(
                    f"days[{i}]",
                    f"must be {', '.join(DAY_TYPES)} or a date range YYYY-MM-DD/YYYY-MM-DD "
                    f"(first <= last), got {entry!r}",
                )
        _check_bands(self.bands)

    def matches(self, day: date, kind: DayType) -> bool:
        """Whether a local date of that day type uses this schedule."""
        for entry in self.days:
            rule = day_entry(entry)
            if rule == kind or (isinstance(rule, tuple) and rule[0] <= day <= rule[1]):
                return True
        return False


class Tariff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The contract version the document is written to; absent means 1.
    version: ContractVersion | UnsetType = UNSET
    id: str
    name: str
    currency: str
    timezone: str = DEFAULT_TIMEZONE
    grace: Grace | None = None
    # Empty when the document has schedules instead (v2).
    bands: tuple[Band, ...] = ()
    schedules: tuple[Schedule, ...] | UnsetType = UNSET
    tiers_restart: TiersRestart | UnsetType = UNSET
    cap: Cap | None = None
    nev: NevPolicy | None = None
    grace_group: str | UnsetType = UNSET

    @property
    def contract_version(self) -> int:
        return 1 if self.version is UNSET else self.version

    @property
    def restart(self) -> TiersRestart:
        """`tiers_restart`, with its default "stay" (v1)."""
        return "stay" if self.tiers_restart is UNSET else self.tiers_restart

    @property
    def group(self) -> str:
        """The grace_group whose stays of one local day share `nev.daily_grace`."""
        return self.id if self.grace_group is UNSET else self.grace_group

    @property
    def day_schedules(self) -> tuple[Schedule, ...] | None:
        """The schedules, or None for a document priced by plain `bands`."""
        return None if self.schedules is UNSET else self.schedules

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
        _check_version(self)
        if self.schedules is UNSET:
            _check_bands(self.bands)
        else:
            # A schedules document encodes with "bands": [] (the field's
            # default), so an empty list is taken as absent.
            if self.bands:
                _fail("bands", "not allowed with schedules: each schedule has its own bands")
            _check_schedules(self.schedules)
        if isinstance(self.grace_group, str) and _SLUG.fullmatch(self.grace_group) is None:
            _fail("grace_group", f"must be a slug like id, got {self.grace_group!r}")
        if self.restart == "cycle" and self.cap is None:
            _fail("tiers_restart", "'cycle' counts cap cycles: give cap with its cycle")
        if self.cap is not None and self.cap.fen is UNSET:
            if self.contract_version == 1:
                _fail("cap.fen", "required field is missing")
            if self.restart != "cycle":
                _fail("cap.fen", "required unless tiers_restart is 'cycle'")
        nev_tariff = None if self.nev is None else self.nev.tariff
        if isinstance(nev_tariff, Tariff) and nev_tariff.currency != self.currency:
            _fail(
                "nev.tariff.currency",
                f"must be the document's currency {self.currency}, got {nev_tariff.currency}",
            )

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


def _check_bands(bands: tuple[Band, ...]) -> None:
    """The v1 band rules: at least one band, unique names, each minute covered once."""
    if not bands:
        _fail("bands", "must list at least one band")
    seen: dict[str, int] = {}
    for i, band in enumerate(bands):
        # Charges name their band, so two bands of one name would make a
        # quote ambiguous to the auditor reading it.
        if band.name in seen:
            _fail(f"bands[{i}].name", f"duplicate of bands[{seen[band.name]}].name {band.name!r}")
        seen[band.name] = i
    _check_coverage(bands)


def _check_schedules(schedules: tuple[Schedule, ...]) -> None:
    if not schedules:
        _fail("schedules", "must list at least one schedule")
    named = {day_entry(entry) for schedule in schedules for entry in schedule.days}
    missing = [kind for kind in DAY_TYPES if kind not in named]
    if missing:
        _fail("schedules", f"no schedule for {', '.join(missing)}: every day type needs one")


def _v2_fields(tariff: "Tariff") -> list[str]:
    """The paths of the v2 fields a document uses (the first is the one an error names)."""
    used = [
        field
        for field, value in (
            ("schedules", tariff.schedules),
            ("tiers_restart", tariff.tiers_restart),
        )
        if value is not UNSET
    ]
    for prefix, bands in _all_bands(tariff):
        used.extend(
            f"{prefix}[{i}].partial_unit"
            for i, band in enumerate(bands)
            if isinstance(band.partial_unit, FreeRemainder)
        )
    # An absent cap.fen is a v2 form too, but a v1 author more likely forgot
    # it: Tariff says "required" for that (see __post_init__).
    if tariff.cap is not None and isinstance(tariff.cap.fen, tuple):
        used.append("cap.fen")
    if tariff.nev is not None:
        used.extend(
            f"nev.{field}"
            for field, value in (
                ("tariff", tariff.nev.tariff),
                ("daily_grace", tariff.nev.daily_grace),
            )
            if value is not UNSET
        )
    if tariff.grace_group is not UNSET:
        used.append("grace_group")
    return used


def _all_bands(tariff: "Tariff") -> list[tuple[str, tuple[Band, ...]]]:
    if tariff.schedules is UNSET:
        return [("bands", tariff.bands)]
    return [(f"schedules[{i}].bands", s.bands) for i, s in enumerate(tariff.schedules)]


def _check_version(tariff: "Tariff") -> None:
    if tariff.contract_version == 2:
        return
    used = _v2_fields(tariff)
    if used:
        _fail(used[0], 'a contract version 2 field: the document must declare "version": 2')


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


class Charge(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One billed unit (or one flat fee), at the instant it started."""

    at: datetime
    band: str
    tier: int | Literal["flat"]
    # The price in the tariff; `fen` is what was charged after the segment cap
    # (and is 0 for a partial unit a band lets go free).
    unit_fen: Fen
    fen: Fen
    partial: bool
    #: Where this unit's tier position was counted from, when the document
    #: restarts tiers (`Quote.tiers_restart` "cycle" or "segment"); absent, it
    #: is the quote's `billable_start` (v1, "stay").
    tier_origin: datetime | None = None


class Segment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A maximal interval of the billable stay during which one band is active.

    For a document with `schedules`, also which schedule (its index in the
    document's list) priced the segment: the one of the local `date` the
    segment starts on, of `day_type` as classed by the calendar whose version
    is `calendar` (absent: no calendar covers the date, classed by weekday).
    """

    start: datetime
    end: datetime
    band: str
    raw_fen: Fen
    fen: Fen
    schedule: int | None = None
    date: LocalDate | None = None
    day_type: DayType | None = None
    calendar: str | None = None


class CycleSum(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A cap cycle overlapping the billable stay, with its sum before and after the cap.

    The quote lists cycles in order, the first (cycle 1) containing the billable
    start; `cap_fen` is this cycle's cap, absent when the cycle is not capped.
    """

    start: datetime
    end: datetime
    raw_fen: Fen
    fen: Fen
    cap_fen: Fen | None = None


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

    Contract v2 adds fields that are absent (omitted from the JSON) when they
    say nothing a v1 quote did not: `tiers_restart` when not "stay";
    `nev_tariff_id` when a new-energy vehicle was priced by `nev.tariff`;
    `stay_of_day` when its grace came from `nev.daily_grace`; for a document
    with schedules, `calendars` (the versions of the calendars that classed
    the stay's dates) and `dates_by_weekday` (dates no calendar covers,
    classed by weekday alone).
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
    tiers_restart: TiersRestart = "stay"
    nev_tariff_id: str | None = None
    stay_of_day: int | None = None
    calendars: tuple[str, ...] = ()
    dates_by_weekday: tuple[LocalDate, ...] = ()
