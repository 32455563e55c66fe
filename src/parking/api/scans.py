"""Scan routes (一次扫码): decode the scanned code, check it is the right kind, and hand
it to ``parking.scans``; the flows (the live core, the session, the lane command) are
there.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, post
from litestar.params import JSONBody

from parking.accounts import service as accounts
from parking.api.auth import principal_of
from parking.api.denied import audit_if_held_by_another
from parking.api.drivers import keyring_of
from parking.api.infra import Infra, connection, infra_of
from parking.api.routing import clock_of, driver_only, problem_responses
from parking.devices.messages import Topics
from parking.errors import NotFound
from parking.plates import normalise
from parking.pricing import Pricer
from parking.qr import logic as qr_logic
from parking.qr import service as qr
from parking.qr.model import QrTarget
from parking.qr.service import Place
from parking.scans import service as scans
from parking.scans.service import ScanSession, WrongCode

BODY_MAX: Final = 2 * 1024

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
PlateText = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


class ScanRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the app's scanner read (the printed URL or the token after ``/q/``)."""

    code: Code


class SpaceScanRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: Code
    plate: PlateText


#: Places resolved recently, by target. Lanes and spaces are added and removed
#: by operators a few times a year; a scan at a busy gate should not cost two
#: PostgreSQL reads each time. A removed place keeps resolving for this long.
_PLACE_TTL_S: Final = 10.0
_places: dict[QrTarget, tuple[float, Place]] = {}


async def scan_place(infra: Infra, code: str) -> Place:
    """What a scanned code points at; the signature is checked on every scan."""
    token = qr_logic.verify(
        code,
        keyring=keyring_of(infra),
        now=infra.clock.now(),
        prefix=qr_logic.prefix_of(infra.settings.public_base_url),
    )
    cached = _places.get(token.target)
    if cached is not None and time.monotonic() - cached[0] < _PLACE_TTL_S:
        return cached[1]
    async with connection(infra) as conn:
        place = await qr.place_of(conn, token.target)
    if len(_places) > 10_000:
        _places.clear()
    _places[token.target] = (time.monotonic(), place)
    return place


def _core(infra: Infra) -> scans.Core:
    topics = Topics(infra.settings.topic_prefix)

    def publish(place: Place, command: scans.LaneCommand) -> None:
        assert place.lane_id is not None
        topic = topics.commands(place.lot_id, place.lane_id)
        infra.publisher.publish(topic, msgspec.json.encode(command), qos=1)

    return scans.Core(pool=infra.pool, redis=infra.redis, publish=publish)


@post(
    "/v1/scans/entry",
    guards=driver_only,
    tags=["scans"],
    summary="Scan an entry lane code: a session tied to my account opens the barrier (无牌车)",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def scan_entry(request: Request[Any, Any, Any], data: JSONBody[ScanRequest]) -> ScanSession:
    """Idempotent per account: scanning again while the session is open answers with
    the same session and opens the barrier again. One unplated session per account
    city-wide (409 with the lot otherwise); a full lot is a 409 unless it opens when full."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    place = await scan_place(infra, data.code)
    if place.kind != "lane" or place.direction != "in" or place.lane_id is None:
        raise WrongCode("this is not an entry lane code")
    return await scans.enter(_core(infra), place, account_id, clock_of(request).now())


@post(
    "/v1/scans/exit",
    guards=driver_only,
    tags=["scans"],
    summary="Scan an exit lane code: my account-tied session closes, is billed, the barrier opens",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503),
)
async def scan_exit(request: Request[Any, Any, Any], data: JSONBody[ScanRequest]) -> ScanSession:
    """The fee becomes an open bill of my account (leave first, pay later), less
    what I paid in the lot (nothing within the exit window of that payment)."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    place = await scan_place(infra, data.code)
    if place.kind != "lane" or place.direction != "out" or place.lane_id is None:
        raise WrongCode("this is not an exit lane code")
    now = clock_of(request).now()
    pricer: Pricer = await request.app.state.pricer_cache.get(infra.pool)
    return await scans.leave(_core(infra), place, account_id, now, pricer)


@post(
    "/v1/scans/space",
    guards=driver_only,
    tags=["scans"],
    summary="Scan an on-street space code: claim the stay there for one of my plates",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 503),
)
async def scan_space(
    request: Request[Any, Any, Any], data: JSONBody[SpaceScanRequest]
) -> ScanSession:
    """The entry is when the space's sensor saw a car arrive, or now if it has not yet.
    A plate with an open session anywhere else is a 409."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    plate = normalise(data.plate)
    place = await scan_place(infra, data.code)
    if place.kind != "space" or place.space_id is None:
        raise WrongCode("this is not a space code")
    async with connection(infra) as conn:
        # Any binding of mine will do: the stay claimed here is my own act, and
        # the answer reveals nothing about where the car was.
        bound = await accounts.my_plates(conn, account_id, plate=plate, verified=False)
    if not bound:
        await audit_if_held_by_another(
            infra,
            actor=account_id,
            action="denied:scan.space",
            plate=plate,
            now=clock_of(request).now(),
        )
        raise NotFound(f"plate {plate} is not bound to your account")
    return await scans.claim_space(_core(infra), place, account_id, plate, clock_of(request).now())


ROUTES = [scan_entry, scan_exit, scan_space]
