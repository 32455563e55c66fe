"""WeChat Pay API v3 adapter: the port over ``httpx.AsyncClient``.

Kept whole (over 600 lines): one adapter is one class implementing the port for
one provider; its calls share the signing and verification of every request.

Every request carries the v3 ``Authorization`` header signed with the merchant
key; every 2xx response is verified with the platform public key (the
``Wechatpay-*`` response headers use the notification message format) before a
byte of it is believed. The base URL is configuration, so the same adapter talks
to ``https://api.mch.weixin.qq.com`` in production and to the sandbox provider
(``parking sandbox-pay``) everywhere else.

Endpoints (published v3 paths, checked against WeChat's docs and the official
wechatpay-go SDK):

- ``POST /v3/pay/transactions/native``; ``GET /v3/pay/transactions/out-trade-no/{no}?mchid=``;
  ``POST .../out-trade-no/{no}/close``
- ``POST /v3/refund/domestic/refunds``; ``GET /v3/refund/domestic/refunds/{out_refund_no}``
- ``GET /v3/bill/tradebill?bill_date=&bill_type=ALL`` then the signed GET of
  ``download_url`` (the file response is unsigned, as WeChat documents; its
  SHA1 is checked instead)
- parking service (微信支付分停车服务): ``GET /v3/vehicle/parking/services/find``,
  ``POST /v3/vehicle/parking/parkings``, ``POST /v3/vehicle/transactions/parking``,
  ``GET /v3/vehicle/transactions/out-trade-no/{no}``

Configuration is a file (``WechatPayConfig``, JSON) naming key files; no secret
is ever in the repository. The sandbox writes one for the platform at
``{stack_dir}/sandbox-pay/merchant.json``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from parking.clock import Clock
from parking.payments.port import (
    BillNotReady,
    ContactlessProvider,
    Deduction,
    ForeignNotification,
    H5Scene,
    MandateInvitation,
    MandateState,
    MandateStatus,
    NotificationReply,
    OrderNotFound,
    OrderState,
    OrderStatus,
    OtherEvent,
    ParkingEntry,
    PaymentFailed,
    PaymentRepaid,
    PaymentSucceeded,
    ProviderEvent,
    ProviderOrder,
    ProviderRejected,
    ProviderUnavailable,
    RefundFailed,
    RefundState,
    RefundStatus,
    RefundSucceeded,
    StaleNotification,
    TradeBillFile,
)
from parking.payments.wire import BEIJING, MalformedMessage, WireError
from parking.payments.wire import wechat as wire

__all__ = [
    "TRADE_BILL_KIND",
    "WechatPayConfig",
    "WechatPayKeys",
    "WechatPayProvider",
    "load_config",
    "rfc3339",
]

#: Environment variable naming the adapter's configuration file.
TRADE_BILL_KIND: Final = "wechat-tradebill"

_USER_AGENT = "changbo-parking/0.1 (+wechatpay-apiv3)"
#: The merchant's ``Wechatpay-Serial`` request header names the platform key
#: WeChat should use for any encrypted request fields; official SDKs send it.
_H_SERIAL = "Wechatpay-Serial"


class WechatPayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the adapter needs to know, loaded from a JSON file.

    Key paths are absolute or relative to the configuration file. ``provider``
    is the name the platform books the money under (``wechat``; a deployment
    talking to the sandbox may call it ``sandbox``).
    """

    provider: str = "wechat"
    base_url: str = "https://api.mch.weixin.qq.com"
    mchid: str
    appid: str
    #: Serial number of the merchant API certificate (the key signing requests).
    merchant_serial: str
    merchant_private_key_path: str
    #: The platform public-key id (``PUB_KEY_ID_...``) or platform certificate
    #: serial that ``Wechatpay-Serial`` carries on responses and notifications.
    platform_public_key_id: str
    platform_public_key_path: str
    #: File holding the 32-character APIv3 key.
    api_v3_key_path: str
    #: A web page where a driver authorises contactless payment (the sandbox
    #: has one); unset for real WeChat, where the mini program does it.
    mandate_page_url: str | None = None
    #: 网页授权 (OAuth 2.0, ``snsapi_base``): how a page opened in WeChat learns the
    #: payer's openid for this appid; all three set, or the page cannot turn
    #: contactless payment on (an app passes the openid itself).
    oauth_authorize_url: str | None = None
    oauth_token_url: str | None = None
    #: File holding the official account's AppSecret (the token exchange needs it).
    app_secret_path: str | None = None
    timeout_seconds: float = 10.0


