"""The city's figures, pure: lots with their live counts summed per district and city."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from parking.city.model import (
    ADDED,
    LANE_BOUNDS_MS,
    DeviceHealth,
    DistrictNow,
    LotDay,
    LotNow,
    LotOrder,
    Metric,
    Overview,
    Point,
    Rollup,
    Step,
)
from parking.clock import SHANGHAI
from parking.lots.model import District, Lot
from parking.occupancy.model import LiveCount


def percent(occupied: int, capacity: int) -> float:
    return round(100.0 * occupied / capacity, 1) if capacity > 0 else 0.0


def lot_now(lot: Lot, count: LiveCount | None) -> LotNow:
    """The lot now; the core's capacity when it has the lot (it follows changes at once)."""
    capacity = count.capacity if count is not None else lot.capacity
    occupied = min(count.occupied, capacity) if count is not None else 0
    free = capacity - occupied
    return LotNow(
        lot_id=lot.id,
        name=lot.name,
        district_code=lot.district_code,
        kind=lot.kind,
        capacity=capacity,
        occupied=occupied,
        free=free,
        occupancy_pct=percent(occupied, capacity),
        full=free == 0,
        live=count is not None,
        latitude=lot.latitude,
        longitude=lot.longitude,
    )


def districts_now(lots: Iterable[LotNow], districts: Sequence[District]) -> list[DistrictNow]:
    """Every district that has one of ``lots``, by code."""
    names = {d.code: d.name for d in districts}
    grouped: dict[str, list[LotNow]] = {}
    for lot in lots:
        grouped.setdefault(lot.district_code, []).append(lot)
    out = []
    for code in sorted(grouped):
        members = grouped[code]
        capacity = sum(m.capacity for m in members)
        occupied = sum(m.occupied for m in members)
        out.append(
            DistrictNow(
                code=code,
                name=names.get(code, code),
                lots=len(members),
                capacity=capacity,
                occupied=occupied,
                free=capacity - occupied,
                occupancy_pct=percent(occupied, capacity),
                full_lots=sum(1 for m in members if m.full),
            )
        )
    return out


def overview(
    lots: Sequence[LotNow], counts: Mapping[str, LiveCount], districts: int, at: datetime
) -> Overview:
    capacity = sum(lot.capacity for lot in lots)
    occupied = sum(lot.occupied for lot in lots)
    return Overview(
        at=at,
        lots=len(lots),
        districts=districts,
        capacity=capacity,
        occupied=occupied,
        free=capacity - occupied,
        occupancy_pct=percent(occupied, capacity),
        full_lots=sum(1 for lot in lots if lot.full),
        open_sessions=sum(counts[lot.lot_id].sessions for lot in lots if lot.lot_id in counts),
        lots_not_live=sum(1 for lot in lots if not lot.live),
    )


def ordered(lots: Iterable[LotNow], order: LotOrder) -> list[LotNow]:
    if order is LotOrder.FULLEST:
        return sorted(lots, key=lambda x: (-x.occupancy_pct, -x.occupied, x.lot_id))
    if order is LotOrder.EMPTIEST:
        return sorted(lots, key=lambda x: (x.occupancy_pct, x.occupied, x.lot_id))
    if order is LotOrder.FREE:
        return sorted(lots, key=lambda x: (-x.free, x.lot_id))
    return sorted(lots, key=lambda x: x.lot_id)


def changed(previous: Mapping[str, LotNow], current: Iterable[LotNow]) -> list[LotNow]:
    """The lots whose count or size differs from ``previous`` (new ones included)."""
    out = []
    for lot in current:
        before = previous.get(lot.lot_id)
        if before is None or (before.occupied, before.capacity, before.live) != (
            lot.occupied,
            lot.capacity,
            lot.live,
        ):
            out.append(lot)
    return out


# ------------------------------------------------------------------ rollups (hours and days)


