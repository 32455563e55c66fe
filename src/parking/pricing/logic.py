"""Pure pricing: (rules, lot, plate, entry, exit) -> PricedStay."""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from msgspec import UNSET

from parking.plates import Plate, PlateError, parse_plate
from parking.pricing.model import MonthlyPass, PricedStay, PricingError, Rules, TariffVersion
from parking.tariffs import Tariff, quote
from parking.tariffs import next_step as tariff_step
from parking.vehicles import VehicleClass, effective_class

_MICROSECOND: Final = timedelta(microseconds=1)


def version_in_force(versions: tuple[TariffVersion, ...], at: datetime) -> TariffVersion | None:
    """The latest version whose effective_from is at or before ``at``."""
    index = bisect.bisect_right([v.effective_from for v in versions], at)
    return versions[index - 1] if index else None


def plate_or_none(raw: str | None) -> Plate | None:
    """A camera read as a plate, or None when there is no usable plate (priced as unplated)."""
    if raw is None:
        return None
    try:
        return parse_plate(raw)
    except PlateError:
        return None


def vehicle_class_for(rules: Rules, plate: Plate | None, explicit: int | None) -> int:
    if explicit is not None:
        return int(VehicleClass(explicit))
    if plate is None:
        # An unreadable or missing plate is priced as the commonest vehicle, a
        # small car; staff fix the class on review if it was a truck.
        return int(VehicleClass.CLASS_1)
    override = rules.class_overrides.get(plate.text)
    return int(effective_class(plate, VehicleClass(override) if override else None))


def _covering_pass(
    passes: tuple[MonthlyPass, ...], lot_id: str, entry: datetime
) -> MonthlyPass | None:
    best: MonthlyPass | None = None
    for candidate in passes:
        # Of several passes the one lasting longest covers most of the stay.
        if (
            lot_id in candidate.lots
            and candidate.valid_from <= entry < candidate.valid_until
            and (best is None or candidate.valid_until > best.valid_until)
        ):
            best = candidate
    return best


def price(
    rules: Rules,
    *,
    lot_id: str,
    plate: Plate | None,
    entry: datetime,
    exit: datetime,
    vehicle_class: int | None = None,
    stay_of_day: int = 1,
) -> PricedStay:
    """``stay_of_day``: this stay's index among the plate's stays entered on the same
    local day under tariffs of its tariff's grace_group (1: the first; see
    ``daily_grace_count``); only a new-energy plate under ``nev.daily_grace`` uses it.
    Day types come from ``rules.calendars``, the newest edition first."""
    if entry.tzinfo is None or exit.tzinfo is None:
        raise PricingError("entry and exit must carry a time zone")
    if exit <= entry:
        raise PricingError(f"exit {exit.isoformat()} is not after entry {entry.isoformat()}")
    cls = vehicle_class_for(rules, plate, vehicle_class)
    tariff_id, version = _in_force(rules, lot_id, cls, entry)

    def free(reason: str) -> PricedStay:
        return PricedStay(
            fee_fen=0,
            tariff_id=tariff_id,
            tariff_version=version.version,
            vehicle_class=cls,
            reason=reason,
            quote=None,
        )

    if plate is not None:
        exempt = _exempt(rules, lot_id, plate)
        if exempt is not None:
            return free(f"exempt:{exempt}")
        covering = _covering_pass(rules.passes.get(plate.text, ()), lot_id, entry)
        if covering is not None:
            if covering.valid_until >= exit:
                return free(f"monthly_pass:{covering.id}")
            # The pass ran out during the stay: the rest is priced as a stay
            # that began when the pass ended, by the version in force at entry.
            tail = quote(
                version.tariff, covering.valid_until, exit, nev=plate.is_new_energy,
                calendars=rules.calendars, stay_of_day=stay_of_day,
            )  # fmt: skip
            return PricedStay(
                fee_fen=tail.total_fen,
                tariff_id=tariff_id,
                tariff_version=version.version,
                vehicle_class=cls,
                reason=f"monthly_pass_tail:{covering.id}",
                quote=tail,
            )
    nev = plate.is_new_energy if plate is not None else False
    full = quote(
        version.tariff, entry, exit, nev=nev, calendars=rules.calendars, stay_of_day=stay_of_day
    )
    return PricedStay(
        fee_fen=full.total_fen,
        tariff_id=tariff_id,
        tariff_version=version.version,
        vehicle_class=cls,
        reason="tariff",
        quote=full,
    )


