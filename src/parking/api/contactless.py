"""Contactless payment (无感支付) for a driver's plates: on, off, and which are on.

Two ways on. An app that knows the driver's id at the provider (WeChat openid)
authorises the plate there and says so: ``PUT /v1/me/contactless/{vehicle_id}`` (a
binding's id from ``GET /v1/me/vehicles``: a plate never goes in a URL). A page
opened from a scanned code does not know it, so it makes the trip to the provider
and back (``parking.payments.handover``): ``POST .../authorisation`` answers the
provider's sign-in address (WeChat 网页授权); the provider comes back to
``GET /q/contactless/back`` with a ``code``, which the platform exchanges for the
openid, then sends the browser on to the provider's authorising page (the 停车服务
mini program; on ``make run`` the sandbox's page); that page comes back to
``GET /q/contactless/done``, which stores the mandate exactly as the ``PUT`` does
(the provider is asked first) and returns to the page the trip started on, with
``?contactless=on`` or ``=declined``. The two ``/q/contactless`` addresses are
public (a cross-site redirect carries no SameSite=Strict cookie); the one-time
``state`` is what authenticates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import JSONBody, QueryParameter

from parking.accounts import service as accounts
from parking.api.auth import principal_of
from parking.api.denied import audit_denied
from parking.api.driver_page import sorry_page
from parking.api.infra import Infra, connection, infra_of
from parking.api.routing import VehicleIdParam, clock_of, driver_only, problem_responses
from parking.errors import NotFound, ParkingError
from parking.payments import contactless as payment_contactless
from parking.payments import handover
from parking.payments.model import MandateNotAuthorised, NotContactless, UnknownProvider
from parking.payments.port import ContactlessProvider, PaymentProvider

BODY_MAX: Final = 2 * 1024
_PUBLIC: Final = {"exclude_from_auth": True}
ProviderName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
PlateColor = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{1,16}$")]
ProviderQuery = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="only this provider's mandate; omit to turn off every provider's",
    ),
]
#: a page a scanned code opened (where the trip to the provider ends)
ReturnPath = Annotated[str, msgspec.Meta(pattern=r"^/q/[A-Za-z0-9_-]{1,512}$")]
#: OAuth's ``state`` (``state`` itself is a name Litestar keeps for the app's state)
StateQuery = Annotated[str, QueryParameter(name="state", min_length=1, max_length=128)]
CodeQuery = Annotated[str, QueryParameter(min_length=1, max_length=512)]
BACK_PATH: Final = "/q/contactless/back"
DONE_PATH: Final = "/q/contactless/done"


class MandateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The provider the driver authorised deductions at, and their id there (openid / user id)."""

    provider: ProviderName
    payer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    plate_color: PlateColor = "BLUE"


class MandateView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    plate: str
    state: str
    updated_at: datetime


class MyMandates(msgspec.Struct, frozen=True, kw_only=True):
    items: list[MandateView]


class AuthorisationRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """From a page: which provider, and the page to come back to."""

    return_to: ReturnPath
    provider: ProviderName = "wechat"
    plate_color: PlateColor = "BLUE"


class Authorisation(msgspec.Struct, frozen=True, kw_only=True):
    #: where to send the browser: the provider's sign-in (WeChat 网页授权)
    url: str
    expires_in_s: int


async def _own_plate(infra: Infra, account_id: str, vehicle_id: str, action: str) -> str:
    """The plate of my binding ``vehicle_id``, verified or not (acting on it reveals
    nothing); another account's binding is a 404, audited, one never made a plain 404."""
    async with connection(infra) as conn:
        plate = await accounts.plate_of_vehicle(conn, account_id, vehicle_id)
        if plate is None:
            if await accounts.vehicle_of_another(conn, account_id, vehicle_id):
                await audit_denied(
                    conn,
                    actor=account_id,
                    action=action,
                    target=f"vehicle:{vehicle_id}",
                    now=infra.clock.now(),
                )
            raise NotFound(f"vehicle {vehicle_id} is not bound to your account")
    return plate


