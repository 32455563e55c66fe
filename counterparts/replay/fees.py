"""A second fee engine, written from ``contracts/tariffs.md`` alone, for the checker.

The platform prices every exit with ``parking.tariffs``; a check that asked the
same code again would only prove the code agrees with itself. This module reads
the same tariff documents (JSON, as stored in ``tariff_versions``) and follows
the contract's numbered steps literally: grace, billable start, segments of one
band, units laid end to end, per-cycle caps, the new-energy percentage. It is
deliberately plain (one loop step per unit, no caching) and shares no code with
the platform's engine; its own tests replay the contract's worked examples.

Everything is integer fen; times are aware datetimes; clock times are read in
the tariff's ``timezone``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

DAY: Final = timedelta(days=1)
MINUTE: Final = timedelta(minutes=1)


class FeeError(ValueError):
    """A stay the contract cannot price (exit not after entry, a broken document)."""


@dataclass(frozen=True, slots=True)
class Tier:
    after_minutes: int
    unit_minutes: int
    unit_fen: int


@dataclass(frozen=True, slots=True)
class Band:
    name: str
    start: int  # minutes after local midnight
    end: int
    flat: int | None
    tiers: tuple[Tier, ...]
    #: "charge", "free", or the minutes up to which a cut-short unit is free
    partial: str | int
    segment_cap: int | None

    def covers(self, minute_of_day: float) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end


@dataclass(frozen=True, slots=True)
class Schedule:
    day_types: frozenset[str]
    ranges: tuple[tuple[date, date], ...]
    bands: tuple[Band, ...]

    def matches(self, day: date, day_type: str) -> bool:
        return day_type in self.day_types or any(a <= day <= b for a, b in self.ranges)


@dataclass(frozen=True, slots=True)
class Grace:
    minutes: int
    deductible: bool


@dataclass(frozen=True, slots=True)
class Nev:
    grace: Grace | None
    percent: int
    tariff: Tariff | None
    daily_grace: tuple[Grace, ...]


@dataclass(frozen=True, slots=True)
class Tariff:
    id: str
    zone: ZoneInfo
    grace: Grace | None
    schedules: tuple[Schedule, ...]
    #: per-cycle caps (the last repeats); empty: cycles without a cap
    cap_fen: tuple[int, ...]
    cap_cycle: str | None
    reset_at: int  # minutes after local midnight (daily cycles)
    tiers_restart: str
    nev: Nev | None
    grace_group: str


#: (local date) -> "workday" | "rest_day" | "holiday"
DayTypes = Callable[[date], str]


def weekday_types(day: date) -> str:
    """Day types with no calendar: Monday to Friday work, the weekend rests."""
    return "workday" if day.weekday() < 5 else "rest_day"


def calendar_day_types(documents: Sequence[Mapping[str, Any]]) -> DayTypes:
    """Day types from calendar documents (``holidays``, ``workdays`` lists), newest first:
    a year the first document covers is read from it alone."""
    by_year: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
    for doc in documents:
        for year in doc.get("years", ()):
            by_year.setdefault(
                int(year), (frozenset(doc.get("holidays", ())), frozenset(doc.get("workdays", ())))
            )

    def kind(day: date) -> str:
        known = by_year.get(day.year)
        if known is None:
            return weekday_types(day)
        holidays, workdays = known
        text = day.isoformat()
        if text in holidays:
            return "holiday"
        if text in workdays or day.weekday() < 5:
            return "workday"
        return "rest_day"

    return kind


# ------------------------------------------------------------------ reading documents


def _minutes(text: str) -> int:
    hh, mm = text.split(":")
    return int(hh) * 60 + int(mm)


def _band(raw: Mapping[str, Any]) -> Band:
    partial_raw = raw.get("partial_unit", "charge")
    partial: str | int
    if isinstance(partial_raw, dict):
        partial = int(partial_raw["free_up_to_minutes"])
    else:
        partial = str(partial_raw)
    tiers = tuple(
        Tier(int(t["after_minutes"]), int(t["unit_minutes"]), int(t["unit_fen"]))
        for t in raw.get("tiers", ())
    )
    return Band(
        name=str(raw["name"]),
        start=_minutes(raw["from"]),
        end=_minutes(raw["to"]),
        flat=None if raw.get("flat") is None else int(raw["flat"]),
        tiers=tiers,
        partial=partial,
        segment_cap=None if raw.get("segment_cap_fen") is None else int(raw["segment_cap_fen"]),
    )


def _grace(raw: Mapping[str, Any] | None) -> Grace | None:
    if raw is None:
        return None
    return Grace(int(raw["minutes"]), bool(raw.get("deductible", False)))


def read_tariff(doc: Mapping[str, Any]) -> Tariff:
    """A tariff document (v1 or v2) as this engine holds it."""
    if "schedules" in doc:
        schedules = tuple(
            Schedule(
                day_types=frozenset(d for d in s["days"] if "/" not in d),
                ranges=tuple(
                    (date.fromisoformat(d.split("/")[0]), date.fromisoformat(d.split("/")[1]))
                    for d in s["days"]
                    if "/" in d
                ),
                bands=tuple(_band(b) for b in s["bands"]),
            )
            for s in doc["schedules"]
        )
    else:
        schedules = (
            Schedule(
                frozenset({"workday", "rest_day", "holiday"}),
                (),
                tuple(_band(b) for b in doc["bands"]),
            ),
        )
    cap = doc.get("cap")
    cap_fen: tuple[int, ...] = ()
    cap_cycle = None
    reset_at = 0
    if cap is not None:
        cap_cycle = str(cap["cycle"])
        reset_at = _minutes(cap.get("reset_at", "00:00"))
        raw_fen = cap.get("fen")
        if isinstance(raw_fen, list):
            cap_fen = tuple(int(v) for v in raw_fen)
        elif raw_fen is not None:
            cap_fen = (int(raw_fen),)
    nev = None
    raw_nev = doc.get("nev")
    if raw_nev is not None:
        grace = None
        if "grace_minutes" in raw_nev:
            grace = Grace(int(raw_nev["grace_minutes"]), bool(raw_nev.get("grace_deductible")))
        nev = Nev(
            grace=grace,
            percent=int(raw_nev.get("percent", 100)),
            tariff=read_tariff(raw_nev["tariff"]) if raw_nev.get("tariff") else None,
            daily_grace=tuple(_grace(g) for g in raw_nev.get("daily_grace", ())),  # type: ignore[misc]
        )
    return Tariff(
        id=str(doc["id"]),
        zone=ZoneInfo(str(doc.get("timezone", "Asia/Shanghai"))),
        grace=_grace(doc.get("grace")),
        schedules=schedules,
        cap_fen=cap_fen,
        cap_cycle=cap_cycle,
        reset_at=reset_at,
        tiers_restart=str(doc.get("tiers_restart", "stay")),
        nev=nev,
        grace_group=str(doc.get("grace_group", doc["id"])),
    )


# ------------------------------------------------------------------ the computation


@dataclass(slots=True)
class _Charge:
    at: datetime
    fen: int


@dataclass(slots=True)
class Priced:
    fee_fen: int
    charges: list[tuple[datetime, int]] = field(default_factory=list)


def _local_midnight(zone: ZoneInfo, day: date) -> datetime:
    return datetime.combine(day, time(0), zone)


def _schedule_of(tariff: Tariff, day: date, day_types: DayTypes) -> Schedule:
    kind = day_types(day)
    for schedule in tariff.schedules:
        if schedule.matches(day, kind):
            return schedule
    raise FeeError(f"tariff {tariff.id}: no schedule for {day} ({kind})")


def _segments(
    tariff: Tariff, start: datetime, end: datetime, day_types: DayTypes
) -> list[tuple[datetime, datetime, Band]]:
    """Step 3: maximal intervals of ``[start, end)`` in one band (v2: and one schedule)."""
    out: list[tuple[datetime, datetime, Band]] = []
    zone = tariff.zone
    t = start
    while t < end:
        local = t.astimezone(zone)
        day = local.date()
        schedule = _schedule_of(tariff, day, day_types)
        minute = (local - _local_midnight(zone, day)).total_seconds() / 60
        band = next((b for b in schedule.bands if b.covers(minute)), None)
        if band is None:
            raise FeeError(f"tariff {tariff.id}: no band at {local.isoformat()}")
        # The band ends at the next start of another band of this schedule...
        candidates: list[datetime] = []
        for other in schedule.bands:
            if other is band:
                continue
            for offset in (0, 1):
                at = _local_midnight(zone, day + timedelta(days=offset)) + other.start * MINUTE
                if at > t:
                    candidates.append(at)
        # ...or at local midnight when the next date follows another schedule.
        probe = day
        while True:
            probe += timedelta(days=1)
            midnight = _local_midnight(zone, probe)
            if midnight >= end:
                break
            if _schedule_of(tariff, probe, day_types) is not schedule:
                candidates.append(midnight)
                break
            if band.start != band.end:
                break  # a band of its own schedule ends before the next midnight anyway
        stop = min([end, *candidates])
        out.append((t, stop, band))
        t = stop
    return out


def _cycle_start(tariff: Tariff, entry: datetime, at: datetime) -> datetime:
    if tariff.cap_cycle == "rolling_24h":
        return entry + DAY * ((at - entry) // DAY)
    zone = tariff.zone
    local = at.astimezone(zone)
    reset = _local_midnight(zone, local.date()) + tariff.reset_at * MINUTE
    return reset if reset <= at else reset - DAY


def _tier_for(tiers: tuple[Tier, ...], position_minutes: float) -> Tier:
    chosen = tiers[0]
    for tier in tiers:
        if tier.after_minutes <= position_minutes:
            chosen = tier
    return chosen


def _segment_charges(
    tariff: Tariff,
    band: Band,
    seg_start: datetime,
    seg_end: datetime,
    *,
    entry: datetime,
    billable: datetime,
) -> list[_Charge]:
    """Step 4 for one segment."""
    if band.flat is not None:
        charges = [_Charge(seg_start, band.flat)]
    else:
        charges = []
        t = seg_start
        while t < seg_end:
            if tariff.tiers_restart == "segment":
                origin = seg_start
            elif tariff.tiers_restart == "cycle" and tariff.cap_cycle is not None:
                origin = max(billable, _cycle_start(tariff, entry, t))
            else:
                origin = billable
            tier = _tier_for(band.tiers, (t - origin) / MINUTE)
            unit_end = t + tier.unit_minutes * MINUTE
            fen = tier.unit_fen
            if unit_end > seg_end:
                lasted = (seg_end - t) / MINUTE
                if band.partial == "free" or (
                    isinstance(band.partial, int) and lasted <= band.partial
                ):
                    fen = 0
            charges.append(_Charge(t, fen))
            t = unit_end
    if band.segment_cap is not None:
        left = band.segment_cap
        for charge in charges:
            charge.fen = min(charge.fen, left)
            left -= charge.fen
    return charges


def _capped_total(
    tariff: Tariff, charges: list[_Charge], *, entry: datetime, billable: datetime
) -> int:
    """Step 5: each cycle's sum, capped by its value (the last repeats)."""
    if tariff.cap_cycle is None or not tariff.cap_fen:
        return sum(c.fen for c in charges)
    first = _cycle_start(tariff, entry, billable)
    sums: dict[int, int] = {}
    for charge in charges:
        start = _cycle_start(tariff, entry, charge.at)
        index = round((start - first) / DAY)
        sums[index] = sums.get(index, 0) + charge.fen
    total = 0
    for index, amount in sums.items():
        cap = tariff.cap_fen[min(index, len(tariff.cap_fen) - 1)]
        total += min(amount, cap)
    return total


