"""Use cases of pricing: the Pricer snapshot, and operators' tariff changes.

Writes run in the caller's transaction and leave an audit_log row.
"""

from __future__ import annotations

import re
from datetime import datetime

import asyncpg
import msgspec

from parking import audit as audit_log
from parking.auth.model import Principal
from parking.errors import Conflict, InvalidInput, NotFound
from parking.lots import service as lots_service
from parking.plates import PlateKind, parse_plate
from parking.pricing import logic, store
from parking.pricing.live import LiveFee, LiveFees
from parking.pricing.logic import plate_or_none
from parking.pricing.model import MonthlyPass, PricedStay, PricingError, Rules, TariffVersion
from parking.tariffs import Tariff, decode_tariff
from parking.tariffs.calendar import Calendar, decode_calendar

_STORED_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TariffNotFound(NotFound, PricingError):
    """No tariff with that id."""


class LotNotFound(NotFound, PricingError):
    """No lot with that id."""


class TariffConflict(Conflict, PricingError):
    """The tariff exists already, or a version would rewrite the past."""


async def load_rules(conn: asyncpg.Connection) -> Rules:
    rules = Rules()
    for row in await store.lot_tariffs(conn):
        rules.lot_tariffs.setdefault(row["lot_id"], {})[row["vehicle_class"]] = row["tariff_id"]
    grouped: dict[str, list[TariffVersion]] = {}
    for row in await store.tariff_versions(conn):
        grouped.setdefault(row["tariff_id"], []).append(
            TariffVersion(
                tariff_id=row["tariff_id"],
                version=row["version"],
                effective_from=row["effective_from"],
                tariff=decode_tariff(row["document"]),
            )
        )
    rules.versions.update({k: tuple(v) for k, v in grouped.items()})
    for r in await store.exempt_plates(conn):
        rules.exempt_plates.setdefault(r["plate"], {})[r["company_id"]] = r["reason"]
    for r in await store.exempt_kinds(conn):
        rules.exempt_kinds.setdefault(r["kind"], {})[r["company_id"]] = r["reason"]
    rules.lot_companies.update(await lots_service.owners(conn))
    rules.class_overrides.update(
        {r["plate"]: r["vehicle_class"] for r in await store.class_overrides(conn)}
    )
    passes: dict[str, list[MonthlyPass]] = {}
    for row in await store.active_passes(conn):
        passes.setdefault(row["plate"], []).append(
            MonthlyPass(
                id=row["id"],
                lots=frozenset(row["lots"]),
                valid_from=row["valid_from"],
                valid_until=row["valid_until"],
            )
        )
    rules.passes.update({k: tuple(v) for k, v in passes.items()})
    rules.calendars.extend(v.calendar for v in await calendars(conn))
    return rules


class Pricer:
    """Prices stays from a snapshot of the rules; ``refresh`` swaps in a new snapshot."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self._live = LiveFees()

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> Pricer:
        return cls(await load_rules(conn))

    async def refresh(self, conn: asyncpg.Connection) -> None:
        self._rules = await load_rules(conn)
        # Every fee kept was priced under the old rules.
        self._live.clear()

    @property
    def rules(self) -> Rules:
        return self._rules

    def price(
        self,
        *,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        exit: datetime,
        vehicle_class: int | None = None,
        stay_of_day: int = 1,
    ) -> PricedStay:
        return logic.price(
            self._rules,
            lot_id=lot_id,
            plate=plate_or_none(plate),
            entry=entry,
            exit=exit,
            vehicle_class=vehicle_class,
            stay_of_day=stay_of_day,
        )

    def live_fee(
        self,
        *,
        session_id: str,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        at: datetime,
        stay_of_day: int = 1,
    ) -> LiveFee:
        """A running stay's fee were it to end at ``at``, kept until its next price step
        (``parking.pricing.live``); raises PricingError as ``price`` does."""
        return self._live.fee(
            self._rules,
            session_id=session_id,
            lot_id=lot_id,
            plate=plate,
            entry=entry,
            at=at,
            stay_of_day=stay_of_day,
        )

    def held_fee(
        self, *, session_id: str, lot_id: str, plate: str | None, entry: datetime, at: datetime
    ) -> LiveFee | None:
        """The running stay's kept fee when it still holds at ``at`` and does not depend on
        the stay's index of the day (no counting needed); None: ask ``live_fee``."""
        return self._live.held(
            self._rules, session_id=session_id, lot_id=lot_id, plate=plate, entry=entry, at=at
        )

    def daily_grace_count(
        self,
        *,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        vehicle_class: int | None = None,
    ) -> logic.DayCount | None:
        """What this stay's index of the day counts; None when its price does not
        depend on it (most stays: then no query is needed)."""
        return logic.daily_grace_count(
            self._rules,
            lot_id=lot_id,
            plate=plate_or_none(plate),
            entry=entry,
            vehicle_class=vehicle_class,
        )


