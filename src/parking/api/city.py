"""City management's figures (role ``city``; an operator sees its company's lots):
occupancy now, from the live core, per lot, district and city."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from litestar import Request, get
from litestar.params import PathParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from parking.api.auth import principal_of
from parking.api.denied import require_lot
from parking.api.infra import connection, infra_of, on_replica
from parking.api.routing import clock_of, problem_responses, staff_readers
from parking.city import service as city
from parking.city.model import (
    UNITS,
    DayFigures,
    DeviceHealth,
    DistrictNow,
    LotNow,
    LotOrder,
    Metric,
    Overview,
    Series,
    Step,
)
from parking.errors import InvalidInput
from parking.lots.model import Access, District, Lot
from parking.occupancy.model import CoreUnreachable

LotIdParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
DistrictQuery = Annotated[str | None, QueryParameter(pattern=r"^[A-Z]{2,4}$")]
LotQuery = Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


async def _snapshot(request: Request[Any, Any, Any]) -> city.Snapshot:
    """The app's one-second snapshot of the city (shared by every request)."""
    infra = infra_of(request.app)
    snapshots: city.Snapshots = request.app.state.city_snapshots

    async def registers() -> tuple[list[Lot], list[District]]:
        async with connection(infra) as conn:
            return await city.registers(conn)

    return await snapshots.get(registers, infra.redis)


class Districts(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DistrictNow]


class Lots(msgspec.Struct, frozen=True, kw_only=True):
    items: list[LotNow]


@get(
    "/v1/city/overview",
    guards=staff_readers,
    tags=["city"],
    summary="The city now: capacity, occupied and free spaces, full lots, open sessions",
    responses=problem_responses(401, 403, 503),
)
async def overview(request: Request[Any, Any, Any]) -> Overview:
    snapshot = await _snapshot(request)
    return city.overview(snapshot, principal_of(request), now=clock_of(request).now())


@get(
    "/v1/city/districts",
    guards=staff_readers,
    tags=["city"],
    summary="Each district now: lots, capacity, occupied, free, full lots",
    responses=problem_responses(401, 403, 503),
)
async def districts(request: Request[Any, Any, Any]) -> Districts:
    snapshot = await _snapshot(request)
    return Districts(items=city.districts(snapshot, principal_of(request)))


@get(
    "/v1/city/lots",
    guards=staff_readers,
    tags=["city"],
    summary="Lots now, of one district or all, fullest, emptiest, most free first or by id",
    responses=problem_responses(400, 401, 403, 503),
)
async def lots(
    request: Request[Any, Any, Any],
    district: DistrictQuery = None,
    sort: Annotated[LotOrder, QueryParameter()] = LotOrder.ID,
) -> Lots:
    snapshot = await _snapshot(request)
    return Lots(items=city.lots_now(snapshot, principal_of(request), district=district, order=sort))


@get(
    "/v1/city/lots/{lot_id:str}",
    guards=staff_readers,
    tags=["city"],
    summary="One lot now",
    responses=problem_responses(401, 403, 404, 503),
)
async def lot(request: Request[Any, Any, Any], lot_id: LotIdParam) -> LotNow:
    infra = infra_of(request.app)
    who = principal_of(request)
    async with connection(infra) as conn:
        await require_lot(
            infra,
            conn,
            who,
            lot_id,
            access=Access.READ,
            action="city.lot",
            now=clock_of(request).now(),
        )
        return await city.lot_now(conn, infra.redis, who, lot_id)


#: how often a subscriber's lots are looked at in the core (an event shows within 2 s)
STREAM_TICK_S: Final = 1.0
#: a comment line this often keeps proxies from closing a quiet stream
KEEPALIVE_TICKS: Final = 15


async def _events(request: Request[Any, Any, Any]) -> AsyncIterator[ServerSentEventMessage]:
    clock = clock_of(request)
    watch = city.Watch(principal_of(request))
    # A connection lives a bounded time (proxies, load balancers, a worker's
    # restart); the client reconnects at once and gets a fresh snapshot.
    ends = time.monotonic() + infra_of(request.app).settings.stream_max_seconds
    sequence = 0
    quiet = 0
    while time.monotonic() < ends:
        try:
            snapshot = await _snapshot(request)
        except CoreUnreachable as exc:
            yield ServerSentEventMessage(event="unavailable", data=str(exc), retry=5000)
            return
        moved = watch.tick(snapshot)
        if moved:
            sequence += 1
            kind = "snapshot" if sequence == 1 else "lots"
            yield ServerSentEventMessage(
                event=kind,
                id=sequence,
                data=msgspec.json.encode(moved).decode(),
                # reconnect at once when a connection's time is up
                retry=1000 if sequence == 1 else None,
            )
            totals = city.overview(snapshot, watch.who, now=clock.now())
            yield ServerSentEventMessage(
                event="overview", id=sequence, data=msgspec.json.encode(totals).decode()
            )
            quiet = 0
        else:
            quiet += 1
            if quiet % KEEPALIVE_TICKS == 0:
                yield ServerSentEventMessage(comment="keep-alive")
        await asyncio.sleep(STREAM_TICK_S)


