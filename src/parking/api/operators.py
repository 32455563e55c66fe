"""Operators' routes: lots, lanes, spaces, devices, the blacklist and the anomaly review queue.

Every change is written to ``audit_log`` (actor, role, action, target,
details) in the same transaction as the change itself, so there is no change
without its audit line. Device changes go through the device registry, which
rewrites the broker's password and ACL files and waits for the broker to
enforce them; those run outside a transaction (the registry's rule), and are
audited once the registry has answered.

An operator acts on the lots of its own company only (parking.lots says
which): another company's lot, or a device or anomaly in one, is a 404 and an
audit line (parking.api.denied.require_lot). The city reads every lot (the
GET routes admit it) and changes none (the others do not: 403).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
import structlog
from litestar import Request, get, patch, post
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter
from redis.exceptions import RedisError

from parking import audit as audit_log
from parking.anomalies import service as anomalies
from parking.anomalies.model import AnomalyNotFound, AnomalyView, Remark, Resolution
from parking.api.auth import principal_of
from parking.api.denied import audit_staff_denied, require_lot
from parking.api.infra import connection, infra_of
from parking.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    LimitParam,
    decode_cursor,
    page,
)
from parking.api.routing import clock_of, operator_only, problem_responses, staff_readers
from parking.devices import service as devices
from parking.devices.model import Device, DeviceKind, DeviceNotFound, Provisioned
from parking.lots import service as lots
from parking.lots.model import (
    Access,
    BlacklistEntryNotFound,
    Ident,
    LaneView,
    Lot,
    LotChange,
    NewLane,
    NewLot,
    NewSpace,
    SpaceView,
    Verdict,
)
from parking.occupancy import plate_flags
from parking.occupancy.model import CoreNotReady
from parking.payments import decisions
from parking.plates import normalise
from parking.pricing import Pricer
from parking.stack import service as stack_service

log = structlog.get_logger("parking.api.operators")
#: the GET routes: operators see their company's lots, the city every lot
BODY_MAX: Final = 8 * 1024
_RETRY_AFTER_S: Final = "5"

_PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"
IdentParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PlateText = Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["赣B12345"])]
AnomalyIdParam = Annotated[str, PathParameter(min_length=1, max_length=200)]


# ------------------------------------------------------------------ lots


class LotPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Lot]
    next_cursor: str | None


class SpacePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SpaceView]
    next_cursor: str | None


async def _lot_in_scope(
    request: Request[Any, Any, Any],
    conn: asyncpg.Connection,
    lot_id: str,
    access: Access,
    action: str,
) -> None:
    """404 unless the caller may act on the lot (another company's is audited too)."""
    await require_lot(
        infra_of(request.app),
        conn,
        principal_of(request),
        lot_id,
        access=access,
        action=action,
        now=clock_of(request).now(),
    )


@get(
    "/v1/operator/lots",
    guards=staff_readers,
    tags=["operator"],
    summary="Lots of the city (an operator: its company's), by id",
    responses=problem_responses(400, 401, 403),
)
async def list_lots(
    request: Request[Any, Any, Any], cursor: CursorParam = None, limit: LimitParam = DEFAULT_LIMIT
) -> LotPage:
    after = decode_cursor(cursor)
    async with connection(infra_of(request.app)) as conn:
        rows = await lots.list_lots(conn, principal_of(request), after=after, limit=limit + 1)
    items, next_cursor = page(rows, limit, key=lambda lot: lot.id)
    return LotPage(items=items, next_cursor=next_cursor)


@post(
    "/v1/operator/lots",
    guards=operator_only,
    tags=["operator"],
    summary="Add a lot",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 409, 413),
)
async def create_lot(request: Request[Any, Any, Any], data: JSONBody[NewLot]) -> Lot:
    """The new lot is its creator's company's."""
    async with connection(infra_of(request.app), transaction=True) as conn:
        return await lots.create_lot(
            conn, data, by=principal_of(request), now=clock_of(request).now()
        )