async def stay_of_day(
    conn: asyncpg.Connection, count: logic.DayCount | None, plate: str | None, entry: datetime
) -> int:
    """A stay's index among the plate's stays entered the same local day under tariffs of
    its grace_group: 1 + the earlier ones stored in PostgreSQL, open or closed (a plate
    has one open stay at a time, the one priced, so the earlier ones are persisted).
    ``count`` is the pricer's ``daily_grace_count`` for the stay; None (the price does
    not depend on the index) gives 1 without a query."""
    parsed = plate_or_none(plate)
    if count is None or parsed is None:
        return 1
    return 1 + await earlier_stays(conn, parsed.text, count, entry)


async def earlier_stays(
    conn: asyncpg.Connection, plate: str, count: logic.DayCount, before: datetime
) -> int:
    """The plate's stays (open or closed) entered at ``count.lots`` from ``count.since``
    until ``before``."""
    return await store.stays_entered(
        conn, plate, lots=list(count.lots), since=count.since, before=before
    )


class TariffVersionView(msgspec.Struct, frozen=True, kw_only=True):
    tariff_id: str
    version: int
    effective_from: datetime
    created_by: str
    document: Tariff


def _check_document(tariff_id: str, document: bytes) -> Tariff:
    tariff = decode_tariff(document)
    if tariff.id != tariff_id:
        raise TariffConflict(f"document id {tariff.id!r} differs from tariff {tariff_id!r}")
    return tariff


async def create_tariff(
    conn: asyncpg.Connection,
    *,
    document: bytes,
    effective_from: datetime,
    by: Principal,
    now: datetime,
) -> TariffVersionView:
    """Create a tariff with its first version (caller's transaction; audited)."""
    tariff = decode_tariff(document)
    if _STORED_ID.fullmatch(tariff.id) is None:
        # Stored tariffs are referenced from lots and bills; keep their ids to
        # the lowercase slugs the database accepts.
        raise InvalidInput(f"id: stored tariffs need a lowercase slug id, got {tariff.id!r}")
    if await store.tariff_exists(conn, tariff.id):
        raise TariffConflict(f"tariff {tariff.id} exists; add a version instead")
    await store.insert_tariff(conn, tariff.id, tariff.name)
    canonical = msgspec.json.encode(tariff).decode()
    await store.insert_version(
        conn,
        tariff_id=tariff.id,
        version=1,
        effective_from=effective_from,
        document=canonical,
        created_by=by.subject,
    )
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="tariff.create",
        target=f"tariff:{tariff.id}",
        details={"version": 1, "effective_from": effective_from.isoformat()},
    )
    return TariffVersionView(
        tariff_id=tariff.id,
        version=1,
        effective_from=effective_from,
        created_by=by.subject,
        document=tariff,
    )


async def add_version(
    conn: asyncpg.Connection,
    *,
    tariff_id: str,
    document: bytes,
    effective_from: datetime,
    by: Principal,
    now: datetime,
) -> TariffVersionView:
    """Add the next version (caller's transaction; audited).

    A version may not take effect in the past, nor before the newest version:
    stays already running are priced by the version in force at their entry,
    and a retroactive version would change what they owe.
    """
    tariff = _check_document(tariff_id, document)
    if not await store.tariff_exists(conn, tariff_id):
        raise TariffNotFound(f"no tariff {tariff_id}")
    await store.lock_tariff(conn, tariff_id)
    latest = await store.latest_version(conn, tariff_id)
    if effective_from < now:
        raise TariffConflict("a new version cannot take effect in the past")
    if latest is not None and effective_from <= latest["effective_from"]:
        raise TariffConflict(
            f"effective_from must be after version {latest['version']}'s "
            f"{latest['effective_from'].isoformat()}"
        )
    version = (latest["version"] if latest else 0) + 1
    await store.insert_version(
        conn,
        tariff_id=tariff_id,
        version=version,
        effective_from=effective_from,
        document=msgspec.json.encode(tariff).decode(),
        created_by=by.subject,
    )
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="tariff.version",
        target=f"tariff:{tariff_id}",
        details={"version": version, "effective_from": effective_from.isoformat()},
    )
    return TariffVersionView(
        tariff_id=tariff_id,
        version=version,
        effective_from=effective_from,
        created_by=by.subject,
        document=tariff,
    )