def hour_of(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_start(at: datetime) -> datetime:
    """00:00 Asia/Shanghai of the business day ``at`` falls in (as UTC)."""
    local = at.astimezone(SHANGHAI)
    return datetime.combine(local.date(), time(0), SHANGHAI).astimezone(UTC)


def day_bucket(day: date) -> datetime:
    return datetime.combine(day, time(0), SHANGHAI).astimezone(UTC)


def hours_to_refresh(marked: Iterable[datetime], now: datetime) -> list[datetime]:
    """The marked hours, and always this hour and the last one: arrears turn up and
    the live samples move with time alone, with no write to mark them."""
    current = hour_of(now)
    return sorted({hour_of(h) for h in marked} | {current, current - timedelta(hours=1)})


def days_of(hours: Iterable[datetime]) -> list[datetime]:
    return sorted({day_start(h) for h in hours})


def scopes_of(lot: Lot) -> list[str]:
    """The scopes a lot's figures count in."""
    out = ["city", f"district:{lot.district_code}", f"lot:{lot.id}"]
    if lot.company_id is not None:
        out.append(f"company:{lot.company_id}")
    return out


def capacities(lots: Iterable[Lot]) -> dict[str, int]:
    """scope -> its spaces."""
    out: Counter[str] = Counter()
    for lot in lots:
        for scope in scopes_of(lot):
            out[scope] += lot.capacity
    return dict(out)


def roll_up_hour(
    per_lot: Iterable[Mapping[str, Any]],
    lots: Sequence[Lot],
    medians: Mapping[str, float],
    bucket: datetime,
) -> list[Rollup]:
    """One hour's per-lot figures summed into every scope they count in; the city's row
    is always there (a quiet hour is a zero, not a gap)."""
    by_id = {lot.id: lot for lot in lots}
    space = capacities(lots)
    rows: dict[str, Rollup] = {
        "city": Rollup(scope="city", step=Step.HOUR, bucket=bucket, capacity=space.get("city", 0))
    }
    for counted in per_lot:
        lot = by_id.get(counted["lot_id"])
        if lot is None:
            continue
        for scope in scopes_of(lot):
            row = rows.get(scope)
            if row is None:
                row = rows[scope] = Rollup(
                    scope=scope, step=Step.HOUR, bucket=bucket, capacity=space.get(scope, 0)
                )
            for name in ADDED:
                setattr(row, name, getattr(row, name) + counted[name])
    for scope, row in rows.items():
        row.stay_median_s = medians.get(scope)
    return sorted(rows.values(), key=lambda r: r.scope)


def roll_up_day(
    hours: Iterable[Rollup], medians: Mapping[str, float], bucket: datetime
) -> list[Rollup]:
    """A business day's rows from its 24 hours: counts summed, the peak the highest,
    device counts the latest sampled, lane histograms summed; medians from the day's
    own stays (a median is not a sum of medians)."""
    rows: dict[str, Rollup] = {}
    latest: dict[str, datetime] = {}
    for hour in sorted(hours, key=lambda h: h.bucket):
        row = rows.get(hour.scope)
        if row is None:
            row = rows[hour.scope] = Rollup(scope=hour.scope, step=Step.DAY, bucket=bucket)
        row.capacity = max(row.capacity, hour.capacity)
        for name in ADDED:
            setattr(row, name, getattr(row, name) + getattr(hour, name))
        if hour.occupied_peak is not None:
            row.occupied_peak = max(row.occupied_peak or 0, hour.occupied_peak)
            row.occupied_last = hour.occupied_last
        if hour.devices is not None and hour.bucket >= latest.get(hour.scope, hour.bucket):
            latest[hour.scope] = hour.bucket
            row.devices, row.devices_online = hour.devices, hour.devices_online
        if hour.lane_buckets is not None:
            row.lane_buckets = add_counts(row.lane_buckets, hour.lane_buckets)
    for scope, row in rows.items():
        row.stay_median_s = medians.get(scope)
    return sorted(rows.values(), key=lambda r: r.scope)


def add_counts(a: Sequence[int] | None, b: Sequence[int]) -> list[int]:
    if a is None:
        return list(b)
    width = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(width)]


def quantile(counts: Sequence[int] | None, q: float) -> float | None:
    """The q-quantile (ms) of a lane histogram, interpolated inside its bucket as
    Prometheus' histogram_quantile does; the open last bucket answers its lower bound."""
    if not counts:
        return None
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(LANE_BOUNDS_MS):
                return float(LANE_BOUNDS_MS[-1])
            lower = 0.0 if i == 0 else float(LANE_BOUNDS_MS[i - 1])
            upper = float(LANE_BOUNDS_MS[i])
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
    return float(LANE_BOUNDS_MS[-1])


def bucket_of_ms(ms: float) -> int:
    """The lane histogram bucket a latency (ms) counts in."""
    for i, bound in enumerate(LANE_BOUNDS_MS):
        if ms <= bound:
            return i
    return len(LANE_BOUNDS_MS)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def value(metric: Metric, row: Rollup, outstanding: int) -> float | None:
    """A metric of one bucket; ``outstanding`` is the arrears not paid at its end."""
    match metric:
        case Metric.ENTRIES:
            return float(row.entries)
        case Metric.EXITS:
            return float(row.exits)
        case Metric.TURNOVER:
            return ratio(row.exits, row.capacity)
        case Metric.STAY_AVG:
            return ratio(row.stay_seconds, row.stays)
        case Metric.STAY_MEDIAN:
            return row.stay_median_s
        case Metric.BILLED:
            return float(row.billed_fen)
        case Metric.COLLECTED:
            return float(row.collected_fen)
        case Metric.COLLECTION_RATE:
            return ratio(row.collected_fen, row.billed_fen)
        case Metric.ARREARS:
            return float(row.arrears_fen)
        case Metric.RECOVERED:
            return float(row.recovered_fen)
        case Metric.ARREARS_OUTSTANDING:
            return float(outstanding)
        case Metric.CONTACTLESS_SHARE:
            return ratio(row.contactless_bills, row.paid_bills)
        case Metric.PREPAID_SHARE:
            return ratio(row.prepaid_exits, row.exits)
        case Metric.DISPUTES:
            return float(row.disputes)
        case Metric.DEVICE_ONLINE_RATE:
            return None if row.devices is None else ratio(row.devices_online or 0, row.devices)
        case Metric.OCCUPANCY_PEAK:
            return None if row.occupied_peak is None else ratio(row.occupied_peak, row.capacity)
        case Metric.LANE_P50:
            return quantile(row.lane_buckets, 0.5)
        case Metric.LANE_P99:
            return quantile(row.lane_buckets, 0.99)
    raise ValueError(metric)  # pragma: no cover - the match is exhaustive


