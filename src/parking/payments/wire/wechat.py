"""WeChat Pay API v3 on the wire: signatures, AES-GCM resources, messages, trade bills.

Kept whole (over 600 lines): one provider's wire format, read beside its v3 spec
and the trade bill notes; splitting it would split one protocol across files.

Everything here is pure. Callers pass the raw bytes they received, the keys
they loaded and the current time; nothing reads a clock, a file or a socket.
The sandbox provider uses the signing/encrypting/rendering halves, the
adapters and the payment flow the verifying/decrypting/parsing halves, so both
sides of every format are defined in one place and tested against each other.

Facts are from notes/provider-formats.md (official docs and SDKs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parking.payments.wire import (
    BadSignature,
    BillMismatch,
    MalformedBill,
    MalformedMessage,
    NotificationRejected,
    WireError,
    format_beijing_time,
    parse_beijing_time,
)
from parking.payments.wire.money import (
    MalformedAmount,
    fen_to_yuan,
    milli_fen_to_yuan,
    yuan_to_fen,
    yuan_to_milli_fen,
)

__all__ = [
    "AEAD_ALGORITHM",
    "PAID_TRADE_STATES",
    "PENDING_TRADE_STATES",
    "REPLAY_WINDOW",
    "SIGNATURE_TYPE",
    "UNPAID_FINAL_TRADE_STATES",
    "AuthorizationRejected",
    "BadSignature",
    "BillMismatch",
    "DecryptionFailed",
    "EventType",
    "MalformedBill",
    "MalformedHeader",
    "MalformedMessage",
    "MissingHeader",
    "Notification",
    "NotificationRejected",
    "Payer",
    "RefundAmount",
    "RefundNotice",
    "RefundStatus",
    "RequestAuthorization",
    "Resource",
    "StaleTimestamp",
    "TradeBill",
    "TradeBillRow",
    "TradeBillSummary",
    "TradeBillType",
    "TradeState",
    "Transaction",
    "TransactionAmount",
    "UnknownSerial",
    "bill_hash_ok",
    "decode_notification",
    "decode_refund",
    "decode_transaction",
    "decrypt_resource",
    "encode_message",
    "encrypt_resource",
    "parse_trade_bill",
    "render_trade_bill",
    "sign_notification",
    "sign_request",
    "verify_notification",
    "verify_request_authorization",
]

SIGNATURE_TYPE: Final = "WECHATPAY2-SHA256-RSA2048"
AEAD_ALGORITHM: Final = "AEAD_AES_256_GCM"
#: The official Go SDK refuses ``|now - timestamp| >= 300 s``; so do we.
REPLAY_WINDOW: Final = timedelta(minutes=5)

_API_V3_KEY_BYTES = 32
_GCM_NONCE_BYTES = 12


# --------------------------------------------------------------------------- errors


class MissingHeader(NotificationRejected):
    """A required ``Wechatpay-*`` header is absent or empty."""


class MalformedHeader(NotificationRejected):
    """A header is present but unusable (a non-numeric timestamp, conflicting duplicates)."""


class UnknownSerial(NotificationRejected):
    """``Wechatpay-Serial`` names no platform certificate or public key we hold.

    After a platform key rotation this is the signal to refresh the key set,
    not proof of forgery; either way the notification is not acted on.
    """


class StaleTimestamp(NotificationRejected):
    """Correctly signed, but the timestamp is outside the replay window.

    Raised only after the signature verified, so the receiver may treat the
    body as authentic (e.g. answer success for a notification id it already
    processed) while still refusing to act on it.
    """


class DecryptionFailed(WireError):
    """A resource does not decrypt: wrong APIv3 key, tampered ciphertext or bad nonce."""


class AuthorizationRejected(WireError):
    """An incoming ``Authorization`` header does not prove the merchant signed the request.

    The sandbox provider answers this with 401 ``SIGN_ERROR``, as WeChat does
    for every variant of the failure, so one type is enough.
    """


# --------------------------------------------------------------------------- signing


def _sign(message: bytes, private_key: RSAPrivateKey) -> str:
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def _signature_ok(message: bytes, signature_b64: str, public_key: RSAPublicKey) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        # Includes WeChat's "WECHATPAY/SIGNTEST/..." probe signatures, which
        # merchants are expected to refuse.
        return False
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")


def _fresh(timestamp: int, now: datetime, window: timedelta) -> bool:
    # In seconds rather than datetimes: a forged 12-digit timestamp would
    # overflow datetime's year range instead of simply being stale.
    return abs(now.timestamp() - timestamp) < window.total_seconds()


# A token that can sit inside a quoted header parameter and a signed line
# without escaping: no quotes, commas, whitespace or newlines.
_TOKEN = re.compile(r"[!#-+\--~]+", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,12}", re.ASCII)


def _check_token(name: str, value: str) -> None:
    if _TOKEN.fullmatch(value) is None:
        raise ValueError(f"{name} {value!r} cannot be carried in a signed header")


def _request_message(
    method: str, path_with_query: str, timestamp: int, nonce: str, body: bytes
) -> bytes:
    head = f"{method}\n{path_with_query}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def sign_request(
    method: str,
    path_with_query: str,
    body: bytes,
    *,
    mchid: str,
    serial_no: str,
    private_key: RSAPrivateKey,
    timestamp: int,
    nonce: str,
) -> str:
    """The ``Authorization`` header value for an outgoing API v3 request.

    Signs ``METHOD\\npath?query\\ntimestamp\\nnonce\\nbody\\n`` with the merchant's
    API key (``body`` is ``b""`` for GET). ``path_with_query`` must be exactly
    the request target sent, query string included and percent-encoded as sent.
    """
    if not path_with_query.startswith("/") or any(c in path_with_query for c in "\r\n"):
        raise ValueError(f"not a request target: {path_with_query!r}")
    method = method.upper()
    for name, value in (("method", method), ("mchid", mchid), ("serial_no", serial_no)):
        _check_token(name, value)
    _check_token("nonce", nonce)
    if timestamp < 0:
        raise ValueError("timestamp must be unix seconds")
    signature = _sign(
        _request_message(method, path_with_query, timestamp, nonce, body), private_key
    )
    return (
        f'{SIGNATURE_TYPE} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


class RequestAuthorization(msgspec.Struct, frozen=True, kw_only=True):
    """The parameters of a verified ``Authorization`` header."""

    mchid: str
    nonce_str: str
    signature: str
    timestamp: int
    serial_no: str


_AUTH_PARAM = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*', re.ASCII)
_AUTH_KEYS = frozenset({"mchid", "nonce_str", "signature", "timestamp", "serial_no"})


def _parse_authorization(header: str) -> dict[str, str]:
    scheme, _, rest = header.strip().partition(" ")
    if scheme != SIGNATURE_TYPE:
        raise AuthorizationRejected(f"unsupported authorization scheme {scheme!r}")
    params: dict[str, str] = {}
    # Values never contain commas (base64, digits, tokens), so a split is exact.
    for part in rest.split(","):
        match = _AUTH_PARAM.fullmatch(part)
        if match is None:
            raise AuthorizationRejected(f"malformed authorization parameter {part!r}")
        key, value = match.groups()
        if key in params:
            raise AuthorizationRejected(f"duplicate authorization parameter {key!r}")
        params[key] = value
    missing = _AUTH_KEYS - params.keys()
    if missing:
        raise AuthorizationRejected(f"authorization lacks {', '.join(sorted(missing))}")
    return params


def verify_request_authorization(
    authorization: str,
    *,
    method: str,
    path_with_query: str,
    body: bytes,
    public_keys: Mapping[tuple[str, str], RSAPublicKey],
    now: datetime,
    window: timedelta = REPLAY_WINDOW,
) -> RequestAuthorization:
    """Check an incoming request's ``Authorization`` header (the sandbox provider's side).

    ``public_keys`` maps ``(mchid, serial_no)`` to the merchant's public key,
    so a key only ever vouches for the merchant it was registered to. Raises
    ``AuthorizationRejected``; returns the parsed parameters on success.
    """
    _require_aware(now)
    params = _parse_authorization(authorization)
    if _DIGITS.fullmatch(params["timestamp"]) is None:
        raise AuthorizationRejected(f"timestamp {params['timestamp']!r} is not unix seconds")
    auth = RequestAuthorization(
        mchid=params["mchid"],
        nonce_str=params["nonce_str"],
        signature=params["signature"],
        timestamp=int(params["timestamp"]),
        serial_no=params["serial_no"],
    )
    key = public_keys.get((auth.mchid, auth.serial_no))
    if key is None:
        raise AuthorizationRejected(f"no key {auth.serial_no!r} for merchant {auth.mchid!r}")
    message = _request_message(
        method.upper(), path_with_query, auth.timestamp, auth.nonce_str, body
    )
    if not _signature_ok(message, auth.signature, key):
        raise AuthorizationRejected("signature does not verify")
    if not _fresh(auth.timestamp, now, window):
        raise AuthorizationRejected(f"timestamp {auth.timestamp} outside the {window} window")
    return auth


# --------------------------------------------------------------------------- notifications

_H_SERIAL = "Wechatpay-Serial"
_H_SIGNATURE = "Wechatpay-Signature"
_H_TIMESTAMP = "Wechatpay-Timestamp"
_H_NONCE = "Wechatpay-Nonce"
_H_SIGNATURE_TYPE = "Wechatpay-Signature-Type"


def _notification_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign_notification(
    body: bytes, *, private_key: RSAPrivateKey, serial: str, timestamp: int, nonce: str
) -> dict[str, str]:
    """The ``Wechatpay-*`` headers WeChat sends with a notification (the sandbox's side).

    ``private_key`` is the platform key; ``serial`` its certificate serial or
    public-key id. ``body`` must be sent byte-for-byte as signed.
    """
    _check_token("serial", serial)
    _check_token("nonce", nonce)
    if timestamp < 0:
        raise ValueError("timestamp must be unix seconds")
    stamp = str(timestamp)
    return {
        _H_SERIAL: serial,
        _H_SIGNATURE: _sign(_notification_message(stamp, nonce, body), private_key),
        _H_TIMESTAMP: stamp,
        _H_NONCE: nonce,
        _H_SIGNATURE_TYPE: SIGNATURE_TYPE,
    }


def _fold_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # HTTP header names are case-insensitive and frameworks disagree on the
    # case they hand over; values are trimmed as the Go SDK does.
    folded: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        trimmed = value.strip()
        if key in folded and folded[key] != trimmed:
            raise MalformedHeader(f"conflicting values for header {name!r}")
        folded[key] = trimmed
    return folded


def _required(folded: Mapping[str, str], name: str) -> str:
    value = folded.get(name.lower(), "")
    if not value:
        raise MissingHeader(f"missing header {name}")
    return value


def verify_notification(
    headers: Mapping[str, str],
    body: bytes,
    *,
    public_keys: Mapping[str, RSAPublicKey],
    now: datetime,
    window: timedelta = REPLAY_WINDOW,
) -> None:
    """Prove a notification came from WeChat, unaltered and recently.

    ``body`` is the raw request body exactly as received: it is what WeChat
    signed, so it must never be re-serialised first. ``public_keys`` maps the
    platform certificate serial (or, for merchants onboarded after 2024-09, the
    platform public-key id) to the platform key, never the merchant's own.

    Raises ``MissingHeader``, ``MalformedHeader``, ``UnknownSerial``,
    ``BadSignature`` or ``StaleTimestamp`` (all ``NotificationRejected``); the
    signature is checked before freshness, see ``StaleTimestamp``. Returns only
    if all checks pass; then ``decode_notification`` the same bytes.
    """
    _require_aware(now)
    folded = _fold_headers(headers)
    serial = _required(folded, _H_SERIAL)
    signature = _required(folded, _H_SIGNATURE)
    timestamp = _required(folded, _H_TIMESTAMP)
    nonce = _required(folded, _H_NONCE)
    # Older notifications may omit the type; one that names another scheme
    # must not be verified as if it were ours.
    signature_type = folded.get(_H_SIGNATURE_TYPE.lower())
    if signature_type is not None and signature_type != SIGNATURE_TYPE:
        raise BadSignature(f"unsupported signature type {signature_type!r}")
    if _DIGITS.fullmatch(timestamp) is None:
        raise MalformedHeader(f"{_H_TIMESTAMP} {timestamp!r} is not unix seconds")
    key = public_keys.get(serial)
    if key is None:
        raise UnknownSerial(f"no platform key for serial {serial!r}")
    if not _signature_ok(_notification_message(timestamp, nonce, body), signature, key):
        raise BadSignature("notification signature does not verify")
    if not _fresh(int(timestamp), now, window):
        raise StaleTimestamp(f"timestamp {timestamp} outside the {window} window of {now}")


# --------------------------------------------------------------------------- messages
#
# Provider message Structs do NOT forbid unknown fields: WeChat documents that
# it adds fields to notifications and query results over time, and a strict
# decoder would turn such an addition into a day of rejected payments. Required
# fields, types and enums are still enforced.

_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
_Fen = Annotated[int, msgspec.Meta(ge=0)]


class EventType(StrEnum):
    """Known ``event_type`` values. ``Notification.event_type`` stays a plain
    ``str`` so a new event type is routed (or dead-lettered) by the handler
    instead of failing to decode."""

    TRANSACTION_SUCCESS = "TRANSACTION.SUCCESS"
    #: Parking service: the asynchronous deduction failed.
    TRANSACTION_FAIL = "TRANSACTION.FAIL"
    #: Parking service: a failed (or WeChat-advanced) deduction was repaid.
    TRANSACTION_PAY_BACK = "TRANSACTION.PAY_BACK"
    REFUND_SUCCESS = "REFUND.SUCCESS"
    REFUND_ABNORMAL = "REFUND.ABNORMAL"
    REFUND_CLOSED = "REFUND.CLOSED"


class Resource(msgspec.Struct, frozen=True, kw_only=True):
    """The encrypted payload of a notification."""

    original_type: str
    algorithm: str
    ciphertext: str
    #: Documented as "may be empty"; absent is treated the same.
    associated_data: str = ""
    nonce: str


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """A notification body, before decryption."""

    id: str
    create_time: _AwareDatetime
    event_type: str
    resource_type: str
    summary: str = ""
    resource: Resource


class TradeState(StrEnum):
    """``trade_state`` of both rails, as one enum.

    One enum because the payment flow keeps one state column per provider order
    and the parking-service rail reuses SUCCESS and REFUND with the same
    meaning. Which rail produces which value:

    - basic payment (JSAPI/NATIVE/...): SUCCESS, REFUND, NOTPAY, CLOSED,
      REVOKED, USERPAYING, PAYERROR;
    - parking service (微信支付分停车服务, deduction is asynchronous): SUCCESS,
      ACCEPTED, PAY_FAIL, REFUND.

    A value outside this set fails decoding with ``MalformedMessage``.
    """

    SUCCESS = "SUCCESS"
    REFUND = "REFUND"
    NOTPAY = "NOTPAY"
    CLOSED = "CLOSED"
    REVOKED = "REVOKED"
    USERPAYING = "USERPAYING"
    PAYERROR = "PAYERROR"
    #: Parking service: deduction accepted, result comes later (the car may leave).
    ACCEPTED = "ACCEPTED"
    #: Parking service: deduction failed; not final, the user may still repay.
    PAY_FAIL = "PAY_FAIL"


#: The money was taken (REFUND: taken, then at least partly refunded).
PAID_TRADE_STATES: Final = frozenset({TradeState.SUCCESS, TradeState.REFUND})
#: No money was or will be taken for this provider order.
UNPAID_FINAL_TRADE_STATES: Final = frozenset(
    {TradeState.CLOSED, TradeState.REVOKED, TradeState.PAYERROR}
)
#: Not settled yet: query again later or wait for a notification.
PENDING_TRADE_STATES: Final = frozenset(
    {TradeState.NOTPAY, TradeState.USERPAYING, TradeState.ACCEPTED, TradeState.PAY_FAIL}
)


class RefundStatus(StrEnum):
    SUCCESS = "SUCCESS"
    CLOSED = "CLOSED"
    PROCESSING = "PROCESSING"
    ABNORMAL = "ABNORMAL"


class TransactionAmount(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Amounts in fen, as WeChat sends them (integers, not yuan)."""

    total: _Fen
    payer_total: _Fen | None = None
    currency: str = "CNY"
    payer_currency: str | None = None
    #: Parking service only.
    discount_total: _Fen | None = None


class Payer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    openid: str | None = None


class Transaction(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A decrypted ``TRANSACTION.*`` resource, or an order query result.

    ``mchid``/``appid`` are optional because parking-service payloads carry
    ``sp_mchid``/``sub_mchid`` instead; the payment flow must check whichever
    identifies us. ``transaction_id`` is absent while a basic order is NOTPAY.
    """

    out_trade_no: str
    trade_state: TradeState
    amount: TransactionAmount
    transaction_id: str | None = None
    mchid: str | None = None
    appid: str | None = None
    sp_mchid: str | None = None
    sub_mchid: str | None = None
    trade_type: str | None = None
    trade_state_desc: str | None = None
    bank_type: str | None = None
    attach: str | None = None
    success_time: _AwareDatetime | None = None
    payer: Payer | None = None
    #: Parking service: "Y" once the user repaid an advanced deduction.
    user_repaid: str | None = None
    trade_scene: str | None = None


class RefundAmount(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    total: _Fen
    refund: _Fen
    payer_total: _Fen
    payer_refund: _Fen


class RefundNotice(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A decrypted ``REFUND.*`` resource."""

    out_trade_no: str
    out_refund_no: str
    refund_id: str
    refund_status: RefundStatus
    amount: RefundAmount
    transaction_id: str | None = None
    mchid: str | None = None
    sp_mchid: str | None = None
    sub_mchid: str | None = None
    success_time: _AwareDatetime | None = None
    user_received_account: str | None = None


_notification_decoder = msgspec.json.Decoder(Notification)
_transaction_decoder = msgspec.json.Decoder(Transaction)
_refund_decoder = msgspec.json.Decoder(RefundNotice)
_encoder = msgspec.json.Encoder()


def decode_notification(body: bytes) -> Notification:
    """Decode a (verified) notification body; raises ``MalformedMessage``."""
    try:
        return _notification_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"notification body: {exc}") from exc


def decode_transaction(plaintext: bytes) -> Transaction:
    """Decode a decrypted ``TRANSACTION.*`` resource; raises ``MalformedMessage``."""
    try:
        return _transaction_decoder.decode(plaintext)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"transaction resource: {exc}") from exc