async def versions(conn: asyncpg.Connection, tariff_id: str) -> list[TariffVersionView]:
    rows = await store.versions_of(conn, tariff_id)
    if not rows:
        raise TariffNotFound(f"no tariff {tariff_id}")
    return [
        TariffVersionView(
            tariff_id=tariff_id,
            version=r["version"],
            effective_from=r["effective_from"],
            created_by=r["created_by"],
            document=decode_tariff(r["document"]),
        )
        for r in rows
    ]


async def assign_tariff(
    conn: asyncpg.Connection,
    *,
    lot_id: str,
    vehicle_class: int,
    tariff_id: str,
    by: Principal,
    now: datetime,
) -> None:
    """Price ``vehicle_class`` at ``lot_id`` by ``tariff_id`` from now on (audited)."""
    if not await lots_service.lot_exists(conn, lot_id):
        raise LotNotFound(f"no lot {lot_id}")
    if not await store.tariff_exists(conn, tariff_id):
        raise TariffNotFound(f"no tariff {tariff_id}")
    await store.assign(conn, lot_id, vehicle_class, tariff_id)
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="lot.tariff",
        target=f"lot:{lot_id}",
        details={"vehicle_class": vehicle_class, "tariff_id": tariff_id},
    )


class PassView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    plate: str
    group_id: str
    valid_from: datetime
    valid_until: datetime


def _plate_text(raw: str) -> str:
    # Exemptions and passes match the normalised plate the gateway sees.
    return parse_plate(raw).text


async def set_plate_exemption(
    conn: asyncpg.Connection, *, plate: str, reason: str, by: Principal, now: datetime
) -> str:
    """Whitelist a plate at the lots of the caller's company (parks free, ``reason`` in
    quotes); returns the normalised plate."""
    text = _plate_text(plate)
    await store.upsert_plate_exemption(conn, text, reason, by.subject, by.company)
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="exemption.plate.set",
        target=f"plate:{text}",
        details={"reason": reason},
    )
    return text


async def remove_plate_exemption(
    conn: asyncpg.Connection, *, plate: str, by: Principal, now: datetime
) -> None:
    text = _plate_text(plate)
    # Only the caller's company's exemption: another's (or the city's) is not its to lift.
    if not await store.delete_plate_exemption(conn, text, by.company):
        raise ExemptionNotFound(f"plate {text} is not exempt")
    await audit_log.record_by(
        conn, by, now=now, action="exemption.plate.remove", target=f"plate:{text}", details={}
    )


async def set_kind_exemption(
    conn: asyncpg.Connection, *, kind: str, reason: str, by: Principal, now: datetime
) -> None:
    """Let every plate of a kind (e.g. ``police``) park free at the caller's company's lots."""
    try:
        PlateKind(kind)
    except ValueError as exc:
        raise InvalidInput(
            f"unknown plate kind {kind!r}; one of {', '.join(k.value for k in PlateKind)}"
        ) from exc
    await store.upsert_exempt_kind(conn, kind, reason, by.subject, by.company)
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="exemption.kind.set",
        target=f"plate_kind:{kind}",
        details={"reason": reason},
    )


async def remove_kind_exemption(
    conn: asyncpg.Connection, *, kind: str, by: Principal, now: datetime
) -> None:
    if not await store.delete_exempt_kind(conn, kind, by.company):
        raise ExemptionNotFound(f"plate kind {kind} is not exempt")
    await audit_log.record_by(
        conn, by, now=now, action="exemption.kind.remove", target=f"plate_kind:{kind}", details={}
    )


async def set_lot_group(
    conn: asyncpg.Connection,
    *,
    group_id: str,
    name: str,
    lots: list[str],
    by: Principal,
    now: datetime,
) -> None:
    """Create or replace a lot group (the lots a monthly pass is good for)."""
    missing = await lots_service.missing_lots(conn, lots)
    if missing:
        raise LotNotFound(f"no lots {', '.join(missing)}")
    await store.upsert_lot_group(conn, group_id, name, sorted(set(lots)))
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="lot_group.set",
        target=f"lot_group:{group_id}",
        details={"lots": sorted(lots)},
    )