def price(
    tariff: Tariff,
    entry: datetime,
    exit: datetime,
    *,
    nev: bool = False,
    stay_of_day: int = 1,
    day_types: DayTypes = weekday_types,
) -> int:
    """The fee in fen of a stay from ``entry`` to ``exit`` under ``tariff`` (contract steps 1-6).

    ``stay_of_day`` is the stay's index among the plate's stays entered the same
    local day under tariffs of this tariff's grace group (only ``nev.daily_grace``
    reads it)."""
    if entry.tzinfo is None or exit.tzinfo is None:
        raise FeeError("times must be aware")
    if exit <= entry:
        raise FeeError(f"exit {exit.isoformat()} is not after entry {entry.isoformat()}")
    rules = tariff
    grace = tariff.grace
    percent = 100
    if nev and tariff.nev is not None:
        percent = tariff.nev.percent
        if tariff.nev.tariff is not None:
            rules = tariff.nev.tariff
            grace = rules.grace
        if tariff.nev.daily_grace and stay_of_day <= len(tariff.nev.daily_grace):
            grace = tariff.nev.daily_grace[stay_of_day - 1]
        elif tariff.nev.grace is not None:
            grace = tariff.nev.grace
    g = grace.minutes * MINUTE if grace is not None else timedelta(0)
    if exit - entry <= g:
        return 0
    billable = entry + g if grace is not None and grace.deductible else entry
    charges: list[_Charge] = []
    for seg_start, seg_end, band in _segments(rules, billable, exit, day_types):
        charges.extend(
            _segment_charges(rules, band, seg_start, seg_end, entry=entry, billable=billable)
        )
    total = _capped_total(rules, charges, entry=entry, billable=billable)
    return total * percent // 100