def _provider(infra: Infra, name: str) -> PaymentProvider:
    provider = infra.providers.get(name)
    if provider is None:
        raise UnknownProvider(name)
    return provider


async def _enable(
    infra: Infra,
    provider: PaymentProvider,
    *,
    account_id: str,
    plate: str,
    payer_id: str,
    plate_color: str,
    now: datetime,
) -> MandateView:
    """Store the mandate (the provider asked first); the provider's confirmation of the
    plate verifies my binding of it."""
    mandate = await payment_contactless.enable_mandate(
        infra.pool,
        provider,
        plate=plate,
        payer_id=payer_id,
        account_id=account_id,
        by=account_id,
        now=now,
        plate_color=plate_color,
    )
    async with connection(infra, transaction=True) as conn:
        await accounts.confirm_plate(
            conn, account_id=account_id, plate=plate, provider=provider.name, now=now
        )
    return MandateView(
        id=mandate.id,
        provider=mandate.provider,
        plate=mandate.plate,
        state=str(mandate.state),
        updated_at=mandate.updated_at,
    )


@get(
    "/v1/me/contactless",
    guards=driver_only,
    tags=["bills"],
    summary="My plates with contactless payment (无感支付) on",
    responses=problem_responses(401, 403),
)
async def my_mandates(request: Request[Any, Any, Any]) -> MyMandates:
    infra = infra_of(request.app)
    async with connection(infra) as conn:
        mandates = await payment_contactless.mandates_of_account(
            conn, principal_of(request).subject
        )
    return MyMandates(
        items=[
            MandateView(
                id=m.id,
                provider=m.provider,
                plate=m.plate,
                state=str(m.state),
                updated_at=m.updated_at,
            )
            for m in mandates
        ]
    )


@put(
    "/v1/me/contactless/{vehicle_id:str}",
    guards=driver_only,
    tags=["bills"],
    summary="Turn contactless payment (无感支付) on for one of my plates",
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 502, 503),
)
async def enable_contactless(
    request: Request[Any, Any, Any], vehicle_id: VehicleIdParam, data: JSONBody[MandateRequest]
) -> MandateView:
    """The driver authorises deductions at the provider first; the provider is asked
    before the mandate is stored (409 if it does not show the plate as authorised).
    The provider's confirmation of the plate verifies my binding of it."""
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    text = await _own_plate(infra, account_id, vehicle_id, "denied:contactless")
    return await _enable(
        infra,
        _provider(infra, data.provider),
        account_id=account_id,
        plate=text,
        payer_id=data.payer_id,
        plate_color=data.plate_color,
        now=clock_of(request).now(),
    )


@post(
    "/v1/me/contactless/{vehicle_id:str}/authorisation",
    guards=driver_only,
    tags=["bills"],
    summary="From a page: where to send the browser to turn contactless payment on "
    "(the provider's sign-in, then its authorising page, then back to return_to)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413),
)
async def start_authorisation(
    request: Request[Any, Any, Any],
    vehicle_id: VehicleIdParam,
    data: JSONBody[AuthorisationRequest],
) -> Authorisation:
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    text = await _own_plate(infra, account_id, vehicle_id, "denied:contactless")
    provider = _provider(infra, data.provider)
    if not isinstance(provider, ContactlessProvider):
        raise NotContactless(f"{provider.name} has no contactless rail")
    state = await handover.begin(
        infra.redis,
        handover.Handover(
            account_id=account_id,
            plate=text,
            plate_color=data.plate_color,
            provider=provider.name,
            return_to=data.return_to,
        ),
    )
    url = provider.payer_login_url(_public(infra) + BACK_PATH, state)
    if url is None:
        await handover.finish(infra.redis, state)
        raise NotContactless(
            f"{provider.name} cannot be turned on from a page here: use the provider's app"
        )
    return Authorisation(url=url, expires_in_s=handover.TTL_S)