async def issue_pass(
    conn: asyncpg.Connection,
    *,
    pass_id: str,
    plate: str,
    group_id: str,
    valid_from: datetime,
    valid_until: datetime,
    by: Principal,
    now: datetime,
) -> PassView:
    if valid_until <= valid_from:
        raise InvalidInput("valid_until must be after valid_from")
    if not await store.group_exists(conn, group_id):
        raise GroupNotFound(f"no lot group {group_id}")
    text = _plate_text(plate)
    await store.insert_pass(
        conn,
        pass_id=pass_id,
        plate=text,
        group_id=group_id,
        valid_from=valid_from,
        valid_until=valid_until,
        by=by.subject,
    )
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="pass.issue",
        target=f"pass:{pass_id}",
        details={
            "plate": text,
            "group_id": group_id,
            "valid_from": valid_from.isoformat(),
            "valid_until": valid_until.isoformat(),
        },
    )
    return PassView(
        id=pass_id, plate=text, group_id=group_id, valid_from=valid_from, valid_until=valid_until
    )


async def revoke_pass(
    conn: asyncpg.Connection, *, pass_id: str, by: Principal, now: datetime
) -> None:
    if not await store.revoke_pass(conn, pass_id, now):
        raise PassNotFound(f"no live pass {pass_id}")
    await audit_log.record_by(
        conn, by, now=now, action="pass.revoke", target=f"pass:{pass_id}", details={}
    )


class ExemptionNotFound(NotFound, PricingError):
    """The plate or kind is not exempt."""


class GroupNotFound(NotFound, PricingError):
    """No lot group with that id."""


class PassNotFound(NotFound, PricingError):
    """No live monthly pass with that id."""


async def tariff_in_force(
    conn: asyncpg.Connection, lot_id: str, *, now: datetime, vehicle_class: int = 1
) -> Tariff | None:
    """The tariff a car of ``vehicle_class`` (1: a small car) pays at the lot now; None
    when the lot has none for it or no version is in force yet."""
    tariff_id = await store.tariff_of_lot(conn, lot_id, vehicle_class)
    if tariff_id is None:
        return None
    in_force = [r for r in await store.versions_of(conn, tariff_id) if r["effective_from"] <= now]
    if not in_force:
        return None
    latest = max(in_force, key=lambda r: r["effective_from"])
    return decode_tariff(latest["document"])


# ------------------------------------------------------------------ calendars


class CalendarConflict(Conflict, PricingError):
    """A calendar edition with that version exists already (a correction is a new one)."""


class CalendarView(msgspec.Struct, frozen=True, kw_only=True):
    calendar: Calendar
    created_by: str
    created_at: datetime


async def import_calendar(
    conn: asyncpg.Connection, calendar: Calendar, *, by: Principal, now: datetime
) -> CalendarView:
    """Store a calendar edition (caller's transaction; audited). For a date, the newest
    edition whose years include it decides, from the pricer's next refresh."""
    stored = await store.insert_calendar(
        conn,
        version=calendar.version,
        name=calendar.name,
        years=list(calendar.years),
        document=msgspec.json.encode(calendar).decode(),
        by=by.subject,
        now=now,
    )
    if not stored:
        raise CalendarConflict(
            f"calendar {calendar.version} exists already: a corrected notice is a new version"
        )
    await audit_log.record_by(
        conn,
        by,
        now=now,
        action="calendar.import",
        target=f"calendar:{calendar.version}",
        details={
            "years": list(calendar.years),
            "holidays": len(calendar.holidays),
            "workdays": len(calendar.workdays),
        },
    )
    return CalendarView(calendar=calendar, created_by=by.subject, created_at=now)


async def ship_calendar(conn: asyncpg.Connection, calendar: Calendar, *, now: datetime) -> bool:
    """The seed's edition, unless stored already (False): shipped with the platform like
    the seeded tariffs, not a person's act, so not in the audit log."""
    return await store.insert_calendar(
        conn,
        version=calendar.version,
        name=calendar.name,
        years=list(calendar.years),
        document=msgspec.json.encode(calendar).decode(),
        by="seed",
        now=now,
    )


async def calendars(conn: asyncpg.Connection) -> list[CalendarView]:
    """Every edition, the newest import first (the order pricing consults them in)."""
    return [
        CalendarView(
            calendar=decode_calendar(row["document"]),
            created_by=row["created_by"],
            created_at=row["created_at"],
        )
        for row in await store.calendars(conn)
    ]
