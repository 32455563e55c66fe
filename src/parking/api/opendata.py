"""Open data, public (no login): every lot and its free spaces now, as ParkAPI v3 JSON
and as DATEX II v3 Parking Publications (XML).

Rate limited per client address; each answer carries an ``ETag`` (a hash of the body)
and ``Last-Modified``, and a request whose ``If-None-Match`` names the current ETag is
answered 304 without a body. Nothing personal is ever here: no plates, no sessions.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final, TypeVar, cast

import msgspec
from litestar import Request, Response, get

from parking.api.infra import connection, infra_of
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, problem_responses
from parking.opendata import datex2
from parking.opendata import service as opendata
from parking.opendata.model import RealtimeSites, StaticSites

T = TypeVar("T", StaticSites, RealtimeSites)

#: a city app or a map polls every few seconds; a scraper gets no more than this
OPEN_PER_CLIENT: Final = (Rule("open-data-1m", 120, 60), Rule("open-data-1h", 3600, 3600))
_PUBLIC: Final = {"exclude_from_auth": True}


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _validators(
    request: Request[Any, Any, Any],
    body: bytes,
    modified: datetime,
    extra: dict[str, str],
    identity: bytes | None = None,
) -> tuple[dict[str, str], bool]:
    """The caching headers of ``body``, and whether the client has it already. A live
    answer names its own time, so its ETag is weak and hashes ``identity`` (the counts):
    the same counts a second later are the same answer."""
    digest = hashlib.sha256(body if identity is None else identity).hexdigest()[:32]
    etag = ('"' if identity is None else 'W/"') + digest + '"'
    headers = {
        **extra,
        "ETag": etag,
        "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True),
        "Cache-Control": "public, max-age=5",
    }
    wanted = request.headers.get("if-none-match", "")
    fresh = etag in (tag.strip() for tag in wanted.split(",")) or wanted.strip() == "*"
    return headers, fresh


def _cached_xml(
    request: Request[Any, Any, Any],
    body: bytes,
    modified: datetime,
    extra: dict[str, str],
    identity: bytes | None = None,
) -> Response[bytes]:
    headers, fresh = _validators(request, body, modified, extra, identity)
    if fresh:
        return Response(content=b"", status_code=304, headers=headers)
    return Response(content=body, headers=headers, media_type=datex2.MEDIA_TYPE)


def _cached(
    request: Request[Any, Any, Any],
    content: T,
    modified: datetime,
    extra: dict[str, str],
    identity: bytes | None = None,
) -> Response[T]:
    headers, fresh = _validators(request, msgspec.json.encode(content), modified, extra, identity)
    if fresh:
        # no body with a 304
        return cast(Response[T], Response(content=b"", status_code=304, headers=headers))
    return Response(content, headers=headers)


async def _admit(request: Request[Any, Any, Any]) -> dict[str, str]:
    decision = await RateLimiter(infra_of(request.app).redis).enforce(
        [(f"open-data:client:{_client(request)}", OPEN_PER_CLIENT)]
    )
    return decision.headers


@get(
    "/open/v1/lots",
    opt=_PUBLIC,
    tags=["open data"],
    summary="Every car park and on-street section: id, name, place, capacity (ParkAPI v3)",
    responses=problem_responses(429, 503),
)
async def open_lots(request: Request[Any, Any, Any]) -> Response[StaticSites]:
    limits = await _admit(request)
    async with connection(infra_of(request.app)) as conn:
        sites = await opendata.sites(conn)
    return _cached(request, sites, clock_of(request).now(), limits)


@get(
    "/open/v1/availability",
    opt=_PUBLIC,
    tags=["open data"],
    summary="Free spaces per lot now, from the live core (ParkAPI v3 realtime)",
    responses=problem_responses(429, 503),
)
async def open_availability(request: Request[Any, Any, Any]) -> Response[RealtimeSites]:
    limits = await _admit(request)
    infra = infra_of(request.app)
    now = clock_of(request).now()
    async with connection(infra) as conn:
        sites = await opendata.availability(conn, infra.redis, now=now)
    counts = [(i.uid, i.realtime_capacity, i.realtime_free_capacity) for i in sites.items]
    return _cached(request, sites, now, limits, msgspec.json.encode(counts))


@get(
    "/open/datex2/parking-sites",
    opt=_PUBLIC,
    media_type=datex2.MEDIA_TYPE,
    tags=["open data"],
    summary="Every lot as a DATEX II v3 ParkingTablePublication (UrbanParkingSite records)",
    responses=problem_responses(429, 503),
)
async def datex2_sites(request: Request[Any, Any, Any]) -> Response[bytes]:
    limits = await _admit(request)
    now = clock_of(request).now()
    async with connection(infra_of(request.app)) as conn:
        body, register = await opendata.datex2_sites(conn, now=now)
    return _cached_xml(request, body, now, limits, register)


@get(
    "/open/datex2/parking-status",
    opt=_PUBLIC,
    media_type=datex2.MEDIA_TYPE,
    tags=["open data"],
    summary="Free and occupied spaces per lot now as a DATEX II v3 ParkingStatusPublication",
    responses=problem_responses(429, 503),
)
async def datex2_status(request: Request[Any, Any, Any]) -> Response[bytes]:
    limits = await _admit(request)
    infra = infra_of(request.app)
    now = clock_of(request).now()
    async with connection(infra) as conn:
        body, counts = await opendata.datex2_status(conn, infra.redis, now=now)
    return _cached_xml(request, body, now, limits, counts)


ROUTES: Final = [open_lots, open_availability, datex2_sites, datex2_status]
