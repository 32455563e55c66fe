"""Operators' pricing rules: exempt plates and plate kinds, lot groups, monthly passes.

Every change is audited and reaches this worker's pricer at once (others
within the cache's refresh interval). A lot group holds only lots of the
operator's own company, and a monthly pass is good for such a group: another
company's lot, group or pass is a 404, audited (parking.lots decides).
An exemption is the operator's company's: the plate (or kind) parks free at
that company's lots only, and only that company lifts it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, post, put
from litestar.params import FromPath, JSONBody

from parking.api.auth import principal_of
from parking.api.denied import require_group, require_lots, require_pass
from parking.api.infra import connection, infra_of
from parking.api.routing import clock_of, operator_only
from parking.ids import new_id
from parking.pricing import service as pricing

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
LotId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ExemptionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason


class PlateExemptionBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The plate goes in the body: a plate is personal data and never goes in a URL."""

    plate: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    reason: Reason


class PlateRemovalBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    plate: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class Exemption(msgspec.Struct, frozen=True, kw_only=True):
    plate: str
    reason: str


class LotGroupBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    lots: Annotated[list[LotId], msgspec.Meta(min_length=1, max_length=1000)]


class PassBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    plate: Annotated[str, msgspec.Meta(max_length=32)]
    group_id: Slug
    valid_from: AwareDatetime
    valid_until: AwareDatetime


@post(
    "/v1/operator/exemptions/plates",
    guards=operator_only,
    tags=["operator"],
    summary="A plate parks free, with the reason (idempotent; the plate in the body)",
    status_code=200,
)
async def put_plate_exemption(
    request: Request[Any, Any, Any], data: JSONBody[PlateExemptionBody]
) -> Exemption:
    async with connection(infra_of(request.app), transaction=True) as conn:
        text = await pricing.set_plate_exemption(
            conn,
            plate=data.plate,
            reason=data.reason,
            by=principal_of(request),
            now=clock_of(request).now(),
        )
    request.app.state.pricer_cache.invalidate()
    return Exemption(plate=text, reason=data.reason)


@post(
    "/v1/operator/exemptions/plates/removals",
    guards=operator_only,
    tags=["operator"],
    summary="A plate parks at the tariff again (idempotent; the plate in the body)",
    status_code=204,
)
async def delete_plate_exemption(
    request: Request[Any, Any, Any], data: JSONBody[PlateRemovalBody]
) -> None:
    async with connection(infra_of(request.app), transaction=True) as conn:
        await pricing.remove_plate_exemption(
            conn, plate=data.plate, by=principal_of(request), now=clock_of(request).now()
        )
    request.app.state.pricer_cache.invalidate()


@put(
    "/v1/operator/exemptions/kinds/{kind:str}",
    guards=operator_only,
    tags=["operator"],
    status_code=204,
)
async def put_kind_exemption(
    request: Request[Any, Any, Any], kind: FromPath[str], data: JSONBody[ExemptionBody]
) -> None:
    async with connection(infra_of(request.app), transaction=True) as conn:
        await pricing.set_kind_exemption(
            conn,
            kind=kind,
            reason=data.reason,
            by=principal_of(request),
            now=clock_of(request).now(),
        )
    request.app.state.pricer_cache.invalidate()


@delete("/v1/operator/exemptions/kinds/{kind:str}", guards=operator_only, tags=["operator"])
async def delete_kind_exemption(request: Request[Any, Any, Any], kind: FromPath[str]) -> None:
    async with connection(infra_of(request.app), transaction=True) as conn:
        await pricing.remove_kind_exemption(
            conn, kind=kind, by=principal_of(request), now=clock_of(request).now()
        )
    request.app.state.pricer_cache.invalidate()


@put(
    "/v1/operator/lot-groups/{group_id:str}",
    guards=operator_only,
    tags=["operator"],
    status_code=204,
)
async def put_lot_group(
    request: Request[Any, Any, Any], group_id: FromPath[Slug], data: JSONBody[LotGroupBody]
) -> None:
    infra, who, now = infra_of(request.app), principal_of(request), clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        # The group's lots as they are (its owner's) and as they will be (the caller's).
        await require_group(infra, conn, who, group_id, action="lot_group.set", now=now)
        await require_lots(
            infra,
            conn,
            who,
            list(data.lots),
            action="lot_group.set",
            target=f"lot_group:{group_id}",
            now=now,
        )
        await pricing.set_lot_group(
            conn,
            group_id=group_id,
            name=data.name,
            lots=list(data.lots),
            by=principal_of(request),
            now=clock_of(request).now(),
        )
    request.app.state.pricer_cache.invalidate()


@post("/v1/operator/passes", guards=operator_only, tags=["operator"], status_code=201)
async def post_pass(request: Request[Any, Any, Any], data: JSONBody[PassBody]) -> pricing.PassView:
    now = clock_of(request).now()
    infra, who = infra_of(request.app), principal_of(request)
    async with connection(infra, transaction=True) as conn:
        await require_group(infra, conn, who, data.group_id, action="pass.issue", now=now)
        view = await pricing.issue_pass(
            conn,
            pass_id=new_id("mp", now),
            plate=data.plate,
            group_id=data.group_id,
            valid_from=data.valid_from,
            valid_until=data.valid_until,
            by=principal_of(request),
            now=now,
        )
    request.app.state.pricer_cache.invalidate()
    return view


@delete("/v1/operator/passes/{pass_id:str}", guards=operator_only, tags=["operator"])
async def delete_pass(request: Request[Any, Any, Any], pass_id: FromPath[str]) -> None:
    infra, who, now = infra_of(request.app), principal_of(request), clock_of(request).now()
    async with connection(infra, transaction=True) as conn:
        await require_pass(infra, conn, who, pass_id, action="pass.revoke", now=now)
        await pricing.revoke_pass(conn, pass_id=pass_id, by=who, now=now)
    request.app.state.pricer_cache.invalidate()


ROUTES = [
    put_plate_exemption,
    delete_plate_exemption,
    put_kind_exemption,
    delete_kind_exemption,
    put_lot_group,
    post_pass,
    delete_pass,
]
