"""The sandbox provider's HTTP face (Litestar; ``create_app`` is granian's factory).

``/v3/...`` speaks WeChat Pay API v3: every request must carry a valid merchant
``Authorization`` (else 401 ``{"code": "SIGN_ERROR", ...}``), every answer is
JSON signed with the platform key (``Wechatpay-*`` headers), errors in
WeChat's ``{"code", "message"}`` shape. The bill file download is signed-in
but unsigned-out, as WeChat documents.

``/sandbox/...`` is the sandbox's own control surface (pay, fail, mandates,
clock, misbehaviour, delivery log). It has no authentication: the process
binds to 127.0.0.1 by default and is never deployed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import httpx
import msgspec
import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State

from counterparts.payments import cashier, messages
from counterparts.payments import keys as key_files
from counterparts.payments.alipay import AlipayGateway
from counterparts.payments.model import (
    ApiError,
    ClockCommand,
    CloseRequest,
    ControlCommand,
    DeductRequest,
    FailCommand,
    H5OrderRequest,
    MandateCommand,
    NativeOrderRequest,
    ParkingEntryRequest,
    PayCommand,
    RefundRequest,
)
from counterparts.payments.notifier import Notifier
from counterparts.payments.service import SETTINGS_ENV, SandboxPay, SandboxSettings
from counterparts.payments.store import SandboxStore
from parking.clock import SystemClock
from parking.observability import configure_logging
from parking.payments.wire import wechat as wire

DATABASE: Final = "sandbox.sqlite3"

log = structlog.get_logger("parking.sandbox_pay")
_T = TypeVar("_T")
_Req = Request[Any, Any, State]


def _service(request: _Req) -> SandboxPay:
    service: SandboxPay = request.app.state.sandbox
    return service


def _target(request: _Req) -> str:
    """The request target exactly as sent: what the merchant signed."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string") or b""
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


def _decode(body: bytes, type_: type[_T]) -> _T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "PARAM_ERROR", f"参数错误: {exc}") from exc