def load_config(path: Path) -> WechatPayConfig:
    """Read a ``WechatPayConfig`` file, resolving relative key paths against its folder."""
    config = msgspec.json.decode(path.read_bytes(), type=WechatPayConfig)
    base = path.resolve().parent

    def resolve(value: str) -> str:
        return str((base / value).resolve())

    return msgspec.structs.replace(
        config,
        merchant_private_key_path=resolve(config.merchant_private_key_path),
        platform_public_key_path=resolve(config.platform_public_key_path),
        api_v3_key_path=resolve(config.api_v3_key_path),
        app_secret_path=None if config.app_secret_path is None else resolve(config.app_secret_path),
    )


class WechatPayKeys:
    """The key material named by a config, loaded once."""

    def __init__(
        self,
        *,
        merchant_private_key: RSAPrivateKey,
        platform_public_keys: Mapping[str, RSAPublicKey],
        api_v3_key: bytes,
        app_secret: str | None = None,
    ) -> None:
        if len(api_v3_key) != 32:
            raise ValueError("the APIv3 key is 32 bytes")
        self.merchant_private_key = merchant_private_key
        self.platform_public_keys = dict(platform_public_keys)
        self.api_v3_key = api_v3_key
        self.app_secret = app_secret

    @classmethod
    def load(cls, config: WechatPayConfig) -> WechatPayKeys:
        private = serialization.load_pem_private_key(
            Path(config.merchant_private_key_path).read_bytes(), password=None
        )
        public = serialization.load_pem_public_key(
            Path(config.platform_public_key_path).read_bytes()
        )
        if not isinstance(private, RSAPrivateKey) or not isinstance(public, RSAPublicKey):
            raise ValueError("WeChat Pay keys must be RSA keys")
        api_v3_key = Path(config.api_v3_key_path).read_text(encoding="ascii").strip().encode()
        return cls(
            merchant_private_key=private,
            platform_public_keys={config.platform_public_key_id: public},
            api_v3_key=api_v3_key,
            app_secret=None
            if config.app_secret_path is None
            else Path(config.app_secret_path).read_text(encoding="ascii").strip(),
        )