def decode_refund(plaintext: bytes) -> RefundNotice:
    """Decode a decrypted ``REFUND.*`` resource; raises ``MalformedMessage``."""
    try:
        return _refund_decoder.decode(plaintext)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"refund resource: {exc}") from exc


def encode_message(message: Notification | Transaction | RefundNotice) -> bytes:
    """JSON as WeChat would send it (the sandbox's side); absent optionals are omitted."""
    return _encoder.encode(message)


# --------------------------------------------------------------------------- AEAD_AES_256_GCM


def _aesgcm(api_v3_key: bytes) -> AESGCM:
    if len(api_v3_key) != _API_V3_KEY_BYTES:
        raise ValueError(f"the APIv3 key is {_API_V3_KEY_BYTES} bytes, got {len(api_v3_key)}")
    return AESGCM(api_v3_key)


def encrypt_resource(
    plaintext: bytes,
    *,
    api_v3_key: bytes,
    nonce: str,
    associated_data: str,
    original_type: str = "transaction",
) -> Resource:
    """Encrypt a resource as WeChat does (the sandbox's side).

    ``nonce`` is 12 ASCII characters used as the GCM nonce bytes; it must be
    unique per key. ``original_type`` is ``transaction`` or ``refund``.
    """
    nonce_bytes = nonce.encode()
    if len(nonce) != _GCM_NONCE_BYTES or len(nonce_bytes) != _GCM_NONCE_BYTES:
        raise ValueError(f"nonce must be {_GCM_NONCE_BYTES} ASCII characters")
    sealed = _aesgcm(api_v3_key).encrypt(nonce_bytes, plaintext, associated_data.encode())
    return Resource(
        original_type=original_type,
        algorithm=AEAD_ALGORITHM,
        ciphertext=base64.b64encode(sealed).decode("ascii"),
        associated_data=associated_data,
        nonce=nonce,
    )