@patch(
    "/v1/operator/lots/{lot_id:str}",
    guards=operator_only,
    tags=["operator"],
    summary="Change a lot's policies or capacity",
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413),
)
async def change_lot(
    request: Request[Any, Any, Any], lot_id: FromPath[IdentParam], data: JSONBody[LotChange]
) -> Lot:
    """Gateways take the new capacity and full policy up at their next directory refresh."""
    async with connection(infra_of(request.app), transaction=True) as conn:
        await _lot_in_scope(request, conn, lot_id, Access.CHANGE, "lot.change")
        return await lots.change_lot(
            conn, lot_id, data, by=principal_of(request), now=clock_of(request).now()
        )


# ------------------------------------------------------------------ lanes and spaces


@get(
    "/v1/operator/lots/{lot_id:str}/lanes",
    guards=staff_readers,
    tags=["operator"],
    summary="A lot's lanes",
    responses=problem_responses(400, 401, 403, 404),
)
async def list_lanes(
    request: Request[Any, Any, Any], lot_id: FromPath[IdentParam]
) -> list[LaneView]:
    async with connection(infra_of(request.app)) as conn:
        await _lot_in_scope(request, conn, lot_id, Access.READ, "lanes.read")
        return await lots.list_lanes(conn, lot_id)


@post(
    "/v1/operator/lots/{lot_id:str}/lanes",
    guards=operator_only,
    tags=["operator"],
    summary="Add a lane to a lot",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def add_lane(
    request: Request[Any, Any, Any], lot_id: FromPath[IdentParam], data: JSONBody[NewLane]
) -> LaneView:
    async with connection(infra_of(request.app), transaction=True) as conn:
        await _lot_in_scope(request, conn, lot_id, Access.CHANGE, "lane.add")
        return await lots.add_lane(
            conn, lot_id, data, by=principal_of(request), now=clock_of(request).now()
        )


@get(
    "/v1/operator/lots/{lot_id:str}/spaces",
    guards=staff_readers,
    tags=["operator"],
    summary="A lot's spaces, by id",
    responses=problem_responses(400, 401, 403, 404),
)
async def list_spaces(
    request: Request[Any, Any, Any],
    lot_id: FromPath[IdentParam],
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> SpacePage:
    after = decode_cursor(cursor)
    async with connection(infra_of(request.app)) as conn:
        await _lot_in_scope(request, conn, lot_id, Access.READ, "spaces.read")
        rows = await lots.list_spaces(conn, lot_id, after=after, limit=limit + 1)
    items, next_cursor = page(rows, limit, key=lambda s: s.space_id)
    return SpacePage(items=items, next_cursor=next_cursor)


@post(
    "/v1/operator/lots/{lot_id:str}/spaces",
    guards=operator_only,
    tags=["operator"],
    summary="Add a space to a lot",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def add_space(
    request: Request[Any, Any, Any], lot_id: FromPath[IdentParam], data: JSONBody[NewSpace]
) -> SpaceView:
    async with connection(infra_of(request.app), transaction=True) as conn:
        await _lot_in_scope(request, conn, lot_id, Access.CHANGE, "space.add")
        return await lots.add_space(
            conn, lot_id, data, by=principal_of(request), now=clock_of(request).now()
        )


# ------------------------------------------------------------------ devices


class NewDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A gate at a lane, a sensor at a space, or a sign (id default: ``{lot}-{lane|space}``)."""

    lot_id: Ident
    lane_id: Ident | None = None
    space_id: Ident | None = None
    kind: DeviceKind | None = None
    device_id: Ident | None = None


class DevicePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Device]


@get(
    "/v1/operator/devices",
    guards=staff_readers,
    tags=["operator"],
    summary="Devices of the registry (of one lot)",
    responses=problem_responses(400, 401, 403),
)
async def list_devices(
    request: Request[Any, Any, Any],
    lot_id: Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    live_only: Annotated[bool, QueryParameter()] = False,
) -> DevicePage:
    async with connection(infra_of(request.app)) as conn:
        if lot_id is not None:
            await _lot_in_scope(request, conn, lot_id, Access.READ, "devices.read")
        found = await devices.list_devices(
            conn,
            lot_id=lot_id,
            live_only=live_only,
            company_id=lots.lot_filter(principal_of(request)),
        )
    return DevicePage(items=found)


@post(
    "/v1/operator/devices",
    guards=operator_only,
    tags=["operator"],
    summary="Register a device; its secret is in this answer only",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def add_device(request: Request[Any, Any, Any], data: JSONBody[NewDevice]) -> Provisioned:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        await _lot_in_scope(request, conn, data.lot_id, Access.CHANGE, "device.add")
        made = await devices.add_device(
            conn,
            lot_id=data.lot_id,
            lane_id=data.lane_id,
            space_id=data.space_id,
            kind=data.kind,
            device_id=data.device_id,
            broker=stack_service.mosquitto_broker(infra.settings),
        )
        await audit_log.record_by(
            conn,
            principal_of(request),
            action="device.added",
            target=f"device:{made.device_id}",
            details={"lot_id": made.lot_id, "lane_id": made.lane_id, "space_id": made.space_id},
            now=clock_of(request).now(),
        )
    return made


async def _device_in_scope(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, device_id: str
) -> None:
    """An unknown device is the registry's own 404; another company's is this one."""
    lot_id = await lots.device_lot(conn, device_id)
    if lot_id is None:
        return
    who = principal_of(request)
    if await lots.lot_verdict(conn, who, lot_id, Access.CHANGE) is Verdict.ALLOWED:
        return
    await audit_staff_denied(
        infra_of(request.app),
        who,
        action="device.revoke",
        target=f"device:{device_id}",
        now=clock_of(request).now(),
    )
    raise DeviceNotFound(f"device {device_id!r} does not exist")


@post(
    "/v1/operator/devices/{device_id:str}/revoke",
    guards=operator_only,
    tags=["operator"],
    summary="Revoke a device: the broker refuses it at once (idempotent)",
    status_code=200,
    responses=problem_responses(400, 401, 403, 404, 503),
)
async def revoke_device(request: Request[Any, Any, Any], device_id: FromPath[IdentParam]) -> Device:
    infra = infra_of(request.app)
    now = clock_of(request).now()
    async with connection(infra) as conn:
        await _device_in_scope(request, conn, device_id)
        device = await devices.revoke_device(
            conn, device_id, at=now, broker=stack_service.mosquitto_broker(infra.settings)
        )
        await audit_log.record_by(
            conn,
            principal_of(request),
            action="device.revoked",
            target=f"device:{device_id}",
            details={},
            now=now,
        )
    return device


# ------------------------------------------------------------------ blacklist


class BlacklistRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The plate goes in the body: a plate is personal data and never goes in a URL."""

    plate: PlateText
    reason: Remark


class BlacklistRemoval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    plate: PlateText


class BlacklistEntry(msgspec.Struct, frozen=True, kw_only=True):
    """``held_now`` says whether entry lanes hold the plate already; when the occupancy
    core is being rebuilt it takes the blacklist from the database instead."""

    plate: str
    reason: str | None
    held_now: bool


async def _flag(redis: Any, plate: str, reason: str | None) -> bool:
    try:
        await plate_flags.set_blacklisted(redis, plate, reason)
    except (CoreNotReady, RedisError) as exc:
        # The table is the system of record: the rebuild and the periodic flag
        # sync put it into the core, so the change is not lost, only later.
        log.warning("blacklist_not_live", plate=plate, error=str(exc))
        return False
    return True


async def _blacklist_entry_in_scope(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, plate: str, action: str
) -> None:
    """The list is the city's, an entry its company's: another company's is a 404, audited."""
    who = principal_of(request)
    if await lots.blacklist_verdict(conn, who, plate) is not Verdict.FOREIGN:
        return
    await audit_staff_denied(
        infra_of(request.app),
        who,
        action=action,
        target=f"plate:{plate}",
        now=clock_of(request).now(),
    )
    raise BlacklistEntryNotFound(f"{plate} is on the blacklist of another company")


@post(
    "/v1/operator/blacklist",
    guards=operator_only,
    tags=["operator"],
    summary="Blacklist a plate: held at every entry lane of the city from its next arrival "
    "(idempotent; the plate in the body)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413),
)
async def blacklist_plate(
    request: Request[Any, Any, Any], data: JSONBody[BlacklistRequest]
) -> BlacklistEntry:
    infra = infra_of(request.app)
    text = normalise(data.plate)
    async with connection(infra, transaction=True) as conn:
        await _blacklist_entry_in_scope(request, conn, text, "blacklist.add")
        await plate_flags.blacklist(
            conn, text, data.reason, by=principal_of(request), now=clock_of(request).now()
        )
    held = await _flag(infra.redis, text, data.reason)
    return BlacklistEntry(plate=text, reason=data.reason, held_now=held)


@post(
    "/v1/operator/blacklist/removals",
    guards=operator_only,
    tags=["operator"],
    summary="Take a plate off the blacklist (idempotent; the plate in the body)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413),
)
async def unblacklist_plate(
    request: Request[Any, Any, Any], data: JSONBody[BlacklistRemoval]
) -> BlacklistEntry:
    infra = infra_of(request.app)
    text = normalise(data.plate)
    async with connection(infra, transaction=True) as conn:
        await _blacklist_entry_in_scope(request, conn, text, "blacklist.remove")
        await plate_flags.unblacklist(
            conn, text, by=principal_of(request), now=clock_of(request).now()
        )
    cleared = await _flag(infra.redis, text, None)
    return BlacklistEntry(plate=text, reason=None, held_now=not cleared)


# ------------------------------------------------------------------ anomalies


class AnomalyPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AnomalyView]
    next_cursor: str | None


@get(
    "/v1/operator/anomalies",
    guards=staff_readers,
    tags=["operator"],
    summary="The review queue (an operator: its company's lots'), oldest first",
    responses=problem_responses(400, 401, 403),
)
async def anomaly_queue(
    request: Request[Any, Any, Any],
    status: Annotated[Literal["open", "resolved"], QueryParameter()] = "open",
    kind: Annotated[str | None, QueryParameter(pattern=r"^[a-z_]{1,64}$")] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> AnomalyPage:
    after = decode_cursor(cursor)
    async with connection(infra_of(request.app)) as conn:
        rows = await anomalies.queue(
            conn, principal_of(request), status=status, kind=kind, after=after, limit=limit + 1
        )
    items, next_cursor = page(rows, limit, key=lambda a: a.id)
    return AnomalyPage(items=items, next_cursor=next_cursor)


async def _anomaly_in_scope(
    request: Request[Any, Any, Any], conn: asyncpg.Connection, anomaly: AnomalyView
) -> None:
    """Another company's anomaly (its session, its money) is a 404, audited; one that
    names no lot belongs to no company, so no operator decides it."""
    who = principal_of(request)
    lot_id = anomaly.lot_id
    if (
        lot_id is not None
        and await lots.lot_verdict(conn, who, lot_id, Access.CHANGE) is Verdict.ALLOWED
    ):
        return
    await audit_staff_denied(
        infra_of(request.app),
        who,
        action="anomaly.resolve",
        target=f"anomaly:{anomaly.id}",
        now=clock_of(request).now(),
    )
    raise AnomalyNotFound(f"anomaly {anomaly.id} does not exist")


@post(
    "/v1/operator/anomalies/{anomaly_id:str}/resolve",
    guards=operator_only,
    tags=["operator"],
    summary="Resolve an anomaly: fix a plate, add a missed exit, or void the session",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def resolve_anomaly(
    request: Request[Any, Any, Any],
    anomaly_id: FromPath[AnomalyIdParam],
    data: JSONBody[Resolution],
) -> AnomalyView:
    """A missed exit or a void of an open session also ends it in the live core (the lot's
    count, the plate's city-wide entry); the audit line says what the core did."""
    infra = infra_of(request.app)
    now = clock_of(request).now()

    async def pricer() -> Pricer:
        loaded: Pricer = await request.app.state.pricer_cache.get(infra.pool)
        return loaded

    async with connection(infra, transaction=True) as conn:
        anomaly = await anomalies.lock(conn, anomaly_id)
        await _anomaly_in_scope(request, conn, anomaly)
        resolved, effect = await anomalies.resolve(
            conn, infra.redis, anomaly, data, pricer=pricer, by=principal_of(request), now=now
        )
    # Refunds the decision asked for go to the provider only now that it is committed
    # (a provider never waits on our transaction); what fails here the sweeper sends.
    if refunds := effect.get("money", {}).get("refunds"):
        await decisions.submit_refunds(
            infra.pool, infra.providers, refunds, notify_base_url=infra.notify_base_url, now=now
        )
    return resolved


ROUTES = [
    list_lots,
    create_lot,
    change_lot,
    list_lanes,
    add_lane,
    list_spaces,
    add_space,
    list_devices,
    add_device,
    revoke_device,
    blacklist_plate,
    unblacklist_plate,
    anomaly_queue,
    resolve_anomaly,
]
