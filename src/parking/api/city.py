"""City management's figures (role ``city``; an operator sees its company's lots):
occupancy now, from the live core, per lot, district and city."""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Request, get
from litestar.params import PathParameter, QueryParameter

from parking.api.auth import principal_of
from parking.api.denied import require_lot
from parking.api.infra import connection, infra_of
from parking.api.routing import clock_of, problem_responses, staff_readers
from parking.city import service as city
from parking.city.model import DistrictNow, LotNow, LotOrder, Overview
from parking.lots.model import Access

LotIdParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
DistrictQuery = Annotated[str | None, QueryParameter(pattern=r"^[A-Z]{2,4}$")]


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
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        return await city.overview(
            conn, infra.redis, principal_of(request), now=clock_of(request).now()
        )


@get(
    "/v1/city/districts",
    guards=staff_readers,
    tags=["city"],
    summary="Each district now: lots, capacity, occupied, free, full lots",
    responses=problem_responses(401, 403, 503),
)
async def districts(request: Request[Any, Any, Any]) -> Districts:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        return Districts(items=await city.districts(conn, infra.redis, principal_of(request)))


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
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        found = await city.lots_now(
            conn, infra.redis, principal_of(request), district=district, order=sort
        )
    return Lots(items=found)


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


ROUTES: Final = [overview, districts, lots, lot]