def decrypt_resource(resource: Resource, api_v3_key: bytes) -> bytes:
    """Decrypt and authenticate a resource; raises ``DecryptionFailed``.

    A wrong key and a tampered ciphertext are indistinguishable (the GCM tag
    fails either way). A key of the wrong length is a configuration bug and
    raises ``ValueError``.
    """
    aead = _aesgcm(api_v3_key)
    if resource.algorithm != AEAD_ALGORITHM:
        raise DecryptionFailed(f"unsupported algorithm {resource.algorithm!r}")
    nonce = resource.nonce.encode()
    if len(nonce) != _GCM_NONCE_BYTES:
        raise DecryptionFailed(f"nonce must be {_GCM_NONCE_BYTES} bytes")
    try:
        sealed = base64.b64decode(resource.ciphertext, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptionFailed("ciphertext is not base64") from exc
    try:
        return aead.decrypt(nonce, sealed, resource.associated_data.encode())
    except InvalidTag as exc:
        raise DecryptionFailed("authentication tag does not verify") from exc


# --------------------------------------------------------------------------- trade bill
#
# Four parts: detail header, detail rows, summary header, summary row. Every
# value in a row is prefixed with a backtick (so spreadsheets keep long ids as
# text); rows are therefore split on ",`", which also keeps a comma inside a
# product name intact. Columns are found by header name, never by position:
# WeChat has three variants and an older header naming.


class TradeBillType(StrEnum):
    ALL = "ALL"
    SUCCESS = "SUCCESS"
    REFUND = "REFUND"


class TradeBillRow(msgspec.Struct, frozen=True, kw_only=True):
    """One detail row. Amounts in fen; ``fee_milli_fen`` in thousandths of a fen.

    Fields whose column exists only in some variants are ``None`` when the
    bill has no such column (e.g. refund columns in a SUCCESS bill).
    ``refund_id``/``out_refund_no`` are also ``None`` for the ``0`` WeChat
    writes on payment rows; ``sub_mchid`` is ``None`` for the ``0`` of an
    ordinary (non-partner) merchant.
    """

    #: Payment success time, or refund initiation time on refund rows.
    trade_time: datetime
    appid: str
    mchid: str
    sub_mchid: str | None
    device_info: str
    transaction_id: str
    out_trade_no: str
    openid: str
    trade_type: str
    #: SUCCESS, REFUND or REVOKED in practice; refund rows keep the state at initiation.
    trade_state: TradeState
    bank_type: str
    currency: str
    #: 应结订单金额 (legacy 总金额): order amount minus non-recharge vouchers.
    settlement_total_fen: int
    #: 代金券金额 (legacy 企业红包金额).
    coupon_fen: int
    description: str
    attach: str
    #: 手续费 has 5 decimals of yuan: kept exactly as milli-fen; negative on refund rows.
    fee_milli_fen: int
    #: 费率 as written, e.g. ``0.60%``: a display value, never computed with.
    fee_rate: str
    refund_requested_at: datetime | None = None
    refund_succeeded_at: datetime | None = None
    refund_id: str | None = None
    out_refund_no: str | None = None
    refund_fen: int | None = None
    recharge_coupon_refund_fen: int | None = None
    refund_type: str | None = None
    refund_status: str | None = None
    order_amount_fen: int | None = None
    requested_refund_fen: int | None = None
    fee_rate_remark: str | None = None


class TradeBillSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The summary row. ``None`` where the variant has no such column."""

    trade_count: int
    settlement_total_fen: int
    fee_total_milli_fen: int
    refund_total_fen: int | None = None
    recharge_coupon_refund_total_fen: int | None = None
    order_total_fen: int | None = None
    requested_refund_total_fen: int | None = None


class TradeBill(msgspec.Struct, frozen=True, kw_only=True):
    bill_type: TradeBillType
    rows: tuple[TradeBillRow, ...]
    summary: TradeBillSummary


# Canonical header name -> names older bills use for the same column.
_DETAIL_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "特约商户号": ("子商户号",),
    "应结订单金额": ("总金额",),
    "代金券金额": ("企业红包金额", "代金券或立减优惠金额"),
    "充值券退款金额": ("企业红包退款金额", "代金券或立减优惠退款金额"),
}
_SUMMARY_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "应结订单总金额": ("总交易额",),
    "退款总金额": ("总退款金额",),
    "充值券退款总金额": ("总企业红包退款金额", "总代金券或立减优惠退款金额"),
}

_COMMON_HEAD = (
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
)
_REFUND_COLUMNS = (
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
)
_COMMON_TAIL = ("商品名称", "商户数据包", "手续费", "费率", "订单金额")

_DETAIL_HEADERS: Final[Mapping[TradeBillType, tuple[str, ...]]] = {
    TradeBillType.ALL: (
        *_COMMON_HEAD,
        *_REFUND_COLUMNS,
        *_COMMON_TAIL,
        "申请退款金额",
        "费率备注",
    ),
    TradeBillType.SUCCESS: (*_COMMON_HEAD, *_COMMON_TAIL, "费率备注"),
    TradeBillType.REFUND: (
        *_COMMON_HEAD,
        "退款申请时间",
        "退款成功时间",
        *_REFUND_COLUMNS,
        *_COMMON_TAIL,
        "申请退款金额",
        "费率备注",
    ),
}
_SUMMARY_WITH_REFUNDS = (
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
)
_SUMMARY_HEADERS: Final[Mapping[TradeBillType, tuple[str, ...]]] = {
    TradeBillType.ALL: _SUMMARY_WITH_REFUNDS,
    TradeBillType.SUCCESS: ("总交易单数", "应结订单总金额", "手续费总金额", "订单总金额"),
    TradeBillType.REFUND: _SUMMARY_WITH_REFUNDS,
}
# Present in every variant, legacy included; anything else may be absent.
_REQUIRED_DETAIL = frozenset((*_COMMON_HEAD, "商品名称", "商户数据包", "手续费", "费率"))
_REQUIRED_SUMMARY = frozenset(("总交易单数", "应结订单总金额", "手续费总金额"))
_NO_ID = "0"


def _header_index(
    line: str, aliases: Mapping[str, tuple[str, ...]], required: frozenset[str], what: str
) -> dict[str, int]:
    canonical = {alias: name for name, names in aliases.items() for alias in names}
    index: dict[str, int] = {}
    for position, raw in enumerate(line.split(",")):
        name = canonical.get(raw.strip(), raw.strip())
        if name in index:
            raise MalformedBill(f"{what} header repeats column {name!r}")
        index[name] = position
    missing = required - index.keys()
    if missing:
        raise MalformedBill(f"{what} header lacks {', '.join(sorted(missing))}")
    # Unknown columns are ignored: WeChat has added columns before (费率备注).
    return index


def _split_row(line: str, width: int, what: str) -> list[str]:
    if not line.startswith("`"):
        raise MalformedBill(f"{what} row does not start with a backtick: {line[:40]!r}")
    values = line[1:].split(",`")
    if len(values) != width:
        raise MalformedBill(f"{what} row has {len(values)} values, header has {width}")
    return values


class _Cells:
    """Typed access to one row's values by canonical column name."""

    def __init__(self, values: list[str], index: Mapping[str, int], line_no: int) -> None:
        self._values = values
        self._index = index
        self._line_no = line_no

    def has(self, column: str) -> bool:
        return column in self._index

    def text(self, column: str) -> str:
        return self._values[self._index[column]]

    def opt_text(self, column: str) -> str | None:
        return self.text(column) if self.has(column) else None

    def _fail(self, column: str, exc: Exception) -> MalformedBill:
        return MalformedBill(f"line {self._line_no}, {column}: {exc}")

    def fen(self, column: str) -> int:
        try:
            return yuan_to_fen(self.text(column))
        except MalformedAmount as exc:
            raise self._fail(column, exc) from exc

    def opt_fen(self, column: str) -> int | None:
        return self.fen(column) if self.has(column) else None

    def milli_fen(self, column: str) -> int:
        try:
            return yuan_to_milli_fen(self.text(column))
        except MalformedAmount as exc:
            raise self._fail(column, exc) from exc

    def count(self, column: str) -> int:
        value = self.text(column)
        if _DIGITS.fullmatch(value) is None:
            raise self._fail(column, ValueError(f"not a count: {value!r}"))
        return int(value)

    def time(self, column: str) -> datetime:
        try:
            return parse_beijing_time(self.text(column))
        except ValueError as exc:
            raise self._fail(column, exc) from exc

    def opt_time(self, column: str) -> datetime | None:
        if not self.has(column) or not self.text(column):
            return None
        return self.time(column)

    def opt_id(self, column: str) -> str | None:
        value = self.opt_text(column)
        return None if value in (None, "", _NO_ID) else value

    def opt_nonempty(self, column: str) -> str | None:
        return self.opt_text(column) or None

    def trade_state(self, column: str) -> TradeState:
        try:
            return TradeState(self.text(column))
        except ValueError as exc:
            raise self._fail(column, exc) from exc


def _detail_row(cells: _Cells) -> TradeBillRow:
    return TradeBillRow(
        trade_time=cells.time("交易时间"),
        appid=cells.text("公众账号ID"),
        mchid=cells.text("商户号"),
        sub_mchid=cells.opt_id("特约商户号"),
        device_info=cells.text("设备号"),
        transaction_id=cells.text("微信订单号"),
        out_trade_no=cells.text("商户订单号"),
        openid=cells.text("用户标识"),
        trade_type=cells.text("交易类型"),
        trade_state=cells.trade_state("交易状态"),
        bank_type=cells.text("付款银行"),
        currency=cells.text("货币种类"),
        settlement_total_fen=cells.fen("应结订单金额"),
        coupon_fen=cells.fen("代金券金额"),
        description=cells.text("商品名称"),
        attach=cells.text("商户数据包"),
        fee_milli_fen=cells.milli_fen("手续费"),
        fee_rate=cells.text("费率"),
        refund_requested_at=cells.opt_time("退款申请时间"),
        refund_succeeded_at=cells.opt_time("退款成功时间"),
        refund_id=cells.opt_id("微信退款单号"),
        out_refund_no=cells.opt_id("商户退款单号"),
        refund_fen=cells.opt_fen("退款金额"),
        recharge_coupon_refund_fen=cells.opt_fen("充值券退款金额"),
        refund_type=cells.opt_nonempty("退款类型"),
        refund_status=cells.opt_nonempty("退款状态"),
        order_amount_fen=cells.opt_fen("订单金额"),
        requested_refund_fen=cells.opt_fen("申请退款金额"),
        fee_rate_remark=cells.opt_text("费率备注"),
    )


def _summary_row(cells: _Cells) -> TradeBillSummary:
    return TradeBillSummary(
        trade_count=cells.count("总交易单数"),
        settlement_total_fen=cells.fen("应结订单总金额"),
        fee_total_milli_fen=cells.milli_fen("手续费总金额"),
        refund_total_fen=cells.opt_fen("退款总金额"),
        recharge_coupon_refund_total_fen=cells.opt_fen("充值券退款总金额"),
        order_total_fen=cells.opt_fen("订单总金额"),
        requested_refund_total_fen=cells.opt_fen("申请退款总金额"),
    )


def _bill_type(index: Mapping[str, int]) -> TradeBillType:
    if "退款申请时间" in index:
        return TradeBillType.REFUND
    if "微信退款单号" in index:
        return TradeBillType.ALL
    return TradeBillType.SUCCESS


def _summarise(rows: Sequence[TradeBillRow]) -> TradeBillSummary:
    """What the summary row must say about these rows (``None``: column absent)."""
    totals = _RunningTotals()
    for row in rows:
        totals.add(row)
    return totals.summary()


def _check_summary(expected: TradeBillSummary, summary: TradeBillSummary) -> None:
    problems = []
    for field in summary.__struct_fields__:
        stated = getattr(summary, field)
        computed = getattr(expected, field)
        # A column only the summary (or only the detail) has cannot be checked.
        if stated is not None and computed is not None and stated != computed:
            problems.append(f"{field}: summary says {stated}, rows add up to {computed}")
    if problems:
        raise BillMismatch("; ".join(problems))


class _RunningTotals:
    """The summary row's sums, kept while the rows stream past."""

    def __init__(self) -> None:
        self.count = 0
        self.settlement = 0
        self.fee = 0
        self.optional: dict[str, int | None] = dict.fromkeys(_OPTIONAL_SUMS, 0)

    def add(self, row: TradeBillRow) -> None:
        self.count += 1
        self.settlement += row.settlement_total_fen
        self.fee += row.fee_milli_fen
        for field, column in _OPTIONAL_SUMS.items():
            total = self.optional[field]
            value = getattr(row, column)
            self.optional[field] = None if total is None or value is None else total + value

    def summary(self) -> TradeBillSummary:
        return TradeBillSummary(
            trade_count=self.count,
            settlement_total_fen=self.settlement,
            fee_total_milli_fen=self.fee,
            **self.optional,
        )


#: summary field -> the row field it sums (None when some row lacks the column)
_OPTIONAL_SUMS: Final[Mapping[str, str]] = {
    "refund_total_fen": "refund_fen",
    "recharge_coupon_refund_total_fen": "recharge_coupon_refund_fen",
    "order_total_fen": "order_amount_fen",
    "requested_refund_total_fen": "requested_refund_fen",
}


class TradeBillReader:
    """Reads a trade bill line by line, so a file of a million rows is never held whole.

    ``rows()`` yields ``(line number, the line as written, parsed row)``; when it
    is exhausted the summary has been read and checked (``summary``,
    ``bill_type``). Every error is a ``MalformedBill`` (``BillMismatch`` for a
    summary that disagrees with the rows) whose message names the line.
    Lines are decoded text with or without their line ends; a leading BOM is
    ignored.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = lines
        self.summary: TradeBillSummary | None = None
        self.bill_type: TradeBillType | None = None

    def _numbered(self) -> Iterator[tuple[int, str]]:
        for number, raw in enumerate(self._lines, start=1):
            line = raw.rstrip("\r\n")
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield number, line

    def rows(self) -> Iterator[tuple[int, str, TradeBillRow]]:
        lines = self._numbered()
        first = next(lines, None)
        if first is None:
            raise MalformedBill("the file is empty: a trade bill starts with its column header")
        index = _at_line(
            first[0], _header_index, first[1], _DETAIL_ALIASES, _REQUIRED_DETAIL, "detail"
        )
        self.bill_type = _bill_type(index)
        totals = _RunningTotals()
        tail: list[tuple[int, str]] = []
        for number, line in lines:
            if not tail and line.startswith("`"):
                values = _at_line(number, _split_row, line, len(index), "detail")
                row = _detail_row(_Cells(values, index, number))
                totals.add(row)
                yield number, line, row
                continue
            tail.append((number, line))
            if len(tail) > 2:
                raise MalformedBill(f"line {number}: nothing may follow the summary row")
        if len(tail) != 2:
            last = tail[-1][0] if tail else "the end"
            raise MalformedBill(
                f"line {last}: expected a summary header and one summary row after the rows, "
                f"found {len(tail)} lines (is the file truncated?)"
            )
        (head_no, head), (row_no, row_line) = tail
        summary_index = _at_line(
            head_no, _header_index, head, _SUMMARY_ALIASES, _REQUIRED_SUMMARY, "summary"
        )
        values = _at_line(row_no, _split_row, row_line, len(summary_index), "summary")
        summary = _summary_row(_Cells(values, summary_index, row_no))
        try:
            _check_summary(totals.summary(), summary)
        except BillMismatch as exc:
            raise BillMismatch(f"line {row_no} (summary): {exc}") from exc
        self.summary = summary


_R = TypeVar("_R")


def _at_line(number: int, parse: Callable[..., _R], *args: Any) -> _R:
    """``parse(*args)``, its MalformedBill naming line ``number``."""
    try:
        return parse(*args)
    except BillMismatch:
        raise
    except MalformedBill as exc:
        if str(exc).startswith("line "):
            raise
        raise MalformedBill(f"line {number}: {exc}") from exc


def parse_trade_bill(text: str) -> TradeBill:
    """Parse a downloaded trade bill (ALL, SUCCESS or REFUND; current or legacy header).

    ``text`` is the decoded file (UTF-8). CRLF or LF line ends; a leading BOM is
    ignored. The variant is recognised from the header. Raises
    ``MalformedBill``, or ``BillMismatch`` when the summary's count or any
    sum disagrees with the detail rows. (``TradeBillReader`` streams.)
    """
    reader = TradeBillReader(text.split("\n"))
    rows = tuple(row for _, _, row in reader.rows())
    assert reader.summary is not None
    assert reader.bill_type is not None
    return TradeBill(bill_type=reader.bill_type, rows=rows, summary=reader.summary)


def _render_value(value: str) -> str:
    if ",`" in value or "\r" in value or "\n" in value:
        raise ValueError(f"{value!r} cannot be written into a trade bill")
    return "`" + value


def _need_fen(value: int | None, column: str) -> str:
    if value is None:
        raise ValueError(f"this bill type needs {column} on every row")
    return fen_to_yuan(value)


def _row_values(row: TradeBillRow) -> dict[str, str]:
    def time_or_empty(value: datetime | None) -> str:
        return "" if value is None else format_beijing_time(value)

    return {
        "交易时间": format_beijing_time(row.trade_time),
        "公众账号ID": row.appid,
        "商户号": row.mchid,
        "特约商户号": row.sub_mchid or _NO_ID,
        "设备号": row.device_info,
        "微信订单号": row.transaction_id,
        "商户订单号": row.out_trade_no,
        "用户标识": row.openid,
        "交易类型": row.trade_type,
        "交易状态": row.trade_state.value,
        "付款银行": row.bank_type,
        "货币种类": row.currency,
        "应结订单金额": fen_to_yuan(row.settlement_total_fen),
        "代金券金额": fen_to_yuan(row.coupon_fen),
        "退款申请时间": time_or_empty(row.refund_requested_at),
        "退款成功时间": time_or_empty(row.refund_succeeded_at),
        "微信退款单号": row.refund_id or _NO_ID,
        "商户退款单号": row.out_refund_no or _NO_ID,
        "商品名称": row.description,
        "商户数据包": row.attach,
        "退款类型": row.refund_type or "",
        "退款状态": row.refund_status or "",
        "手续费": milli_fen_to_yuan(row.fee_milli_fen),
        "费率": row.fee_rate,
        "费率备注": row.fee_rate_remark or "",
    }


_ROW_AMOUNTS: Final = {
    "退款金额": "refund_fen",
    "充值券退款金额": "recharge_coupon_refund_fen",
    "订单金额": "order_amount_fen",
    "申请退款金额": "requested_refund_fen",
}


def _summary_values(summary: TradeBillSummary) -> dict[str, str]:
    values = {
        "总交易单数": str(summary.trade_count),
        "应结订单总金额": fen_to_yuan(summary.settlement_total_fen),
        "手续费总金额": milli_fen_to_yuan(summary.fee_total_milli_fen),
    }
    for column, value in (
        ("退款总金额", summary.refund_total_fen),
        ("充值券退款总金额", summary.recharge_coupon_refund_total_fen),
        ("订单总金额", summary.order_total_fen),
        ("申请退款总金额", summary.requested_refund_total_fen),
    ):
        if value is not None:
            values[column] = fen_to_yuan(value)
    return values


def render_trade_bill(
    rows: Sequence[TradeBillRow], bill_type: TradeBillType, *, line_end: str = "\r\n"
) -> str:
    """Write a trade bill in WeChat's current format (the sandbox's side).

    The summary row is computed from ``rows``, so the output always passes
    ``parse_trade_bill``'s cross-check. Raises ``ValueError`` for a row that
    lacks an amount the variant needs, a time with sub-second precision, or a
    value containing a line break or ``,```. The caller chooses which rows
    belong to ``bill_type``.
    """
    return "".join(trade_bill_lines(rows, bill_type, line_end=line_end))


def trade_bill_lines(
    rows: Iterable[TradeBillRow], bill_type: TradeBillType, *, line_end: str = "\r\n"
) -> Iterator[str]:
    """``render_trade_bill`` a line at a time (each with its line end), for a bill too
    big to hold: the summary is summed as the rows go by."""
    detail_header = _DETAIL_HEADERS[bill_type]
    summary_header = _SUMMARY_HEADERS[bill_type]
    yield ",".join(detail_header) + line_end
    totals = _RunningTotals()
    for row in rows:
        values = _row_values(row)
        for column, field in _ROW_AMOUNTS.items():
            if column in detail_header:
                values[column] = _need_fen(getattr(row, field), column)
        totals.add(row)
        yield ",".join(_render_value(values[column]) for column in detail_header) + line_end
    summary = _summary_values(totals.summary())
    yield ",".join(summary_header) + line_end
    yield ",".join(_render_value(summary[column]) for column in summary_header) + line_end


def bill_hash_ok(data: bytes, hash_value: str) -> bool:
    """Whether the (uncompressed) bill file matches the ``hash_value`` of the bill API.

    SHA1 because that is the ``hash_type`` WeChat returns; it guards against a
    truncated or corrupted download, not against forgery (the download URL
    comes from a signed API response over TLS).
    """
    digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    return hmac.compare_digest(digest, hash_value.strip().lower())
