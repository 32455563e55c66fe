"""Alipay adapter: the port over the OpenAPI gateway (``gateway.do``) with RSA2.

Requests are form posts of the common parameters plus ``biz_content`` (JSON),
signed with the app private key (``wire.alipay.sign_request``). Answers are
``{"<method>_response": {...}, "sign": "..."}``; the signature covers the raw
text of the response node exactly as received, so the node is cut out of the
body text (never re-serialised) before verifying with the Alipay public key.

Methods: ``alipay.trade.precreate`` (QR order), ``alipay.trade.query``,
``alipay.trade.close``, ``alipay.trade.refund`` (synchronous),
``alipay.trade.fastpay.refund.query``, ``alipay.data.dataservice.bill.downloadurl.query``
(then a plain GET of the zip, checked by parsing it against its own footer).

Notifications are verified by ``wire.alipay.verify_notification``; the reply
that stops re-sending is exactly ``success``. Alipay has no replay window in
its protocol: duplicates are absorbed by the inbox keyed on ``notify_id``.

No contactless rail here: Alipay's parking deduction products are out of scope.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

import httpx
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from parking.clock import Clock
from parking.payments.port import (
    BillNotReady,
    ForeignNotification,
    H5Scene,
    NotificationReply,
    OrderNotFound,
    OrderState,
    OrderStatus,
    OtherEvent,
    PaymentClosed,
    PaymentProvider,
    PaymentSucceeded,
    ProviderEvent,
    ProviderOrder,
    ProviderRejected,
    ProviderUnavailable,
    RefundState,
    RefundStatus,
    RefundSucceeded,
    TradeBillFile,
)
from parking.payments.wire import (
    MalformedBill,
    MalformedMessage,
    format_beijing_time,
    parse_beijing_time,
)
from parking.payments.wire import alipay as wire
from parking.payments.wire.money import MalformedAmount, fen_to_yuan, yuan_to_fen

__all__ = [
    "BILL_KIND",
    "AlipayConfig",
    "AlipayKeys",
    "AlipayProvider",
    "load_config",
]

BILL_KIND: Final = "alipay-bill-zip"
_SUCCESS: Final = "10000"
#: 20000 is Alipay's "service temporarily unavailable"; SYSTEM_ERROR sub-codes
#: (ACQ.SYSTEM_ERROR, aop.ACQ.SYSTEM_ERROR) ask the caller to retry the same request.
_UNAVAILABLE_CODES: Final = frozenset({"20000"})
_NOT_FOUND_SUB_CODES: Final = frozenset({"ACQ.TRADE_NOT_EXIST"})
_BILL_NOT_READY_SUB_CODES: Final = frozenset({"isp.bill_not_exist"})
_ORDER_STATES: Final[Mapping[wire.TradeStatus, OrderState]] = {
    wire.TradeStatus.WAIT_BUYER_PAY: OrderState.PENDING,
    wire.TradeStatus.TRADE_SUCCESS: OrderState.PAID,
    wire.TradeStatus.TRADE_FINISHED: OrderState.PAID,
    wire.TradeStatus.TRADE_CLOSED: OrderState.CLOSED,
}


class AlipayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The adapter's configuration file (JSON); key paths relative to the file."""

    provider: str = "alipay"
    gateway_url: str = "https://openapi.alipay.com/gateway.do"
    app_id: str
    #: Our merchant's PID (2088...): notifications naming another seller are refused.
    seller_id: str | None = None
    app_private_key_path: str
    alipay_public_key_path: str
    timeout_seconds: float = 10.0


def load_config(path: Path) -> AlipayConfig:
    config = msgspec.json.decode(path.read_bytes(), type=AlipayConfig)
    base = path.resolve().parent
    return msgspec.structs.replace(
        config,
        app_private_key_path=str((base / config.app_private_key_path).resolve()),
        alipay_public_key_path=str((base / config.alipay_public_key_path).resolve()),
    )


