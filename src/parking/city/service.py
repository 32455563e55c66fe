"""The city's figures now, from the live core over the lots the caller may read."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from parking.auth.model import Principal
from parking.city import logic, store
from parking.city.model import (
    UNITS,
    DayFigures,
    DeviceHealth,
    DistrictNow,
    LotNow,
    LotOrder,
    Metric,
    Overview,
    ProviderDay,
    Rollup,
    Series,
    Step,
)
from parking.errors import InvalidInput
from parking.lots import logic as lots_logic
from parking.lots import service as lots
from parking.lots.model import District, Lot, LotNotFound
from parking.occupancy import store as core
from parking.occupancy.model import CoreUnreachable, LiveCount

#: the providers whose reconciliation a day shows even before it is run
PROVIDERS: Final = ("alipay", "wechat")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every lot of the city, its districts and the core's counts, as of one read.

    What is computed from it is kept per tenancy filter (the city; one company's lots):
    every request and stream tick within the snapshot's second shares one computation."""

    lots: list[Lot]
    districts: list[District]
    counts: dict[str, LiveCount]
    _memo: dict[tuple[str, str | None], Any] = field(default_factory=dict, compare=False)

    def lots_now(self, who: Principal) -> list[LotNow]:
        """The lots ``who`` may read, now (do not change the list: it is shared)."""
        key = ("lots", lots_logic.lot_filter(who))
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = [
                logic.lot_now(lot, self.counts.get(lot.id))
                for lot in lots.readable_by(who, self.lots)
            ]
        return cast(list[LotNow], found)

    def overview(self, who: Principal, now: datetime) -> Overview:
        key = ("overview", lots_logic.lot_filter(who))
        found = self._memo.get(key)
        if found is None:
            mine = self.lots_now(who)
            districts = {lot.district_code for lot in mine}
            found = self._memo[key] = logic.overview(mine, self.counts, len(districts), now)
        return msgspec.structs.replace(cast(Overview, found), at=now)


class Snapshots:
    """One read of the city for everyone who asks within ``max_age`` seconds: a
    dashboard's many viewers and a city app's polls cost one read a second, not one
    each (an event still shows within 2 s). Reads are single-flight."""

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self._snapshot: Snapshot | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def get(
        self,
        registers: Callable[[], Awaitable[tuple[list[Lot], list[District]]]],
        redis: aioredis.Redis,
    ) -> Snapshot:
        """Raises CoreUnreachable when the live core does not answer."""
        if self._snapshot is not None and time.monotonic() - self._read_at < self.max_age:
            return self._snapshot
        async with self._lock:
            if self._snapshot is not None and time.monotonic() - self._read_at < self.max_age:
                return self._snapshot
            every, districts = await registers()
            counts = await _counts(redis, [lot.id for lot in every])
            self._snapshot = Snapshot(lots=every, districts=districts, counts=counts)
            self._read_at = time.monotonic()
            return self._snapshot


async def registers(conn: asyncpg.Connection) -> tuple[list[Lot], list[District]]:
    """Every lot and district (what a snapshot reads from PostgreSQL)."""
    return await lots.every_lot(conn), await lots.districts(conn)


def overview(snapshot: Snapshot, who: Principal, *, now: datetime) -> Overview:
    """The city (an operator: its company's lots) now."""
    return snapshot.overview(who, now)


def districts(snapshot: Snapshot, who: Principal) -> list[DistrictNow]:
    return logic.districts_now(snapshot.lots_now(who), snapshot.districts)


def lots_now(
    snapshot: Snapshot,
    who: Principal,
    *,
    district: str | None = None,
    order: LotOrder = LotOrder.ID,
) -> list[LotNow]:
    found = snapshot.lots_now(who)
    if district is not None:
        found = [lot for lot in found if lot.district_code == district]
    return logic.ordered(found, order)