def _public(infra: Infra) -> str:
    return infra.settings.public_base_url.rstrip("/")


def _back_to(infra: Infra, path: str, outcome: str) -> Response[bytes]:
    return Response(
        content=b"",
        status_code=303,
        headers={
            "Location": f"{_public(infra)}{path}?contactless={outcome}",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


def _expired() -> Response[bytes]:
    return sorry_page(410, "链接已过期", "开通无感支付的链接已过期，请回到停车页面重新开通。")


@get(BACK_PATH, opt=_PUBLIC, include_in_schema=False)
async def provider_signed_in(
    request: Request[Any, Any, Any], trip_state: StateQuery, code: CodeQuery
) -> Response[bytes]:
    """The provider's sign-in came back: learn the payer's id, go on to authorise."""
    infra = infra_of(request.app)
    try:
        trip = await handover.get(infra.redis, trip_state)
        provider = _provider(infra, trip.provider)
        if not isinstance(provider, ContactlessProvider):
            raise NotContactless(f"{provider.name} has no contactless rail")
        payer_id = await provider.payer_id_of(code)
        trip = await handover.learned_payer(infra.redis, trip_state, payer_id)
        invitation = await provider.create_mandate(
            trip.plate,
            trip.plate_color,
            payer_id,
            return_url=f"{_public(infra)}{DONE_PATH}?state={trip_state}",
        )
    except handover.HandoverExpired:
        return _expired()
    except ParkingError:
        return sorry_page(502, "暂时无法开通", "支付渠道暂时无法开通无感支付，请稍后再试。")
    if invitation.url is None:
        await handover.finish(infra.redis, trip_state)
        return sorry_page(409, "请在微信中开通", "请在微信“停车服务”小程序中为这辆车开通无感支付。")
    return Response(
        content=b"",
        status_code=302,
        headers={"Location": invitation.url, "Cache-Control": "no-store"},
    )


@get(DONE_PATH, opt=_PUBLIC, include_in_schema=False)
async def provider_authorised(
    request: Request[Any, Any, Any], trip_state: StateQuery
) -> Response[bytes]:
    """Back from the provider's authorising page (agreed or not): store the mandate if the
    provider shows it, and return to the page the trip began on."""
    infra = infra_of(request.app)
    try:
        trip = await handover.finish(infra.redis, trip_state)
    except handover.HandoverExpired:
        return _expired()
    if trip.payer_id is None:
        return _back_to(infra, trip.return_to, "declined")
    try:
        await _enable(
            infra,
            _provider(infra, trip.provider),
            account_id=trip.account_id,
            plate=trip.plate,
            payer_id=trip.payer_id,
            plate_color=trip.plate_color,
            now=clock_of(request).now(),
        )
    except MandateNotAuthorised:
        return _back_to(infra, trip.return_to, "declined")
    except ParkingError:
        return _back_to(infra, trip.return_to, "failed")
    return _back_to(infra, trip.return_to, "on")


@delete(
    "/v1/me/contactless/{vehicle_id:str}",
    guards=driver_only,
    tags=["bills"],
    summary="Turn contactless payment off for one of my plates (idempotent)",
    responses=problem_responses(400, 401, 403, 404),
)
async def disable_contactless(
    request: Request[Any, Any, Any], vehicle_id: VehicleIdParam, provider: ProviderQuery = None
) -> None:
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    text = await _own_plate(infra, account_id, vehicle_id, "denied:contactless")
    if provider is not None and provider not in infra.providers:
        raise UnknownProvider(provider)
    names = [provider] if provider is not None else sorted(infra.providers)
    async with connection(infra, transaction=True) as conn:
        for name in names:
            await payment_contactless.disable_mandate(
                conn, provider=name, plate=text, by=account_id, now=clock_of(request).now()
            )


ROUTES = [
    my_mandates,
    enable_contactless,
    start_authorisation,
    provider_signed_in,
    provider_authorised,
    disable_contactless,
]