class AlipayKeys:
    def __init__(self, *, app_private_key: RSAPrivateKey, alipay_public_key: RSAPublicKey) -> None:
        self.app_private_key = app_private_key
        self.alipay_public_key = alipay_public_key

    @classmethod
    def load(cls, config: AlipayConfig) -> AlipayKeys:
        private = serialization.load_pem_private_key(
            Path(config.app_private_key_path).read_bytes(), password=None
        )
        public = serialization.load_pem_public_key(Path(config.alipay_public_key_path).read_bytes())
        if not isinstance(private, RSAPrivateKey) or not isinstance(public, RSAPublicKey):
            raise ValueError("Alipay keys must be RSA keys")
        return cls(app_private_key=private, alipay_public_key=public)


# --------------------------------------------------------------------------- response shapes


class _Answer(msgspec.Struct, frozen=True):
    code: str
    msg: str = ""
    sub_code: str | None = None
    sub_msg: str | None = None


class _Precreated(msgspec.Struct, frozen=True):
    out_trade_no: str
    qr_code: str


class _Trade(msgspec.Struct, frozen=True):
    out_trade_no: str
    trade_status: wire.TradeStatus
    total_amount: str
    trade_no: str | None = None
    buyer_pay_amount: str | None = None
    receipt_amount: str | None = None
    send_pay_date: str | None = None
    buyer_user_id: str | None = None
    buyer_open_id: str | None = None
    passback_params: str | None = None
    subject: str | None = None


class _Refunded(msgspec.Struct, frozen=True):
    out_trade_no: str
    trade_no: str | None = None
    refund_fee: str | None = None
    gmt_refund_pay: str | None = None


class _RefundQuery(msgspec.Struct, frozen=True):
    out_trade_no: str | None = None
    out_request_no: str | None = None
    trade_no: str | None = None
    refund_amount: str | None = None
    total_amount: str | None = None
    refund_status: str | None = None
    gmt_refund_pay: str | None = None


class _BillLink(msgspec.Struct, frozen=True):
    bill_download_url: str