async def lot_now(
    conn: asyncpg.Connection, redis: aioredis.Redis, who: Principal, lot_id: str
) -> LotNow:
    """Raises LotNotFound for a lot that does not exist or the caller may not read."""
    lot = await lots.find_lot(conn, lot_id)
    if lot is None or not lots.readable_by(who, [lot]):
        raise LotNotFound(f"lot {lot_id} does not exist")
    counts = await _counts(redis, [lot.id])
    return logic.lot_now(lot, counts.get(lot.id))


async def _counts(redis: aioredis.Redis, lot_ids: list[str]) -> dict[str, LiveCount]:
    try:
        return await core.live_counts(redis, lot_ids)
    except (RedisError, OSError) as exc:
        raise CoreUnreachable("the live occupancy core does not answer; try again") from exc


class Watch:
    """What one ``/v1/city/stream`` subscriber sees: each tick, the lots it may read
    whose counts changed since its last tick (all of them the first time)."""

    def __init__(self, who: Principal) -> None:
        self.who = who
        self._seen: dict[str, LotNow] = {}

    def tick(self, snapshot: Snapshot) -> list[LotNow]:
        """The lots whose counts changed since the last tick."""
        now = snapshot.lots_now(self.who)
        moved = logic.changed(self._seen, now)
        self._seen = {lot.lot_id: lot for lot in now}
        return moved


# ------------------------------------------------------------------ from the rollups

#: the longest series one request may ask for
MAX_POINTS: Final = 24 * 62


def scope_for(
    readable: Sequence[Lot], who: Principal, *, district: str | None, lot_id: str | None
) -> tuple[str, int]:
    """The rollup scope ``who`` asks for among the lots it may read, with its capacity: a
    lot (404 if not theirs), a district (city staff), the city (city staff) or the
    operator's company."""
    if lot_id is not None:
        lot = next((lot for lot in readable if lot.id == lot_id), None)
        if lot is None:
            raise LotNotFound(f"lot {lot_id} does not exist")
        return f"lot:{lot.id}", lot.capacity
    company = lots_logic.lot_filter(who)
    if company is not None:
        if district is not None:
            raise InvalidInput(
                "an operator's figures are its company's or one of its lots': ask by lot, "
                "not by district"
            )
        return f"company:{company}", sum(lot.capacity for lot in readable)
    if district is not None:
        return f"district:{district}", sum(
            lot.capacity for lot in readable if lot.district_code == district
        )
    return "city", sum(lot.capacity for lot in readable)


async def timeseries(
    conn: asyncpg.Connection,
    who: Principal,
    *,
    metric: Metric,
    step: Step,
    start: datetime,
    end: datetime,
    district: str | None = None,
    lot_id: str | None = None,
) -> Series:
    if end <= start:
        raise InvalidInput("`to` must be after `from`")
    # The span is checked before the buckets are made: a span of centuries in hours
    # would be millions of them (a bucket is at least an hour, a day at least 23 h).
    longest = timedelta(hours=MAX_POINTS) if step is Step.HOUR else timedelta(days=MAX_POINTS)
    if end - start > longest + timedelta(days=1):
        raise InvalidInput(f"at most {MAX_POINTS} {step.value}s a request: ask for a shorter span")
    wanted = logic.buckets(step, start, end)
    if len(wanted) > MAX_POINTS:
        raise InvalidInput(
            f"{len(wanted)} {step.value}s asked for; at most {MAX_POINTS} points a request"
        )
    readable = lots.readable_by(who, await lots.every_lot(conn))
    scope, capacity = scope_for(readable, who, district=district, lot_id=lot_id)
    rows = await store.series(conn, scope, step, start, end) if wanted else []
    outstanding = (
        await store.outstanding_before(conn, scope, wanted[0])
        if metric is Metric.ARREARS_OUTSTANDING and wanted
        else 0
    )
    return Series(
        metric=metric,
        step=step,
        scope=scope,
        unit=UNITS[metric],
        points=logic.points(
            metric,
            step,
            rows,
            wanted,
            scope=scope,
            capacity=capacity,
            outstanding_before=outstanding,
        ),
    )