def next_step(
    rules: Rules,
    *,
    lot_id: str,
    plate: Plate | None,
    entry: datetime,
    at: datetime,
    vehicle_class: int | None = None,
    stay_of_day: int = 1,
) -> datetime | None:
    """Until when ``price`` with the exit at ``at`` holds under these rules: the first
    instant after ``at`` at which the stay may cost more (``tariffs.next_step``), the
    end of the monthly pass covering it, or None when it never will (an exempt plate).
    Raises PricingError as ``price`` does."""
    if entry.tzinfo is None or at.tzinfo is None:
        raise PricingError("entry and exit must carry a time zone")
    if at <= entry:
        raise PricingError(f"exit {at.isoformat()} is not after entry {entry.isoformat()}")
    _tariff_id, version = _in_force(
        rules, lot_id, vehicle_class_for(rules, plate, vehicle_class), entry
    )
    start = entry
    if plate is not None:
        if _exempt(rules, lot_id, plate) is not None:
            return None
        covering = _covering_pass(rules.passes.get(plate.text, ()), lot_id, entry)
        if covering is not None:
            if covering.valid_until >= at:
                return covering.valid_until + _MICROSECOND
            start = covering.valid_until
    nev = plate.is_new_energy if plate is not None else False
    return tariff_step(
        version.tariff, start, at, nev=nev, calendars=rules.calendars, stay_of_day=stay_of_day
    )


def _in_force(rules: Rules, lot_id: str, cls: int, entry: datetime) -> tuple[str, TariffVersion]:
    """The lot's tariff for the class and its version in force at the stay's entry."""
    by_class = rules.lot_tariffs.get(lot_id)
    if not by_class or cls not in by_class:
        raise PricingError(f"lot {lot_id} has no tariff for vehicle class {cls}")
    tariff_id = by_class[cls]
    version = version_in_force(rules.versions.get(tariff_id, ()), entry)
    if version is None:
        raise PricingError(f"tariff {tariff_id} has no version in force at {entry.isoformat()}")
    return tariff_id, version


def _exempt(rules: Rules, lot_id: str, plate: Plate) -> str | None:
    """Why the plate parks free at the lot (its own exemption, else its kind's), if it does."""
    company = rules.lot_companies.get(lot_id)
    exempt = _exemption(rules.exempt_plates.get(plate.text), company)
    if exempt is None:
        exempt = _exemption(rules.exempt_kinds.get(plate.kind.value), company)
    return exempt


def _tariff_at(rules: Rules, lot_id: str, cls: int, at: datetime) -> Tariff | None:
    tariff_id = rules.lot_tariffs.get(lot_id, {}).get(cls)
    if tariff_id is None:
        return None
    version = version_in_force(rules.versions.get(tariff_id, ()), at)
    return None if version is None else version.tariff


class DayCount(NamedTuple):
    """What to count for a stay's index of the day: the plate's stays entered at
    ``lots`` from ``since`` (the tariff's local midnight) to the stay's entry."""

    lots: tuple[str, ...]
    since: datetime


def daily_grace_count(
    rules: Rules,
    *,
    lot_id: str,
    plate: Plate | None,
    entry: datetime,
    vehicle_class: int | None = None,
) -> DayCount | None:
    """What a stay's index of the day counts (the lots whose tariff for the vehicle's
    class at ``entry`` has this tariff's grace_group, since the local midnight), or None
    when the price does not depend on the index: not a new-energy plate, or no
    ``nev.daily_grace`` in the tariff."""
    if plate is None or not plate.is_new_energy:
        return None
    cls = vehicle_class_for(rules, plate, vehicle_class)
    tariff = _tariff_at(rules, lot_id, cls, entry)
    if tariff is None or tariff.nev is None or tariff.nev.daily_grace is UNSET:
        return None
    group = tariff.group
    lots = tuple(
        sorted(
            lot
            for lot in rules.lot_tariffs
            if (other := _tariff_at(rules, lot, cls, entry)) is not None and other.group == group
        )
    )
    local = entry.astimezone(ZoneInfo(tariff.timezone))
    return DayCount(lots, local.replace(hour=0, minute=0, second=0, microsecond=0))


def _exemption(by_company: dict[str | None, str] | None, company: str | None) -> str | None:
    """The reason a plate parks free at a lot of ``company``: the company's own
    exemption, else the city's (one that names no company); None when neither."""
    if not by_company:
        return None
    if company is not None and company in by_company:
        return by_company[company]
    return by_company.get(None)
