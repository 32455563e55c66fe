"""Tariff quotes for everyone; tariff versions and lot assignments for operators.

A tariff an operator creates is its company's: only that company versions it.
The city's tariffs (seeded) are read and assigned by every company, versioned by
none; an operator assigns tariffs to its own company's lots only (parking.lots).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, post, put
from litestar.params import FromPath, JSONBody, PathParameter

from parking.api.auth import principal_of, roles
from parking.api.denied import require_lot, require_tariff
from parking.api.infra import connection, infra_of
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, operator_only
from parking.auth.model import Forbidden, Role
from parking.errors import InvalidInput
from parking.lots import service as lots
from parking.lots.model import Access
from parking.pricing import service as pricing
from parking.tariffs import Quote, listed, quote, tariff_from_dict

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
VehicleClassNumber = Annotated[int, msgspec.Meta(ge=1, le=5)]
MAX_STAY = timedelta(days=400)

HUMANS = (Role.DRIVER, Role.OPERATOR, Role.FINANCE, Role.CITY)


class QuoteRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Either a tariff document (with ``nev``), or a lot with a plate and/or vehicle class."""

    entry: AwareDatetime
    exit: AwareDatetime
    tariff: dict[str, Any] | None = None
    nev: bool = False
    lot_id: str | None = None
    plate: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    vehicle_class: VehicleClassNumber | None = None
    #: the stay's index among the plate's stays of the day (``nev.daily_grace``);
    #: with ``lot_id`` and a plate it is counted from the plate's stays when not given
    stay_of_day: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None


class QuoteResponse(msgspec.Struct, frozen=True, kw_only=True):
    total_fen: int
    reason: str
    tariff_id: str | None
    tariff_version: int | None
    vehicle_class: int | None
    quote: Quote | None


#: Who may price a tariff document they bring: drafting tariffs is an
#: operator's work, and a document is the costliest quote to compute (decoded
#: and validated each time, any unit length). Everyone quotes at a lot.
DOCUMENT_QUOTERS: Final = frozenset({Role.OPERATOR})


def _quote_rules(per_minute: int) -> tuple[Rule, ...]:
    # Each quote lays a stay's units one by one (up to MAX_STAY): cheap for a
    # person checking a fee, not for a script asking thousands a second.
    return (Rule("quote-1m", per_minute, 60),)


@post(
    "/v1/tariffs/quote",
    guards=[roles(*HUMANS)],
    tags=["tariffs"],
    summary="Price a stay: at a lot for a plate / vehicle class, or (operators) by a document",
    description="At most `PARKING_QUOTE_LIMIT_PER_MINUTE` quotes per caller and minute (429 "
    "beyond, with `Retry-After`). A quote lists at most 200 charges; the rest are summed "
    "in `quote.omitted_charges`.",
    status_code=200,
)
async def quote_stay(
    request: Request[Any, Any, Any], data: JSONBody[QuoteRequest]
) -> Response[QuoteResponse]:
    principal = principal_of(request)
    infra = infra_of(request.app)
    limit = await RateLimiter(infra.redis).enforce(
        [
            (
                f"quote:{principal.role.value}:{principal.subject}",
                _quote_rules(infra.settings.quote_limit_per_minute),
            )
        ]
    )
    if data.tariff is not None and principal.role not in DOCUMENT_QUOTERS:
        raise Forbidden("only operators price a tariff document; quote at a lot with `lot_id`")
    if data.exit - data.entry > MAX_STAY:
        # Units are laid one by one; a centuries-long stay would be a cheap way
        # to make the server list millions of charges.
        raise InvalidInput(f"stays longer than {MAX_STAY.days} days are not quoted")
    if (data.tariff is None) == (data.lot_id is None):
        raise InvalidInput("give exactly one of `tariff` (a document) or `lot_id`")
    if data.tariff is not None:
        if data.plate is not None or data.vehicle_class is not None:
            raise InvalidInput("`plate` and `vehicle_class` go with `lot_id`, not `tariff`")
        tariff = tariff_from_dict(data.tariff)
        calendars = (await request.app.state.pricer_cache.get(infra.pool)).rules.calendars
        breakdown = quote(
            tariff, data.entry, data.exit, nev=data.nev, calendars=calendars,
            stay_of_day=data.stay_of_day or 1,
        )  # fmt: skip
        return Response(
            QuoteResponse(
                total_fen=breakdown.total_fen,
                reason="tariff",
                tariff_id=tariff.id,
                tariff_version=None,
                vehicle_class=None,
                quote=listed(breakdown),
            ),
            headers=limit.headers,
        )
    if data.nev:
        raise InvalidInput("with `lot_id`, new-energy status comes from the plate")
    pricer = await request.app.state.pricer_cache.get(infra.pool)
    assert data.lot_id is not None
    stay = data.stay_of_day
    if stay is None:
        count = pricer.daily_grace_count(
            lot_id=data.lot_id, plate=data.plate, entry=data.entry, vehicle_class=data.vehicle_class
        )
        async with connection(infra) as conn:
            stay = await pricing.stay_of_day(conn, count, data.plate, data.entry)
    priced = pricer.price(
        lot_id=data.lot_id,
        plate=data.plate,
        entry=data.entry,
        exit=data.exit,
        vehicle_class=data.vehicle_class,
        stay_of_day=stay,
    )
    return Response(
        QuoteResponse(
            total_fen=priced.fee_fen,
            reason=priced.reason,
            tariff_id=priced.tariff_id,
            tariff_version=priced.tariff_version,
            vehicle_class=priced.vehicle_class,
            quote=listed(priced.quote) if priced.quote is not None else None,
        ),
        headers=limit.headers,
    )