@get(
    "/v1/city/stream",
    guards=staff_readers,
    media_type="text/event-stream",
    tags=["city"],
    summary="Server-Sent Events: a snapshot of the lots, then the lots whose counts change",
    description=(
        "Events: `snapshot` (every lot the caller may read, once), `lots` (the lots whose "
        "count changed, within 2 s), `overview` (the city's totals after each), "
        "`unavailable` (the live core does not answer; reconnect)."
    ),
    responses=problem_responses(401, 403),
)
async def stream(request: Request[Any, Any, Any]) -> ServerSentEvent:
    return ServerSentEvent(_events(request), headers={"Cache-Control": "no-store"})


async def _lot_readable(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, lot_id: str | None, action: str
) -> None:
    """One lot's figures: 404 (and an audit line) when it is another company's."""
    if lot_id is not None:
        await require_lot(
            infra_of(request.app),
            conn,
            principal_of(request),
            lot_id,
            access=Access.READ,
            action=action,
            now=clock_of(request).now(),
        )


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput(f"`{name}` needs its UTC offset, e.g. 2026-12-01T00:00:00+08:00")
    return value


@get(
    "/v1/city/timeseries",
    guards=staff_readers,
    tags=["city"],
    summary="One figure over time, per hour or per business day, from the rollups",
    description=(
        "`metric`: " + ", ".join(f"`{m.value}` ({UNITS[m]})" for m in Metric) + ". "
        "`from`/`to` with their offset; `step=day` buckets are business days (00:00 "
        "Asia/Shanghai). The city for city staff (or `district=`), the company for an "
        "operator; `lot=` one lot. A quiet bucket is a zero; a rate over nothing is null."
    ),
    responses=problem_responses(400, 401, 403, 404),
)
async def timeseries(
    request: Request[Any, Any, Any],
    metric: Annotated[Metric, QueryParameter()],
    start: Annotated[datetime, QueryParameter(name="from")],
    end: Annotated[datetime, QueryParameter(name="to")],
    step: Annotated[Step, QueryParameter()] = Step.HOUR,
    district: DistrictQuery = None,
    lot: LotQuery = None,
) -> Series:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await _lot_readable(request, conn, lot, "city.timeseries")
    principal = principal_of(request)
    first, last = _aware(start, "from"), _aware(end, "to")
    return await on_replica(
        infra,
        lambda replica: city.timeseries(
            replica,
            principal,
            metric=metric,
            step=step,
            start=first,
            end=last,
            district=district,
            lot_id=lot,
        ),
    )


@get(
    "/v1/city/days/{day:date}",
    guards=staff_readers,
    tags=["city"],
    summary="A business day's figures: cars, stays, money, arrears, devices, lanes, "
    "the fullest and emptiest lots, reconciliation per provider",
    responses=problem_responses(400, 401, 403, 404),
)
async def day(
    request: Request[Any, Any, Any],
    day: Annotated[date, PathParameter()],
    district: DistrictQuery = None,
    lot: LotQuery = None,
) -> DayFigures:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await _lot_readable(request, conn, lot, "city.day")
    principal = principal_of(request)
    return await on_replica(
        infra,
        lambda replica: city.day_figures(replica, principal, day, district=district, lot_id=lot),
    )


@get(
    "/v1/city/devices",
    guards=staff_readers,
    tags=["city"],
    summary="Devices now (of one lot with `lot=`): heard from within their heartbeat "
    "window (PARKING_DEVICE_SILENT_AFTER_S), of those registered",
    responses=problem_responses(401, 403, 404, 503),
)
async def devices(request: Request[Any, Any, Any], lot: LotQuery = None) -> DeviceHealth:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await _lot_readable(request, conn, lot, "city.devices")
        return await city.devices_now(
            conn,
            infra.redis,
            principal_of(request),
            now=clock_of(request).now(),
            silent_after=timedelta(seconds=infra.settings.device_silent_after_s),
            lot_id=lot,
        )


ROUTES: Final = [overview, districts, lots, lot, stream, timeseries, day, devices]