async def day_figures(
    conn: asyncpg.Connection,
    who: Principal,
    day: date,
    *,
    district: str | None = None,
    lot_id: str | None = None,
) -> DayFigures:
    """One business day of the scope ``who`` asks for, with the day's fullest and
    emptiest lots (of those it may read) and each provider's reconciliation."""
    readable = lots.readable_by(who, await lots.every_lot(conn))
    scope, capacity = scope_for(readable, who, district=district, lot_id=lot_id)
    bucket = logic.day_bucket(day)
    row = await store.day_of(conn, scope, bucket) or Rollup(
        scope=scope, step=Step.DAY, bucket=bucket, capacity=capacity
    )
    outstanding = await store.outstanding_before(conn, scope, bucket + timedelta(days=1))
    ranked = {
        lot.id: lot
        for lot in readable
        if (district is None or lot.district_code == district)
        and (lot_id is None or lot.id == lot_id)
    }
    fullest, emptiest = logic.ranked_lots(await store.lot_days(conn, bucket), ranked)
    runs = {r["provider"]: r for r in await store.reconciliation_of(conn, day)}
    reconciliation = [
        ProviderDay(provider=name, status="not_run")
        if name not in runs
        else ProviderDay(
            provider=name,
            status="settled" if runs[name]["settled"] else "open",
            matched_fen=runs[name]["matched_fen"],
            discrepancies=runs[name]["discrepancies"],
            pending=runs[name]["pending"],
        )
        for name in sorted({*PROVIDERS, *runs})
    ]
    return DayFigures(
        day=day,
        scope=scope,
        capacity=row.capacity or capacity,
        entries=row.entries,
        exits=row.exits,
        turnover=logic.value(Metric.TURNOVER, row, outstanding),
        stays=row.stays,
        stay_avg_s=logic.value(Metric.STAY_AVG, row, outstanding),
        stay_median_s=row.stay_median_s,
        billed_fen=row.billed_fen,
        collected_fen=row.collected_fen,
        collection_rate=logic.value(Metric.COLLECTION_RATE, row, outstanding),
        arrears_fen=row.arrears_fen,
        arrears_recovered_fen=row.recovered_fen,
        arrears_outstanding_fen=outstanding,
        contactless_share=logic.value(Metric.CONTACTLESS_SHARE, row, outstanding),
        prepaid_share=logic.value(Metric.PREPAID_SHARE, row, outstanding),
        disputes=row.disputes,
        device_online_rate=logic.value(Metric.DEVICE_ONLINE_RATE, row, outstanding),
        occupancy_peak_pct=(
            None
            if row.occupied_peak is None or not row.capacity
            else logic.percent(row.occupied_peak, row.capacity)
        ),
        lane_p50_ms=logic.quantile(row.lane_buckets, 0.5),
        lane_p99_ms=logic.quantile(row.lane_buckets, 0.99),
        lane_decisions=sum(row.lane_buckets or ()),
        fullest=fullest,
        emptiest=emptiest,
        reconciliation=reconciliation,
        refreshed_at=row.refreshed_at,
    )


async def devices_now(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    who: Principal,
    *,
    now: datetime,
    silent_after: timedelta,
    lot_id: str | None = None,
) -> DeviceHealth:
    """The devices of the lots ``who`` may read (or of one of them), now: heard from
    within ``silent_after``. LotNotFound for a lot that is not there or not theirs."""
    readable = {lot.id for lot in lots.readable_by(who, await lots.every_lot(conn))}
    if lot_id is not None:
        if lot_id not in readable:
            raise LotNotFound(f"lot {lot_id} does not exist")
        readable = {lot_id}
    registered = [
        (r["device_id"], r["lot_id"], r["kind"])
        for r in await store.registered_devices(conn)
        if r["lot_id"] in readable
    ]
    try:
        heard = await core.heard(redis)
    except (RedisError, OSError) as exc:
        raise CoreUnreachable("the live occupancy core does not answer; try again") from exc
    health, _ = logic.device_health(registered, heard, now=now, silent_after=silent_after)
    return health