class NewTariff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    document: dict[str, Any]
    effective_from: AwareDatetime


class NewVersion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    document: dict[str, Any]
    effective_from: AwareDatetime


class Assignment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tariff_id: str


def _document_bytes(document: dict[str, Any]) -> bytes:
    # Validated by decode_tariff, which names the offending field.
    return msgspec.json.encode(document)


@post("/v1/operator/tariffs", guards=operator_only, tags=["operator"], status_code=201)
async def create_tariff(
    request: Request[Any, Any, Any], data: JSONBody[NewTariff]
) -> pricing.TariffVersionView:
    """Create a tariff and its version 1 (audited)."""
    infra = infra_of(request.app)
    async with connection(infra, transaction=True) as conn:
        view = await pricing.create_tariff(
            conn,
            document=_document_bytes(data.document),
            effective_from=data.effective_from,
            by=principal_of(request),
            now=clock_of(request).now(),
        )
        await lots.own_tariff(conn, principal_of(request), view.tariff_id)
    request.app.state.pricer_cache.invalidate()
    return view


@post(
    "/v1/operator/tariffs/{tariff_id:str}/versions",
    guards=operator_only,
    tags=["operator"],
    status_code=201,
)
async def add_tariff_version(
    request: Request[Any, Any, Any], tariff_id: FromPath[str], data: JSONBody[NewVersion]
) -> pricing.TariffVersionView:
    """Add the next version; it takes effect at ``effective_from`` (never in the past)."""
    infra = infra_of(request.app)
    now = clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        await require_tariff(
            infra,
            conn,
            principal_of(request),
            tariff_id,
            access=Access.CHANGE,
            action="tariff.version",
            now=now,
        )
        view = await pricing.add_version(
            conn,
            tariff_id=tariff_id,
            document=_document_bytes(data.document),
            effective_from=data.effective_from,
            by=principal_of(request),
            now=clock_of(request).now(),
        )
    request.app.state.pricer_cache.invalidate()
    return view


@get(
    "/v1/operator/tariffs/{tariff_id:str}/versions",
    guards=[roles(Role.OPERATOR, Role.FINANCE, Role.CITY)],
    tags=["operator"],
)
async def list_tariff_versions(
    request: Request[Any, Any, Any], tariff_id: FromPath[str]
) -> list[pricing.TariffVersionView]:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await require_tariff(
            infra,
            conn,
            principal_of(request),
            tariff_id,
            access=Access.READ,
            action="tariff.read",
            now=clock_of(request).now(),
        )
        return await pricing.versions(conn, tariff_id)


@put(
    "/v1/operator/lots/{lot_id:str}/tariffs/{vehicle_class:int}",
    guards=operator_only,
    tags=["operator"],
    status_code=204,
)
async def assign_lot_tariff(
    request: Request[Any, Any, Any],
    lot_id: FromPath[str],
    vehicle_class: Annotated[int, PathParameter(ge=1, le=5)],
    data: JSONBody[Assignment],
) -> None:
    """Price this vehicle class at this lot by the tariff from now on (audited)."""
    infra = infra_of(request.app)
    who, now = principal_of(request), clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        await require_lot(
            infra, conn, who, lot_id, access=Access.CHANGE, action="lot.tariff", now=now
        )
        await require_tariff(
            infra, conn, who, data.tariff_id, access=Access.READ, action="lot.tariff", now=now
        )
        await pricing.assign_tariff(
            conn,
            lot_id=lot_id,
            vehicle_class=vehicle_class,
            tariff_id=data.tariff_id,
            by=principal_of(request),
            now=clock_of(request).now(),
        )
    request.app.state.pricer_cache.invalidate()


ROUTES = [quote_stay, create_tariff, add_tariff_version, list_tariff_versions, assign_lot_tariff]