def rfc3339(moment: datetime) -> str:
    """``2024-05-01T10:00:00+08:00``: the v3 time format, Beijing offset, whole seconds."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a naive datetime has no RFC 3339 form")
    return moment.astimezone(BEIJING).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- response shapes
# Unknown fields are ignored: WeChat adds response fields over time (see wire).


class _Error(msgspec.Struct, frozen=True):
    code: str = ""
    message: str = ""


class _NativeCreated(msgspec.Struct, frozen=True):
    code_url: str


class _H5Created(msgspec.Struct, frozen=True):
    h5_url: str


class _OauthToken(msgspec.Struct, frozen=True):
    """网页授权 access_token answer (or its ``errcode``/``errmsg`` error)."""

    openid: str | None = None
    access_token: str | None = None
    expires_in: int | None = None
    refresh_token: str | None = None
    scope: str | None = None
    errcode: int | None = None
    errmsg: str | None = None


class _RefundAmount(msgspec.Struct, frozen=True):
    total: int
    refund: int


class _Refund(msgspec.Struct, frozen=True):
    refund_id: str
    out_refund_no: str
    out_trade_no: str
    status: wire.RefundStatus
    amount: _RefundAmount
    transaction_id: str | None = None
    create_time: datetime | None = None
    success_time: datetime | None = None


class _BillLink(msgspec.Struct, frozen=True):
    hash_type: str
    hash_value: str
    download_url: str


class _PlateService(msgspec.Struct, frozen=True):
    plate_number: str
    plate_color: str
    openid: str
    service_state: str
    service_open_time: datetime | None = None


class _Parking(msgspec.Struct, frozen=True):
    id: str
    out_parking_no: str
    plate_number: str
    plate_color: str
    state: str
    block_reason: str | None = None


_ORDER_STATES: Final[Mapping[wire.TradeState, OrderState]] = {
    wire.TradeState.SUCCESS: OrderState.PAID,
    wire.TradeState.REFUND: OrderState.REFUNDED,
    wire.TradeState.NOTPAY: OrderState.PENDING,
    wire.TradeState.USERPAYING: OrderState.PENDING,
    wire.TradeState.ACCEPTED: OrderState.ACCEPTED,
    wire.TradeState.CLOSED: OrderState.CLOSED,
    wire.TradeState.REVOKED: OrderState.CLOSED,
    wire.TradeState.PAYERROR: OrderState.FAILED,
    wire.TradeState.PAY_FAIL: OrderState.FAILED,
}
_REFUND_STATES: Final[Mapping[wire.RefundStatus, RefundState]] = {
    wire.RefundStatus.SUCCESS: RefundState.SUCCEEDED,
    wire.RefundStatus.PROCESSING: RefundState.PROCESSING,
    wire.RefundStatus.CLOSED: RefundState.CLOSED,
    wire.RefundStatus.ABNORMAL: RefundState.ABNORMAL,
}
_MANDATE_STATES: Final[Mapping[str, MandateState]] = {
    "NORMAL": MandateState.ACTIVE,
    "PAUSE": MandateState.PAUSED,
    "OUT_SERVICE": MandateState.NONE,
}
#: 404 codes meaning "no such order/refund"; other 404s are configuration errors.
_NOT_FOUND_CODES: Final = frozenset({"ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS", "NOT_FOUND"})


def _nonce() -> str:
    return secrets.token_hex(16).upper()


class WechatPayProvider(ContactlessProvider):
    """The WeChat Pay v3 adapter (also the sandbox adapter, by base URL).

    ``http`` is injected and not closed here, so one pooled client serves
    every adapter of the process; ``clock`` signs request timestamps and
    judges response freshness.
    """

    def __init__(
        self,
        config: WechatPayConfig,
        keys: WechatPayKeys,
        *,
        http: httpx.AsyncClient,
        clock: Clock,
        nonce: Callable[[], str] = _nonce,
    ) -> None:
        self.name = config.provider
        self.pays_in_browser = True
        self._config = config
        self._keys = keys
        self._http = http
        self._clock = clock
        self._nonce = nonce
        self._base = httpx.URL(config.base_url.rstrip("/") + "/")

    @classmethod
    def from_config(
        cls, config: WechatPayConfig, *, http: httpx.AsyncClient, clock: Clock
    ) -> WechatPayProvider:
        return cls(config, WechatPayKeys.load(config), http=http, clock=clock)

    # ----------------------------------------------------------------- transport

    def _url(self, path_with_query: str) -> httpx.URL:
        return self._base.join(path_with_query.lstrip("/"))

    async def _send(self, method: str, url: httpx.URL, payload: Any | None) -> httpx.Response:
        body = b"" if payload is None else msgspec.json.encode(payload)
        request = self._http.build_request(
            method,
            url,
            content=body,
            timeout=self._config.timeout_seconds,
        )
        # Sign exactly the target httpx will send (percent-encoding included).
        target = request.url.raw_path.decode("ascii")
        request.headers["Authorization"] = wire.sign_request(
            method,
            target,
            body,
            mchid=self._config.mchid,
            serial_no=self._config.merchant_serial,
            private_key=self._keys.merchant_private_key,
            timestamp=int(self._clock.now().timestamp()),
            nonce=self._nonce(),
        )
        request.headers["Accept"] = "application/json"
        request.headers["User-Agent"] = _USER_AGENT
        request.headers[_H_SERIAL] = self._config.platform_public_key_id
        if payload is not None:
            request.headers["Content-Type"] = "application/json"
        try:
            return await self._http.send(request)
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(self.name, "TIMEOUT", str(exc) or "timed out") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.name, "NETWORK", str(exc) or repr(exc)) from exc

    def _raise_for(self, response: httpx.Response) -> None:
        status = response.status_code
        try:
            error = msgspec.json.decode(response.content, type=_Error)
        except msgspec.DecodeError:
            error = _Error(code=f"HTTP_{status}", message=response.text[:200])
        code = error.code or f"HTTP_{status}"
        message = error.message or response.reason_phrase
        if status == 429 or status >= 500:
            raise ProviderUnavailable(self.name, code, message, http_status=status)
        if status == 404 and code in _NOT_FOUND_CODES:
            raise OrderNotFound(self.name, code, message, http_status=status)
        raise ProviderRejected(self.name, code, message, http_status=status)

    def _verified(self, response: httpx.Response) -> bytes:
        try:
            wire.verify_notification(
                dict(response.headers.items()),
                response.content,
                public_keys=self._keys.platform_public_keys,
                now=self._clock.now(),
            )
        except WireError as exc:
            # Not proof of an attack (a proxy may have mangled it), but never
            # believed: the caller retries with the same ids.
            raise ProviderUnavailable(
                self.name, "RESPONSE_NOT_AUTHENTIC", str(exc), http_status=response.status_code
            ) from exc
        return response.content

    async def _call(self, method: str, path_with_query: str, payload: Any | None = None) -> bytes:
        """One signed API call; returns the verified body of a 2xx response."""
        response = await self._send(method, self._url(path_with_query), payload)
        if not 200 <= response.status_code < 300:
            self._raise_for(response)
        return self._verified(response)

    def _decode(self, body: bytes, type_: type[Any], what: str) -> Any:
        try:
            return msgspec.json.decode(body, type=type_)
        except msgspec.DecodeError as exc:
            # Authentic but not what the docs promise: retrying will not help.
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", f"{what}: {exc}") from exc

    # ----------------------------------------------------------------- orders

    def _order_status(self, transaction: wire.Transaction) -> OrderStatus:
        paid = transaction.amount.payer_total
        if paid is None and transaction.trade_state in wire.PAID_TRADE_STATES:
            paid = transaction.amount.total
        return OrderStatus(
            provider=self.name,
            out_trade_no=transaction.out_trade_no,
            state=_ORDER_STATES[transaction.trade_state],
            provider_state=transaction.trade_state.value,
            amount_fen=transaction.amount.total,
            paid_fen=paid if transaction.trade_state in wire.PAID_TRADE_STATES else None,
            transaction_id=transaction.transaction_id,
            succeeded_at=transaction.success_time,
            attach=transaction.attach,
            payer_id=transaction.payer.openid if transaction.payer else None,
        )

    async def create_order(
        self,
        out_trade_no: str,
        amount_fen: int,
        description: str,
        notify_url: str,
        *,
        attach: str | None = None,
        expires_at: datetime | None = None,
        h5: H5Scene | None = None,
    ) -> ProviderOrder:
        if type(amount_fen) is not int or amount_fen <= 0:
            raise ValueError(f"amount must be a positive int of fen, got {amount_fen!r}")
        payload: dict[str, Any] = {
            "appid": self._config.appid,
            "mchid": self._config.mchid,
            "description": description,
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "amount": {"total": amount_fen, "currency": "CNY"},
        }
        if attach is not None:
            payload["attach"] = attach
        if expires_at is not None:
            payload["time_expire"] = rfc3339(expires_at)
        if h5 is not None:
            # H5 (MWEB): the payer's IP is required; the merchant appends the
            # address to come back to as ``redirect_url`` (URL-encoded).
            payload["scene_info"] = {
                "payer_client_ip": h5.client_ip,
                "h5_info": {"type": "Wap"},
            }
            body = await self._call("POST", "/v3/pay/transactions/h5", payload)
            h5_url = self._decode(body, _H5Created, "H5 order").h5_url
            separator = "&" if "?" in h5_url else "?"
            url = f"{h5_url}{separator}{urlencode({'redirect_url': h5.return_url})}"
        else:
            body = await self._call("POST", "/v3/pay/transactions/native", payload)
            url = self._decode(body, _NativeCreated, "native order").code_url
        return ProviderOrder(
            provider=self.name,
            out_trade_no=out_trade_no,
            amount_fen=amount_fen,
            code_url=url,
            expires_at=expires_at,
        )

    def _transaction(self, body: bytes) -> wire.Transaction:
        try:
            return wire.decode_transaction(body)
        except MalformedMessage as exc:
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", str(exc)) from exc

    async def query_order(self, out_trade_no: str) -> OrderStatus:
        path = (
            f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
            f"?{urlencode({'mchid': self._config.mchid})}"
        )
        return self._order_status(self._transaction(await self._call("GET", path)))

    async def close_order(self, out_trade_no: str) -> None:
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close"
        await self._call("POST", path, {"mchid": self._config.mchid})

    # ----------------------------------------------------------------- refunds

    def _refund_status(self, refund: _Refund) -> RefundStatus:
        return RefundStatus(
            provider=self.name,
            out_trade_no=refund.out_trade_no,
            out_refund_no=refund.out_refund_no,
            state=_REFUND_STATES[refund.status],
            provider_state=refund.status.value,
            refund_fen=refund.amount.refund,
            total_fen=refund.amount.total,
            refund_id=refund.refund_id,
            created_at=refund.create_time,
            succeeded_at=refund.success_time,
        )

    async def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        refund_fen: int,
        total_fen: int,
        reason: str,
        *,
        notify_url: str | None = None,
    ) -> RefundStatus:
        if type(refund_fen) is not int or refund_fen <= 0 or refund_fen > total_fen:
            raise ValueError(f"refund must be 1..{total_fen} fen, got {refund_fen!r}")
        payload: dict[str, Any] = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "reason": reason,
            "amount": {"refund": refund_fen, "total": total_fen, "currency": "CNY"},
        }
        if notify_url is not None:
            payload["notify_url"] = notify_url
        body = await self._call("POST", "/v3/refund/domestic/refunds", payload)
        return self._refund_status(self._decode(body, _Refund, "refund"))

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        # WeChat finds a refund by out_refund_no alone; out_trade_no is part of
        # the port because Alipay needs it.
        path = f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
        status = self._refund_status(self._decode(await self._call("GET", path), _Refund, "refund"))
        if status.out_trade_no != out_trade_no:
            raise ProviderRejected(
                self.name,
                "REFUND_OF_ANOTHER_ORDER",
                f"refund {out_refund_no} belongs to {status.out_trade_no}, not {out_trade_no}",
            )
        return status

    # ----------------------------------------------------------------- bills

    async def download_trade_bill(self, bill_date: date) -> TradeBillFile:
        query = urlencode({"bill_date": bill_date.isoformat(), "bill_type": "ALL"})
        response = await self._send("GET", self._url(f"/v3/bill/tradebill?{query}"), None)
        if response.status_code == 400:
            error = self._decode(response.content, _Error, "error")
            if error.code == "NO_STATEMENT_EXIST":
                # WeChat's answer for a day without trades or refunds.
                return TradeBillFile(
                    provider=self.name, bill_date=bill_date, kind=TRADE_BILL_KIND, content=b""
                )
            if error.code == "STATEMENT_CREATING":
                raise BillNotReady(self.name, error.code, error.message, http_status=400)
        if not 200 <= response.status_code < 300:
            self._raise_for(response)
        link = self._decode(self._verified(response), _BillLink, "bill link")
        url = httpx.URL(link.download_url)
        if (url.scheme, url.host, url.port) != (
            self._base.scheme,
            self._base.host,
            self._base.port,
        ):
            # The download request is signed: never send it anywhere else.
            raise ProviderRejected(
                self.name, "FOREIGN_DOWNLOAD_URL", f"bill download URL {url} is not {self._base}"
            )
        download = await self._send("GET", url, None)
        if not 200 <= download.status_code < 300:
            self._raise_for(download)
        if link.hash_type.upper() != "SHA1" or not wire.bill_hash_ok(
            download.content, link.hash_value
        ):
            raise ProviderUnavailable(
                self.name, "BILL_HASH_MISMATCH", f"bill of {bill_date} failed its {link.hash_type}"
            )
        return TradeBillFile(
            provider=self.name, bill_date=bill_date, kind=TRADE_BILL_KIND, content=download.content
        )

    # ----------------------------------------------------------------- notifications

    def _check_merchant(self, mchid: str | None, appid: str | None) -> None:
        if mchid != self._config.mchid or (appid is not None and appid != self._config.appid):
            raise ForeignNotification(f"notification for merchant {mchid!r} / app {appid!r}")

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent:
        try:
            wire.verify_notification(
                headers, body, public_keys=self._keys.platform_public_keys, now=now
            )
        except wire.StaleTimestamp as exc:
            # The signature held, so the body is WeChat's: hand over its id.
            stale = wire.decode_notification(body)
            raise StaleNotification(str(exc), notification_id=stale.id) from exc
        notification = wire.decode_notification(body)
        plaintext = wire.decrypt_resource(notification.resource, self._keys.api_v3_key)
        common: dict[str, Any] = {
            "provider": self.name,
            "notification_id": notification.id,
            "notified_at": notification.create_time,
            "payload": plaintext.decode("utf-8", errors="replace"),
        }
        event_type = notification.event_type
        if event_type.startswith("TRANSACTION."):
            return self._transaction_event(event_type, wire.decode_transaction(plaintext), common)
        if event_type.startswith("REFUND."):
            return self._refund_event(event_type, wire.decode_refund(plaintext), common)
        return OtherEvent(out_trade_no="", event_type=event_type, **common)

    def _transaction_event(
        self, event_type: str, tx: wire.Transaction, common: dict[str, Any]
    ) -> ProviderEvent:
        self._check_merchant(tx.mchid or tx.sp_mchid, tx.appid)
        contactless = tx.trade_scene == "PARKING"
        total = tx.amount.total
        paid = tx.amount.payer_total if tx.amount.payer_total is not None else total
        if event_type == wire.EventType.TRANSACTION_SUCCESS:
            if (
                tx.trade_state is not wire.TradeState.SUCCESS
                or tx.transaction_id is None
                or tx.success_time is None
            ):
                raise MalformedMessage(
                    f"TRANSACTION.SUCCESS for {tx.out_trade_no} in state {tx.trade_state}"
                    " without transaction_id/success_time"
                )
            return PaymentSucceeded(
                out_trade_no=tx.out_trade_no,
                transaction_id=tx.transaction_id,
                amount_fen=total,
                paid_fen=paid,
                succeeded_at=tx.success_time,
                attach=tx.attach,
                contactless=contactless,
                **common,
            )
        if event_type == wire.EventType.TRANSACTION_FAIL:
            return PaymentFailed(
                out_trade_no=tx.out_trade_no,
                amount_fen=total,
                reason=tx.trade_state_desc or tx.trade_state.value,
                transaction_id=tx.transaction_id,
                contactless=contactless,
                **common,
            )
        if event_type == wire.EventType.TRANSACTION_PAY_BACK:
            if tx.transaction_id is None:
                raise MalformedMessage(f"PAY_BACK for {tx.out_trade_no} without transaction_id")
            return PaymentRepaid(
                out_trade_no=tx.out_trade_no,
                transaction_id=tx.transaction_id,
                amount_fen=total,
                paid_fen=paid,
                succeeded_at=tx.success_time,
                **common,
            )
        return OtherEvent(out_trade_no=tx.out_trade_no, event_type=event_type, **common)

    def _refund_event(
        self, event_type: str, refund: wire.RefundNotice, common: dict[str, Any]
    ) -> ProviderEvent:
        self._check_merchant(refund.mchid or refund.sp_mchid, None)
        if event_type == wire.EventType.REFUND_SUCCESS:
            return RefundSucceeded(
                out_trade_no=refund.out_trade_no,
                out_refund_no=refund.out_refund_no,
                refund_id=refund.refund_id,
                refund_fen=refund.amount.refund,
                total_fen=refund.amount.total,
                succeeded_at=refund.success_time,
                **common,
            )
        if event_type in (wire.EventType.REFUND_ABNORMAL, wire.EventType.REFUND_CLOSED):
            return RefundFailed(
                out_trade_no=refund.out_trade_no,
                out_refund_no=refund.out_refund_no,
                refund_id=refund.refund_id,
                state=_REFUND_STATES[refund.refund_status],
                refund_fen=refund.amount.refund,
                **common,
            )
        return OtherEvent(out_trade_no=refund.out_trade_no, event_type=event_type, **common)

    def notification_reply(self, ok: bool) -> NotificationReply:
        if ok:
            # WeChat takes 200 or 204; no body is needed.
            return NotificationReply(204, {}, b"")
        return NotificationReply(
            500,
            {"Content-Type": "application/json"},
            msgspec.json.encode({"code": "FAIL", "message": "失败"}),
        )

    # ----------------------------------------------------------------- contactless

    def payer_login_url(self, redirect_uri: str, state: str) -> str | None:
        config = self._config
        if not (config.oauth_authorize_url and config.oauth_token_url and self._keys.app_secret):
            return None
        query = urlencode(
            {
                "appid": config.appid,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": "snsapi_base",
                "state": state,
            }
        )
        return f"{config.oauth_authorize_url}?{query}#wechat_redirect"

    async def payer_id_of(self, code: str) -> str:
        config = self._config
        if not (config.oauth_token_url and self._keys.app_secret):
            raise ProviderRejected(self.name, "NO_OAUTH", "网页授权 is not configured")
        query = {
            "appid": config.appid,
            "secret": self._keys.app_secret,
            "code": code,
            "grant_type": "authorization_code",
        }
        try:
            response = await self._http.get(
                config.oauth_token_url, params=query, timeout=config.timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, "NETWORK", str(exc)) from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(self.name, "SYSTEM_ERROR", f"HTTP {response.status_code}")
        try:
            answer = msgspec.json.decode(response.content, type=_OauthToken)
        except msgspec.DecodeError as exc:
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", f"oauth: {exc}") from exc
        if answer.openid is None:
            code_text = str(answer.errcode or response.status_code)
            raise ProviderRejected(self.name, code_text, answer.errmsg or "no openid")
        return answer.openid

    async def create_mandate(
        self, plate: str, plate_color: str, payer_id: str, *, return_url: str | None = None
    ) -> MandateInvitation:
        params = {
            "appid": self._config.appid,
            "mchid": self._config.mchid,
            "openid": payer_id,
            "plate_number": plate,
            "plate_color": plate_color,
            "trade_scene": "PARKING",
        }
        page = self._config.mandate_page_url
        # Where the authorising page sends the browser back (a page's flow only).
        extra = {} if return_url is None else {"return_url": return_url}
        return MandateInvitation(
            provider=self.name,
            plate=plate,
            plate_color=plate_color,
            payer_id=payer_id,
            url=f"{page}?{urlencode({**params, **extra})}" if page else None,
            params=params,
        )

    async def mandate_status(self, plate: str, plate_color: str, payer_id: str) -> MandateStatus:
        query = urlencode(
            {
                "appid": self._config.appid,
                "plate_number": plate,
                "plate_color": plate_color,
                "openid": payer_id,
            }
        )
        body = await self._call("GET", f"/v3/vehicle/parking/services/find?{query}")
        service = self._decode(body, _PlateService, "plate service")
        return MandateStatus(
            provider=self.name,
            plate=service.plate_number,
            plate_color=service.plate_color,
            payer_id=service.openid,
            state=_MANDATE_STATES.get(service.service_state, MandateState.NONE),
            provider_state=service.service_state,
            opened_at=service.service_open_time,
        )

    async def register_entry(
        self,
        out_parking_no: str,
        plate: str,
        plate_color: str,
        entered_at: datetime,
        lot_name: str,
        notify_url: str,
        *,
        free_seconds: int = 0,
    ) -> ParkingEntry:
        payload = {
            "out_parking_no": out_parking_no,
            "plate_number": plate,
            "plate_color": plate_color,
            "notify_url": notify_url,
            "start_time": rfc3339(entered_at),
            "parking_name": lot_name,
            "free_duration": free_seconds,
        }
        body = await self._call("POST", "/v3/vehicle/parking/parkings", payload)
        parking = self._decode(body, _Parking, "parking")
        return ParkingEntry(
            provider=self.name,
            parking_id=parking.id,
            out_parking_no=parking.out_parking_no,
            plate=parking.plate_number,
            plate_color=parking.plate_color,
            usable=parking.state == "NORMAL",
            block_reason=parking.block_reason,
        )

    async def deduct(
        self,
        out_trade_no: str,
        amount_fen: int,
        plate: str,
        *,
        plate_color: str,
        parking_id: str,
        entered_at: datetime,
        exited_at: datetime,
        lot_name: str,
        description: str,
        notify_url: str,
        attach: str | None = None,
    ) -> Deduction:
        if type(amount_fen) is not int or amount_fen <= 0:
            raise ValueError(f"amount must be a positive int of fen, got {amount_fen!r}")
        payload: dict[str, Any] = {
            "appid": self._config.appid,
            "description": description,
            "out_trade_no": out_trade_no,
            "trade_scene": "PARKING",
            "notify_url": notify_url,
            "amount": {"total": amount_fen, "currency": "CNY"},
            "parking_info": {
                "parking_id": parking_id,
                "plate_number": plate,
                "plate_color": plate_color,
                "start_time": rfc3339(entered_at),
                "end_time": rfc3339(exited_at),
                "parking_name": lot_name,
                "charging_duration": max(0, int((exited_at - entered_at).total_seconds())),
            },
        }
        if attach is not None:
            payload["attach"] = attach
        response = await self._send("POST", self._url("/v3/vehicle/transactions/parking"), payload)
        if response.status_code == 403:
            # 403 is WeChat's "not allowed for this user/plate" class (no active
            # service, overdue, blocked): a refusal the exit flow expects, not
            # a fault. The sandbox answers NO_AUTH here.
            error = self._decode(response.content, _Error, "error")
            return Deduction(
                provider=self.name,
                out_trade_no=out_trade_no,
                accepted=False,
                refusal_code=error.code or "HTTP_403",
                refusal_message=error.message,
            )
        if not 200 <= response.status_code < 300:
            self._raise_for(response)
        status = self._order_status(self._transaction(self._verified(response)))
        return Deduction(
            provider=self.name,
            out_trade_no=out_trade_no,
            # Retried after a timeout, the order may already be settled; the
            # provider accepted it either way.
            accepted=True,
            state=status.state,
            provider_state=status.provider_state,
        )

    async def query_deduction(self, out_trade_no: str) -> OrderStatus:
        path = f"/v3/vehicle/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
        return self._order_status(self._transaction(await self._call("GET", path)))