def _top_level(text: str) -> dict[str, tuple[Any, str]]:
    """``{key: (value, raw text of the value)}`` of a JSON object's top level.

    The raw text is what Alipay signed; ``json.JSONDecoder.raw_decode`` tells
    exactly where each value starts and ends, so nothing is re-serialised.
    """
    decoder = json.JSONDecoder()
    out: dict[str, tuple[Any, str]] = {}

    def skip(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    position = skip(0)
    if text[position : position + 1] != "{":
        raise ValueError("not a JSON object")
    position = skip(position + 1)
    if text[position : position + 1] == "}":
        return out
    while True:
        key, position = decoder.raw_decode(text, position)
        if not isinstance(key, str):
            raise ValueError("object key is not a string")
        position = skip(position)
        if text[position : position + 1] != ":":
            raise ValueError("expected ':'")
        start = position = skip(position + 1)
        value, position = decoder.raw_decode(text, position)
        out[key] = (value, text[start:position])
        position = skip(position)
        if text[position : position + 1] == ",":
            position = skip(position + 1)
            continue
        if text[position : position + 1] == "}":
            return out
        raise ValueError("expected ',' or '}'")


def _fen(text: str | None) -> int | None:
    return None if text is None or text == "" else yuan_to_fen(text)


def _time(text: str | None) -> datetime | None:
    return None if not text else parse_beijing_time(text, allow_millis=True)


class AlipayProvider(PaymentProvider):
    """The Alipay adapter. ``http`` is injected and shared; ``clock`` stamps requests."""

    def __init__(
        self,
        config: AlipayConfig,
        keys: AlipayKeys,
        *,
        http: httpx.AsyncClient,
        clock: Clock,
    ) -> None:
        self.name = config.provider
        self._config = config
        self._keys = keys
        self._http = http
        self._clock = clock

    @classmethod
    def from_config(
        cls, config: AlipayConfig, *, http: httpx.AsyncClient, clock: Clock
    ) -> AlipayProvider:
        return cls(config, AlipayKeys.load(config), http=http, clock=clock)

    # ----------------------------------------------------------------- transport

    def _verify(self, raw_node: str, sign: str) -> bool:
        try:
            signature = base64.b64decode(sign, validate=True)
            self._keys.alipay_public_key.verify(
                signature, raw_node.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
            )
        except (binascii.Error, ValueError, InvalidSignature):
            return False
        return True

    async def _call(
        self, method: str, biz: Mapping[str, Any], *, notify_url: str | None = None
    ) -> bytes:
        """One gateway call; returns the verified raw JSON of the success node."""
        params = {
            "app_id": self._config.app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": wire.SIGN_TYPE,
            "timestamp": format_beijing_time(self._clock.now().replace(microsecond=0)),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        if notify_url is not None:
            params["notify_url"] = notify_url
        params["sign"] = wire.sign_request(params, self._keys.app_private_key)
        try:
            response = await self._http.post(
                self._config.gateway_url,
                data=params,
                headers={"Accept": "application/json"},
                timeout=self._config.timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            raise ProviderUnavailable(self.name, "TIMEOUT", str(exc) or "timed out") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.name, "NETWORK", str(exc) or repr(exc)) from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailable(
                self.name, f"HTTP_{status}", response.reason_phrase, http_status=status
            )
        try:
            nodes = _top_level(response.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProviderUnavailable(
                self.name, "MALFORMED_RESPONSE", f"{method}: {exc}", http_status=status
            ) from exc
        node_key = method.replace(".", "_") + "_response"
        node = nodes.get(node_key) or nodes.get("error_response")
        if node is None:
            raise ProviderUnavailable(
                self.name, "MALFORMED_RESPONSE", f"{method}: no {node_key}", http_status=status
            )
        value, raw = node
        try:
            answer = msgspec.convert(value, _Answer)
        except msgspec.ValidationError as exc:
            raise ProviderUnavailable(self.name, "MALFORMED_RESPONSE", str(exc)) from exc
        sign = nodes.get("sign", (None, ""))[0]
        signed = isinstance(sign, str) and bool(sign) and self._verify(raw, sign)
        if answer.code == _SUCCESS:
            if not signed:
                # Never believe a success we cannot attribute to Alipay.
                raise ProviderUnavailable(
                    self.name, "RESPONSE_NOT_AUTHENTIC", f"{method}: sign does not verify"
                )
            return raw.encode("utf-8")
        # Errors may come unsigned (Alipay omits sign on some); believing one
        # only makes us refuse or retry, never record money.
        code = answer.sub_code or answer.code
        message = answer.sub_msg or answer.msg
        if answer.code in _UNAVAILABLE_CODES or code.endswith("SYSTEM_ERROR"):
            raise ProviderUnavailable(self.name, code, message, http_status=status)
        if code in _NOT_FOUND_SUB_CODES:
            raise OrderNotFound(self.name, code, message, http_status=status)
        if code in _BILL_NOT_READY_SUB_CODES:
            raise BillNotReady(self.name, code, message, http_status=status)
        raise ProviderRejected(self.name, code, message, http_status=status)

    def _decode(self, raw: bytes, type_: type[Any], what: str) -> Any:
        try:
            return msgspec.json.decode(raw, type=type_)
        except msgspec.DecodeError as exc:
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", f"{what}: {exc}") from exc

    # ----------------------------------------------------------------- orders

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
        if h5 is not None:
            # alipay.trade.wap.pay is not spoken yet (pays_in_browser is False).
            raise ValueError("the Alipay adapter takes QR-code orders only")
        if type(amount_fen) is not int or amount_fen <= 0:
            raise ValueError(f"amount must be a positive int of fen, got {amount_fen!r}")
        biz: dict[str, Any] = {
            "out_trade_no": out_trade_no,
            "total_amount": fen_to_yuan(amount_fen),
            "subject": description,
        }
        if attach is not None:
            # Returned as-is in queries and notifications; callers pass ASCII ids.
            biz["passback_params"] = attach
        if expires_at is not None:
            biz["time_expire"] = format_beijing_time(expires_at.replace(microsecond=0))
        raw = await self._call("alipay.trade.precreate", biz, notify_url=notify_url)
        created = self._decode(raw, _Precreated, "precreate")
        return ProviderOrder(
            provider=self.name,
            out_trade_no=out_trade_no,
            amount_fen=amount_fen,
            code_url=created.qr_code,
            expires_at=expires_at,
        )

    async def query_order(self, out_trade_no: str) -> OrderStatus:
        raw = await self._call("alipay.trade.query", {"out_trade_no": out_trade_no})
        trade = self._decode(raw, _Trade, "trade")
        try:
            total = yuan_to_fen(trade.total_amount)
            paid = _fen(trade.buyer_pay_amount)
            paid_at = _time(trade.send_pay_date)
        except (MalformedAmount, ValueError) as exc:
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", str(exc)) from exc
        state = _ORDER_STATES[trade.trade_status]
        if state is OrderState.CLOSED and paid_at is not None:
            # Alipay closes a trade once it is refunded in full.
            state = OrderState.REFUNDED
        return OrderStatus(
            provider=self.name,
            out_trade_no=trade.out_trade_no,
            state=state,
            provider_state=trade.trade_status.value,
            amount_fen=total,
            paid_fen=(paid if paid is not None else total) if paid_at is not None else None,
            transaction_id=trade.trade_no,
            succeeded_at=paid_at,
            attach=trade.passback_params,
            payer_id=trade.buyer_open_id or trade.buyer_user_id,
            description=trade.subject,
        )

    async def close_order(self, out_trade_no: str) -> None:
        await self._call("alipay.trade.close", {"out_trade_no": out_trade_no})

    # ----------------------------------------------------------------- refunds

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
        # Refund notifications (when enabled) go to the order's notify_url;
        # Alipay has no per-refund URL, so ``notify_url`` is not sent.
        raw = await self._call(
            "alipay.trade.refund",
            {
                "out_trade_no": out_trade_no,
                "refund_amount": fen_to_yuan(refund_fen),
                "out_request_no": out_refund_no,
                "refund_reason": reason,
            },
        )
        refunded = self._decode(raw, _Refunded, "refund")
        try:
            refunded_at = _time(refunded.gmt_refund_pay)
        except ValueError as exc:
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", str(exc)) from exc
        # A 10000 answer is the refund done (Alipay refunds synchronously; a
        # repeat of the same out_request_no answers fund_change=N, also done).
        return RefundStatus(
            provider=self.name,
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            state=RefundState.SUCCEEDED,
            provider_state="REFUND_SUCCESS",
            refund_fen=refund_fen,
            total_fen=total_fen,
            refund_id=refunded.trade_no,
            succeeded_at=refunded_at,
        )

    async def query_refund(self, out_trade_no: str, out_refund_no: str) -> RefundStatus:
        raw = await self._call(
            "alipay.trade.fastpay.refund.query",
            {
                "out_trade_no": out_trade_no,
                "out_request_no": out_refund_no,
                "query_options": ["gmt_refund_pay"],
            },
        )
        found = self._decode(raw, _RefundQuery, "refund query")
        if not found.out_request_no or found.refund_amount is None:
            # Alipay answers 10000 with no refund fields for an unknown refund.
            raise OrderNotFound(self.name, "REFUND_NOT_EXIST", f"no refund {out_refund_no}")
        try:
            refund_fen = yuan_to_fen(found.refund_amount)
            total_fen = _fen(found.total_amount) or refund_fen
            refunded_at = _time(found.gmt_refund_pay)
        except (MalformedAmount, ValueError) as exc:
            raise ProviderRejected(self.name, "MALFORMED_RESPONSE", str(exc)) from exc
        # refund_status is only sent for asynchronous refunds; for the ordinary
        # synchronous kind, a refund the query finds is a refund that succeeded.
        done = found.refund_status in (None, "", "REFUND_SUCCESS")
        return RefundStatus(
            provider=self.name,
            out_trade_no=out_trade_no,
            out_refund_no=out_refund_no,
            state=RefundState.SUCCEEDED if done else RefundState.PROCESSING,
            provider_state=found.refund_status or "",
            refund_fen=refund_fen,
            total_fen=total_fen,
            refund_id=found.trade_no,
            succeeded_at=refunded_at,
        )

    # ----------------------------------------------------------------- bills

    async def download_trade_bill(self, bill_date: date) -> TradeBillFile:
        raw = await self._call(
            "alipay.data.dataservice.bill.downloadurl.query",
            {"bill_type": "trade", "bill_date": bill_date.isoformat()},
        )
        link = self._decode(raw, _BillLink, "bill link")
        try:
            # The URL is valid for 30 s: fetch it at once. It is not signed.
            download = await self._http.get(
                link.bill_download_url, timeout=self._config.timeout_seconds
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(self.name, "NETWORK", str(exc) or repr(exc)) from exc
        if download.status_code != 200:
            raise ProviderUnavailable(
                self.name, f"HTTP_{download.status_code}", "bill download failed"
            )
        try:
            # Alipay gives no hash: the footer cross-check is the integrity check.
            wire.parse_bill_zip(download.content)
        except MalformedBill as exc:
            raise ProviderUnavailable(self.name, "BILL_MALFORMED", str(exc)) from exc
        return TradeBillFile(
            provider=self.name, bill_date=bill_date, kind=BILL_KIND, content=download.content
        )

    # ----------------------------------------------------------------- notifications

    def _form(self, body: bytes) -> dict[str, str]:
        text = body.decode("latin-1")
        charset = "utf-8"
        for key, value in parse_qsl(text, keep_blank_values=True, encoding="latin-1"):
            if key == "charset" and value.strip():
                charset = value.strip()
        try:
            pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
        except (LookupError, UnicodeDecodeError) as exc:
            raise MalformedMessage(f"alipay notification is not {charset}: {exc}") from exc
        form: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                # A repeated field could make us verify one value and act on another.
                raise wire.BadSignature(f"field {key!r} appears twice")
            form[key] = value
        return form

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> ProviderEvent:
        form = self._form(body)
        notice = wire.verify_notification(form, alipay_public_key=self._keys.alipay_public_key)
        if notice.app_id != self._config.app_id or (
            self._config.seller_id is not None and notice.seller_id != self._config.seller_id
        ):
            raise ForeignNotification(
                f"notification for app {notice.app_id!r} / seller {notice.seller_id!r}"
            )
        common: dict[str, Any] = {
            "provider": self.name,
            "notification_id": notice.notify_id,
            "out_trade_no": notice.out_trade_no,
            "notified_at": notice.notify_time,
            "payload": body.decode("latin-1"),
        }
        if notice.is_refund:
            return RefundSucceeded(
                out_refund_no=notice.out_biz_no or "",
                refund_id=notice.trade_no,
                refund_fen=None,
                total_fen=notice.total_amount_fen,
                succeeded_at=notice.gmt_refund,
                refunded_total_fen=notice.refund_fee_fen,
                **common,
            )
        if notice.is_paid:
            paid = notice.buyer_pay_amount_fen or notice.receipt_amount_fen
            return PaymentSucceeded(
                transaction_id=notice.trade_no,
                amount_fen=notice.total_amount_fen,
                paid_fen=paid if paid is not None else notice.total_amount_fen,
                succeeded_at=notice.gmt_payment or notice.notify_time,
                attach=notice.passback_params,
                **common,
            )
        if notice.trade_status is wire.TradeStatus.TRADE_CLOSED:
            return PaymentClosed(transaction_id=notice.trade_no, **common)
        return OtherEvent(event_type=notice.trade_status.value, **common)

    def notification_reply(self, ok: bool) -> NotificationReply:
        # Alipay reads only the body: exactly "success" stops the re-sends.
        return NotificationReply(
            200,
            {"Content-Type": "text/plain; charset=utf-8"},
            wire.SUCCESS_REPLY if ok else b"fail",
        )