def buckets(step: Step, start: datetime, end: datetime) -> list[datetime]:
    """The buckets of [start, end): UTC hours, or business days (00:00 Asia/Shanghai)."""
    out = []
    if step is Step.HOUR:
        at = hour_of(start)
        if at < start:
            at += timedelta(hours=1)
        while at < end:
            out.append(at)
            at += timedelta(hours=1)
        return out
    day = start.astimezone(SHANGHAI).date()
    if day_bucket(day) < start:
        day += timedelta(days=1)
    while day_bucket(day) < end:
        out.append(day_bucket(day))
        day += timedelta(days=1)
    return out


def points(
    metric: Metric,
    step: Step,
    rows: Sequence[Rollup],
    wanted: Sequence[datetime],
    *,
    scope: str,
    capacity: int,
    outstanding_before: int,
) -> list[Point]:
    """A point per wanted bucket; a bucket with no row is a quiet one (zeros)."""
    by_bucket = {r.bucket: r for r in rows}
    out = []
    outstanding = outstanding_before
    for at in wanted:
        row = by_bucket.get(at) or Rollup(scope=scope, step=step, bucket=at, capacity=capacity)
        outstanding += row.arrears_fen - row.recovered_fen
        out.append(Point(at=at, value=value(metric, row, outstanding)))
    return out


def ranked_lots(
    rows: Iterable[Rollup], lots: Mapping[str, Lot], n: int = 10
) -> tuple[list[LotDay], list[LotDay]]:
    """The day's ``n`` fullest and ``n`` emptiest lots by their peak occupancy."""
    days = []
    for row in rows:
        lot = lots.get(row.scope.removeprefix("lot:"))
        if lot is None or row.occupied_peak is None or not row.capacity:
            continue
        days.append(
            LotDay(
                lot_id=lot.id,
                name=lot.name,
                capacity=row.capacity,
                peak_pct=percent(row.occupied_peak, row.capacity),
            )
        )
    fullest = sorted(days, key=lambda d: (-(d.peak_pct or 0), d.lot_id))[:n]
    emptiest = sorted(days, key=lambda d: (d.peak_pct or 0, d.lot_id))[:n]
    return fullest, emptiest


def device_health(
    registered: Iterable[tuple[str, str, str]],
    heard: Mapping[str, int],
    *,
    now: datetime,
    silent_after: timedelta,
) -> tuple[DeviceHealth, dict[str, tuple[int, int]]]:
    """(device_id, lot_id, kind) registered, ``heard`` device -> last heard (ms): the
    city's device health, and per lot (registered, online)."""
    cutoff = (now - silent_after).timestamp() * 1000
    kinds: dict[str, list[int]] = {}
    per_lot: dict[str, tuple[int, int]] = {}
    total = online = 0
    for device_id, lot_id, kind in registered:
        up = heard.get(device_id, -1) >= cutoff
        total += 1
        online += up
        counts = kinds.setdefault(kind, [0, 0])
        counts[0] += up
        counts[1] += 1
        n, o = per_lot.get(lot_id, (0, 0))
        per_lot[lot_id] = (n + 1, o + up)
    health = DeviceHealth(
        at=now,
        devices=total,
        online=online,
        online_rate=ratio(online, total),
        by_kind=kinds,
        silent_after_s=int(silent_after.total_seconds()),
    )
    return health, per_lot


def samples(
    lots: Sequence[Lot],
    counts: Mapping[str, LiveCount],
    devices: Mapping[str, tuple[int, int]],
    bucket: datetime,
) -> list[Rollup]:
    """Every scope's live sample for the hour row ``bucket``: occupied now, devices."""
    rows: dict[str, Rollup] = {}
    for lot in lots:
        now = lot_now(lot, counts.get(lot.id))
        registered, online = devices.get(lot.id, (0, 0))
        for scope in scopes_of(lot):
            row = rows.get(scope)
            if row is None:
                row = rows[scope] = Rollup(
                    scope=scope,
                    step=Step.HOUR,
                    bucket=bucket,
                    occupied_last=0,
                    devices=0,
                    devices_online=0,
                )
            row.capacity += now.capacity
            row.occupied_last = (row.occupied_last or 0) + now.occupied
            row.devices = (row.devices or 0) + registered
            row.devices_online = (row.devices_online or 0) + online
    return sorted(rows.values(), key=lambda r: r.scope)