def _param(request: _Req, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ApiError(400, "PARAM_ERROR", f"缺少参数 {name}")
    return str(value)


def _signed(service: SandboxPay, status: int, payload: Any | None) -> Response[bytes]:
    body = b"" if payload is None else msgspec.json.encode(payload)
    headers = {**service.sign(body), "Request-ID": os.urandom(16).hex()}
    return Response(
        content=body,
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _plain(status: int, payload: Any) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(payload), status_code=status, media_type="application/json"
    )


async def _v3(request: _Req) -> tuple[SandboxPay, bytes, str]:
    """Outage check, then the merchant signature: ``(service, raw body, mchid)``."""
    service = _service(request)
    service.check_outage()
    body = await request.body()
    mchid = service.authenticate(
        request.headers.get("Authorization", ""),
        method=request.method,
        target=_target(request),
        body=body,
    )
    return service, body, mchid


def api_error_handler(request: _Req, exc: ApiError) -> Response[bytes]:
    if request.url.path.startswith("/v3/"):
        return _signed(_service(request), exc.status, {"code": exc.code, "message": exc.message})
    return _plain(exc.status, {"code": exc.code, "message": exc.message})


def internal_error_handler(request: _Req, exc: Exception) -> Response[bytes]:
    log.error("unhandled error", path=request.url.path, exc_info=exc)
    return api_error_handler(request, ApiError(500, "SYSTEM_ERROR", "系统错误"))


# --------------------------------------------------------------------------- v3: orders


@post("/v3/pay/transactions/native")
async def create_native(request: _Req) -> Response[bytes]:
    service, body, mchid = await _v3(request)
    code_url = service.create_native(_decode(body, NativeOrderRequest), auth_mchid=mchid)
    return _signed(service, 200, {"code_url": code_url})


@post("/v3/pay/transactions/h5")
async def create_h5(request: _Req) -> Response[bytes]:
    service, body, mchid = await _v3(request)
    h5_url = service.create_h5(
        _decode(body, H5OrderRequest),
        auth_mchid=mchid,
        cashier=service.settings.public_url + cashier.CASHIER_PATH,
    )
    return _signed(service, 200, {"h5_url": h5_url})


@get("/v3/pay/transactions/out-trade-no/{out_trade_no:str}")
async def query_native(request: _Req, out_trade_no: str) -> Response[bytes]:
    service, _, _ = await _v3(request)
    payload = service.query_native(out_trade_no, mchid=_param(request, "mchid"))
    return _signed(service, 200, payload)


@post("/v3/pay/transactions/out-trade-no/{out_trade_no:str}/close")
async def close_native(request: _Req, out_trade_no: str) -> Response[bytes]:
    service, body, _ = await _v3(request)
    service.close_native(out_trade_no, _decode(body, CloseRequest))
    return _signed(service, 204, None)


@post("/v3/refund/domestic/refunds")
async def create_refund(request: _Req) -> Response[bytes]:
    service, body, _ = await _v3(request)
    return _signed(service, 200, service.create_refund(_decode(body, RefundRequest)))


@get("/v3/refund/domestic/refunds/{out_refund_no:str}")
async def query_refund(request: _Req, out_refund_no: str) -> Response[bytes]:
    service, _, _ = await _v3(request)
    return _signed(service, 200, service.query_refund(out_refund_no))


# --------------------------------------------------------------------------- v3: bills


@get("/v3/bill/tradebill")
async def trade_bill(request: _Req) -> Response[bytes]:
    service, _, _ = await _v3(request)
    try:
        bill_date = date.fromisoformat(_param(request, "bill_date"))
        bill_type = wire.TradeBillType(request.query_params.get("bill_type") or "ALL")
    except ValueError as exc:
        raise ApiError(400, "PARAM_ERROR", f"参数错误: {exc}") from exc
    if request.query_params.get("tar_type"):
        raise ApiError(400, "PARAM_ERROR", "sandbox serves uncompressed bills only")
    digest, token = service.trade_bill(bill_date, bill_type)
    base = str(request.base_url).rstrip("/")
    return _signed(
        service,
        200,
        {
            "hash_type": "SHA1",
            "hash_value": digest,
            "download_url": f"{base}/v3/billdownload/file?token={token}",
        },
    )


@get("/v3/billdownload/file")
async def bill_file(request: _Req) -> Response[bytes]:
    service, _, _ = await _v3(request)
    content = service.bill_file(_param(request, "token"))
    # WeChat sends the file without Wechatpay-* signature headers; the SHA1
    # from the signed tradebill answer is the integrity check.
    return Response(content=content, status_code=200, media_type="application/octet-stream")


# --------------------------------------------------------------------------- v3: parking service


@get("/v3/vehicle/parking/services/find")
async def find_service(request: _Req) -> Response[bytes]:
    service, _, _ = await _v3(request)
    payload = service.find_service(
        appid=_param(request, "appid"),
        plate_number=_param(request, "plate_number"),
        plate_color=_param(request, "plate_color"),
        openid=_param(request, "openid"),
    )
    return _signed(service, 200, payload)


@post("/v3/vehicle/parking/parkings")
async def create_parking(request: _Req) -> Response[bytes]:
    service, body, _ = await _v3(request)
    return _signed(service, 200, service.create_parking(_decode(body, ParkingEntryRequest)))


@post("/v3/vehicle/transactions/parking")
async def deduct(request: _Req) -> Response[bytes]:
    service, body, mchid = await _v3(request)
    return _signed(service, 200, service.deduct(_decode(body, DeductRequest), auth_mchid=mchid))


@get("/v3/vehicle/transactions/out-trade-no/{out_trade_no:str}")
async def query_parking_order(request: _Req, out_trade_no: str) -> Response[bytes]:
    service, _, _ = await _v3(request)
    return _signed(service, 200, service.query_parking_order(out_trade_no))


# --------------------------------------------------------------------------- sandbox controls


@get("/sandbox/healthz")
async def healthz(request: _Req) -> Response[bytes]:
    identity = _service(request).keys.identity
    return _plain(200, {"status": "ok", "mchid": identity.mchid, "appid": identity.appid})


@get("/sandbox/orders/{out_trade_no:str}")
async def order_view(request: _Req, out_trade_no: str) -> Response[bytes]:
    return _plain(200, _service(request).order_view(out_trade_no))


@post("/sandbox/orders/{out_trade_no:str}/pay")
async def pay(request: _Req, out_trade_no: str) -> Response[bytes]:
    body = await request.body()
    command = _decode(body, PayCommand) if body.strip() else PayCommand()
    return _plain(200, _service(request).pay(out_trade_no, command))


@post("/sandbox/orders/{out_trade_no:str}/fail")
async def fail(request: _Req, out_trade_no: str) -> Response[bytes]:
    body = await request.body()
    command = _decode(body, FailCommand) if body.strip() else FailCommand()
    return _plain(200, _service(request).fail(out_trade_no, command))


@post("/sandbox/orders/{out_trade_no:str}/repay")
async def repay(request: _Req, out_trade_no: str) -> Response[bytes]:
    return _plain(200, _service(request).repay(out_trade_no))


@post("/sandbox/mandates")
async def set_mandate(request: _Req) -> Response[bytes]:
    command = _decode(await request.body(), MandateCommand)
    return _plain(200, msgspec.to_builtins(_service(request).set_mandate(command)))


@get("/sandbox/mandates/authorize")
async def authorize_page(request: _Req) -> Response[bytes]:
    """The page ``create_mandate`` links to, standing in for the 停车服务 mini program."""
    try:
        fields = {name: _param(request, name) for name in ("openid", "plate_number", "plate_color")}
        back = cashier.return_address(request.query_params.get("return_url"))
    except ApiError as exc:
        return _html(exc.status, cashier.sorry(exc.message))
    if back is not None:
        fields["return_url"] = back
    page = cashier.mandate_page(
        fields["plate_number"], fields["plate_color"], "/sandbox/mandates/authorize", fields
    )
    return _html(200, page)


@post("/sandbox/mandates/authorize")
async def authorize(request: _Req) -> Response[bytes]:
    """The driver agrees: with the URL's parameters (an API caller), or with the page's
    form, which then goes back to its ``return_url``."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        values = {k: str(form.get(k) or "") for k in ("openid", "plate_number", "plate_color")}
        try:
            back = cashier.return_address(str(form.get("return_url") or ""))
            if not all(values.values()):
                raise ApiError(400, "PARAM_ERROR", "缺少参数")
        except ApiError as exc:
            return _html(exc.status, cashier.sorry(exc.message))
        _service(request).set_mandate(
            MandateCommand(
                openid=values["openid"],
                plate_number=values["plate_number"],
                plate_color=values["plate_color"],
            )
        )
        if back is None:
            return _html(200, cashier.sorry("已开通"))
        return Response(content=b"", status_code=303, headers={"Location": back})
    command = MandateCommand(
        openid=_param(request, "openid"),
        plate_number=_param(request, "plate_number"),
        plate_color=_param(request, "plate_color"),
    )
    return _plain(200, msgspec.to_builtins(_service(request).set_mandate(command)))


# --------------------------------------------------------------------------- 网页授权


@get("/connect/oauth2/authorize")
async def oauth_authorize(request: _Req) -> Response[bytes]:
    """WeChat's 网页授权 (snsapi_base: silent): this browser is one WeChat user (a cookie
    on the sandbox's origin), sent back to ``redirect_uri`` with ``code`` and ``state``."""
    service = _service(request)
    try:
        back = cashier.return_address(_param(request, "redirect_uri"))
        if request.query_params.get("response_type") != "code":
            raise ApiError(400, "PARAM_ERROR", "response_type 必须是 code")
        if request.query_params.get("scope") not in ("snsapi_base", "snsapi_userinfo"):
            raise ApiError(400, "PARAM_ERROR", "scope 参数错误")
        openid = request.cookies.get(cashier.WECHAT_USER_COOKIE) or (
            "oSbx" + secrets.token_urlsafe(18)
        )
        code = service.oauth_code(_param(request, "appid"), openid)
    except ApiError as exc:
        return _html(exc.status, cashier.sorry(exc.message))
    assert back is not None
    query = urlencode({"code": code, "state": request.query_params.get("state", "")})
    response: Response[bytes] = Response(
        content=b"",
        status_code=302,
        headers={"Location": f"{back}{'&' if '?' in back else '?'}{query}"},
    )
    response.set_cookie(
        cashier.WECHAT_USER_COOKIE, openid, httponly=True, samesite="lax", max_age=86400 * 365
    )
    return response


@get("/sns/oauth2/access_token")
async def oauth_token(request: _Req) -> Response[bytes]:
    """The code for the openid (once); WeChat's ``errcode``/``errmsg`` otherwise."""
    answer = _service(request).oauth_token(
        appid=request.query_params.get("appid", ""),
        secret=request.query_params.get("secret", ""),
        code=request.query_params.get("code", ""),
    )
    return _plain(200, answer)


def _html(status: int, text: str) -> Response[bytes]:
    return Response(
        content=text.encode(),
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@get(cashier.CASHIER_PATH)
async def cashier_page(request: _Req) -> Response[bytes]:
    """What WeChat's ``h5_url`` opens: the cashier standing in for the WeChat app."""
    service = _service(request)
    try:
        back = cashier.return_address(request.query_params.get("redirect_url"))
        prepay_id = _param(request, "prepay_id")
        order = service.h5_order(prepay_id)
    except ApiError as exc:
        return _html(exc.status, cashier.sorry(exc.message))
    return _html(200, cashier.page(order, prepay_id, back))


@post(cashier.PAY_PATH)
async def cashier_pay(request: _Req) -> Response[bytes]:
    """The payer confirmed: pay the order (the notification goes out), then back."""
    service = _service(request)
    form = await request.form()
    try:
        back = cashier.return_address(str(form.get("redirect_url") or ""))
        order = service.h5_order(str(form.get("prepay_id") or ""))
        if order.state is wire.TradeState.NOTPAY:
            service.pay(order.out_trade_no, PayCommand())
    except ApiError as exc:
        return _html(exc.status, cashier.sorry(exc.message))
    if back is None:
        return _html(200, cashier.sorry("支付成功"))
    return Response(content=b"", status_code=303, headers={"Location": back})


@get("/sandbox/notifications")
async def notifications(request: _Req) -> Response[bytes]:
    out_trade_no = request.query_params.get("out_trade_no")
    return _plain(200, _service(request).notifications(out_trade_no))


@get("/sandbox/control")
async def controls(request: _Req) -> Response[bytes]:
    return _plain(200, msgspec.to_builtins(_service(request).store.controls()))


@post("/sandbox/control")
async def control(request: _Req) -> Response[bytes]:
    command: ControlCommand = _decode(await request.body(), ControlCommand)  # type: ignore[arg-type]
    return _plain(200, msgspec.to_builtins(_service(request).control(command)))


@get("/sandbox/clock")
async def clock(request: _Req) -> Response[bytes]:
    service = _service(request)
    return _plain(200, {"now": service.business_now().isoformat()})


@post("/sandbox/clock")
async def move_clock(request: _Req) -> Response[bytes]:
    service = _service(request)
    now = service.move_clock(_decode(await request.body(), ClockCommand))
    return _plain(200, {"now": now.isoformat()})


ROUTES: Final = [
    create_native,
    create_h5,
    query_native,
    close_native,
    create_refund,
    query_refund,
    trade_bill,
    bill_file,
    find_service,
    create_parking,
    deduct,
    query_parking_order,
    healthz,
    order_view,
    pay,
    fail,
    repay,
    set_mandate,
    authorize_page,
    authorize,
    oauth_authorize,
    oauth_token,
    cashier_page,
    cashier_pay,
    notifications,
    controls,
    control,
    clock,
    move_clock,
    *messages.ROUTES,
]


def load_settings() -> SandboxSettings:
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise RuntimeError(
            f"{SETTINGS_ENV} is not set; start the sandbox with `parking sandbox-pay`"
        )
    return msgspec.json.decode(raw, type=SandboxSettings)


def create_app(settings: SandboxSettings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format, process="sandbox-pay")
    folder = Path(settings.data_dir)
    keys = key_files.ensure(folder, base_url=settings.public_url)
    store = SandboxStore(folder / DATABASE)
    service = SandboxPay(store, keys, settings, clock=SystemClock())
    # WeChat template messages and the SMS gateway (码上反映's notifiers): messages.py
    messaging = messages.start(
        folder,
        base_url=settings.public_url,
        appid=keys.identity.appid,
        app_secret=keys.app_secret,
        app_secret_path=folder / key_files.APP_SECRET,
        clock=SystemClock(),
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        # Notify URLs are the merchant's; never follow redirects or read
        # proxy settings from the environment for them.
        alipay = (
            AlipayGateway(settings.alipay_port, folder, host=settings.host)
            if settings.alipay_port is not None
            else None
        )
        if alipay is not None:
            alipay.start()
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as http:
            notifier = Notifier(service, http)
            loop = asyncio.create_task(notifier.run())
            try:
                yield
            finally:
                loop.cancel()
                with suppress(asyncio.CancelledError):
                    await loop
                await notifier.stop()
                store.close()
                if alipay is not None:
                    alipay.stop()

    return Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        state=State({"sandbox": service, "messages": messaging}),
        exception_handlers={ApiError: api_error_handler, Exception: internal_error_handler},
        openapi_config=None,
    )
