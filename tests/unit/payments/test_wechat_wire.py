"""WeChat Pay API v3 wire format: signatures, AES-GCM, messages, trade bills."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from hypothesis import given
from hypothesis import strategies as st

from parking.payments.wire import NotificationRejected
from parking.payments.wire import wechat as wx

BEIJING = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
API_V3_KEY = b"0123456789abcdef0123456789ABCDEF"
PLATFORM_SERIAL = "PUB_KEY_ID_0114232134912410000000000000"
MCHID = "1230000109"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"


@dataclass(frozen=True)
class Keys:
    platform: RSAPrivateKey
    merchant: RSAPrivateKey
    stranger: RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    def make() -> RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(platform=make(), merchant=make(), stranger=make())


# The decrypted TRANSACTION.SUCCESS resource, in the shape of WeChat's
# documentation example (plus a field we do not model, which must be ignored).
TRANSACTION_PLAINTEXT = json.dumps(
    {
        "transaction_id": "1217752501201407033233368018",
        "amount": {"payer_total": 100, "total": 100, "currency": "CNY", "payer_currency": "CNY"},
        "mchid": MCHID,
        "trade_state": "SUCCESS",
        "bank_type": "CMC",
        "promotion_detail": [],
        "success_time": "2018-06-08T10:34:56+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "out_trade_no": "1217752501201407033233368018",
        "appid": "wxd678efh567hg6787",
        "trade_state_desc": "支付成功",
        "trade_type": "JSAPI",
        "attach": "自定义数据",
        "scene_info": {"device_id": "013467007045764"},
    },
    ensure_ascii=False,
).encode()

REFUND_PLAINTEXT = json.dumps(
    {
        "mchid": "1900000100",
        "transaction_id": "1008450740201411110005820873",
        "out_trade_no": "20150806125346",
        "refund_id": "50200207182018070300011301001",
        "out_refund_no": "7752501201407033233368018",
        "refund_status": "SUCCESS",
        "success_time": "2018-06-08T10:34:56+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 999, "refund": 999, "payer_total": 999, "payer_refund": 999},
    },
    ensure_ascii=False,
).encode()


def notification_body(plaintext: bytes = TRANSACTION_PLAINTEXT) -> bytes:
    resource = wx.encrypt_resource(
        plaintext, api_v3_key=API_V3_KEY, nonce="fdasflkja484", associated_data="transaction"
    )
    body = {
        "id": "EV-2018022511223320873",
        "create_time": "2015-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": {
            "original_type": resource.original_type,
            "algorithm": resource.algorithm,
            "ciphertext": resource.ciphertext,
            "associated_data": resource.associated_data,
            "nonce": resource.nonce,
        },
    }
    # Deliberately not compact: verification must use the bytes as received.
    return json.dumps(body, ensure_ascii=False, indent=2).encode()


@pytest.fixture(scope="module")
def signed(keys: Keys) -> tuple[dict[str, str], bytes]:
    body = notification_body()
    headers = wx.sign_notification(
        body, private_key=keys.platform, serial=PLATFORM_SERIAL, timestamp=TS, nonce="n0nce-1"
    )
    return headers, body


def verify(
    keys: Keys,
    headers: dict[str, str],
    body: bytes,
    *,
    now: datetime = NOW,
) -> None:
    wx.verify_notification(
        headers, body, public_keys={PLATFORM_SERIAL: keys.platform.public_key()}, now=now
    )


# --------------------------------------------------------------------------- notifications


def test_valid_notification_verifies_decrypts_and_decodes(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    verify(keys, headers, body)
    notification = wx.decode_notification(body)
    assert notification.event_type == wx.EventType.TRANSACTION_SUCCESS
    assert notification.create_time == datetime(2015, 5, 20, 5, 29, 35, tzinfo=UTC)
    transaction = wx.decode_transaction(wx.decrypt_resource(notification.resource, API_V3_KEY))
    assert transaction.trade_state is wx.TradeState.SUCCESS
    assert transaction.amount.total == 100
    assert transaction.amount.payer_total == 100
    assert transaction.mchid == MCHID
    assert transaction.payer == wx.Payer(openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    assert transaction.success_time == datetime(2018, 6, 8, 10, 34, 56, tzinfo=BEIJING)


def test_signed_headers_have_the_documented_names(signed: tuple[dict[str, str], bytes]) -> None:
    headers, _ = signed
    assert set(headers) == {
        "Wechatpay-Serial",
        "Wechatpay-Signature",
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature-Type",
    }
    assert headers["Wechatpay-Signature-Type"] == "WECHATPAY2-SHA256-RSA2048"


def test_signature_covers_timestamp_nonce_and_raw_body_lines(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    message = f"{TS}\nn0nce-1\n".encode() + body + b"\n"
    keys.platform.public_key().verify(
        base64.b64decode(headers["Wechatpay-Signature"]),
        message,
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_tampered_body_is_bad_signature(keys: Keys, signed: tuple[dict[str, str], bytes]) -> None:
    headers, body = signed
    with pytest.raises(wx.BadSignature):
        verify(keys, headers, body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.FAILED!"))


def test_reserialised_body_is_bad_signature(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    compact = json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":")).encode()
    with pytest.raises(wx.BadSignature):
        verify(keys, headers, compact)


def test_signature_by_another_key_is_bad_signature(keys: Keys) -> None:
    body = notification_body()
    headers = wx.sign_notification(
        body, private_key=keys.stranger, serial=PLATFORM_SERIAL, timestamp=TS, nonce="n"
    )
    with pytest.raises(wx.BadSignature):
        verify(keys, headers, body)


@pytest.mark.parametrize("signature", ["WECHATPAY/SIGNTEST/abc", "not base64!", "", "AAAA"])
def test_garbage_signature_is_rejected(
    keys: Keys, signed: tuple[dict[str, str], bytes], signature: str
) -> None:
    headers, body = signed
    with pytest.raises(NotificationRejected):
        verify(keys, {**headers, "Wechatpay-Signature": signature}, body)


def test_changed_nonce_or_timestamp_breaks_the_signature(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    with pytest.raises(wx.BadSignature):
        verify(keys, {**headers, "Wechatpay-Nonce": "other"}, body)
    with pytest.raises(wx.BadSignature):
        verify(keys, {**headers, "Wechatpay-Timestamp": str(TS - 1)}, body)


def test_unknown_serial_is_rejected(keys: Keys, signed: tuple[dict[str, str], bytes]) -> None:
    headers, body = signed
    with pytest.raises(wx.UnknownSerial):
        verify(keys, {**headers, "Wechatpay-Serial": "PUB_KEY_ID_SOMEONE_ELSE"}, body)


@pytest.mark.parametrize(
    "header",
    ["Wechatpay-Serial", "Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce"],
)
def test_missing_header_is_rejected(
    keys: Keys, signed: tuple[dict[str, str], bytes], header: str
) -> None:
    headers, body = signed
    without = {name: value for name, value in headers.items() if name != header}
    with pytest.raises(wx.MissingHeader, match=header):
        verify(keys, without, body)
    with pytest.raises(wx.MissingHeader):
        verify(keys, {**headers, header: "  "}, body)


def test_absent_signature_type_is_accepted(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    verify(keys, {k: v for k, v in headers.items() if k != "Wechatpay-Signature-Type"}, body)


def test_other_signature_type_is_rejected(keys: Keys, signed: tuple[dict[str, str], bytes]) -> None:
    headers, body = signed
    with pytest.raises(wx.BadSignature):
        verify(keys, {**headers, "Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"}, body)


@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase])
def test_header_lookup_ignores_case(
    keys: Keys, signed: tuple[dict[str, str], bytes], case: Callable[[str], str]
) -> None:
    headers, body = signed
    verify(keys, {case(name): value for name, value in headers.items()}, body)


def test_conflicting_duplicate_headers_are_rejected(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    with pytest.raises(wx.MalformedHeader):
        verify(keys, {**headers, "wechatpay-nonce": "another"}, body)


@pytest.mark.parametrize("timestamp", ["1714564800.0", "+1714564800", "1_714_564_800", "abc"])
def test_non_numeric_timestamp_is_malformed(
    keys: Keys, signed: tuple[dict[str, str], bytes], timestamp: str
) -> None:
    headers, body = signed
    with pytest.raises(wx.MalformedHeader):
        verify(keys, {**headers, "Wechatpay-Timestamp": timestamp}, body)


@pytest.mark.parametrize(
    ("age_seconds", "accepted"),
    [
        (0, True),
        (299, True),
        (299.999, True),
        (300, False),
        (301, False),
        (-299, True),  # our clock behind WeChat's
        (-300, False),
        (-86400, False),
    ],
)
def test_replay_window_is_strictly_under_300_seconds(
    keys: Keys, signed: tuple[dict[str, str], bytes], age_seconds: float, accepted: bool
) -> None:
    headers, body = signed
    now = NOW + timedelta(seconds=age_seconds)
    if accepted:
        verify(keys, headers, body, now=now)
    else:
        with pytest.raises(wx.StaleTimestamp):
            verify(keys, headers, body, now=now)


def test_stale_is_reported_only_for_a_valid_signature(
    keys: Keys, signed: tuple[dict[str, str], bytes]
) -> None:
    headers, body = signed
    with pytest.raises(wx.BadSignature):
        verify(keys, headers, body + b" ", now=NOW + timedelta(hours=1))


def test_absurd_future_timestamp_is_stale_not_a_crash(keys: Keys) -> None:
    body = notification_body()
    headers = wx.sign_notification(
        body, private_key=keys.platform, serial=PLATFORM_SERIAL, timestamp=999999999999, nonce="n"
    )
    with pytest.raises(wx.StaleTimestamp):
        verify(keys, headers, body)


def test_naive_now_is_a_programming_error(keys: Keys, signed: tuple[dict[str, str], bytes]) -> None:
    headers, body = signed
    with pytest.raises(ValueError, match="aware"):
        verify(keys, headers, body, now=datetime(2024, 5, 1, 12))


def test_rejections_share_one_base(keys: Keys, signed: tuple[dict[str, str], bytes]) -> None:
    for error in (wx.MissingHeader, wx.UnknownSerial, wx.BadSignature, wx.StaleTimestamp):
        assert issubclass(error, wx.NotificationRejected)


# --------------------------------------------------------------------------- AES-GCM


def test_resource_round_trips_through_aes_gcm() -> None:
    resource = wx.encrypt_resource(
        b"secret",
        api_v3_key=API_V3_KEY,
        nonce="abcdefghijkl",
        associated_data="refund",
        original_type="refund",
    )
    assert resource.algorithm == "AEAD_AES_256_GCM"
    assert resource.original_type == "refund"
    assert wx.decrypt_resource(resource, API_V3_KEY) == b"secret"


def tampered_ciphertext(ciphertext: str, position: int) -> str:
    raw = bytearray(base64.b64decode(ciphertext))
    raw[position] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("position", [0, -1, -16])
def test_tampered_ciphertext_or_tag_fails_to_decrypt(position: int) -> None:
    resource = wx.encrypt_resource(
        TRANSACTION_PLAINTEXT, api_v3_key=API_V3_KEY, nonce="abcdefghijkl", associated_data="x"
    )
    bad = wx.Resource(
        original_type=resource.original_type,
        algorithm=resource.algorithm,
        ciphertext=tampered_ciphertext(resource.ciphertext, position),
        associated_data=resource.associated_data,
        nonce=resource.nonce,
    )
    with pytest.raises(wx.DecryptionFailed):
        wx.decrypt_resource(bad, API_V3_KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"associated_data": "y"},
        {"nonce": "abcdefghijkm"},
        {"nonce": "short"},
        {"algorithm": "AEAD_SM4_GCM"},
        {"ciphertext": "***"},
    ],
)
def test_changed_resource_fields_fail_to_decrypt(change: dict[str, str]) -> None:
    resource = wx.encrypt_resource(
        b"payload", api_v3_key=API_V3_KEY, nonce="abcdefghijkl", associated_data="x"
    )
    fields = {
        "original_type": resource.original_type,
        "algorithm": resource.algorithm,
        "ciphertext": resource.ciphertext,
        "associated_data": resource.associated_data,
        "nonce": resource.nonce,
        **change,
    }
    with pytest.raises(wx.DecryptionFailed):
        wx.decrypt_resource(wx.Resource(**fields), API_V3_KEY)


def test_wrong_api_v3_key_fails_to_decrypt() -> None:
    resource = wx.encrypt_resource(
        b"payload", api_v3_key=API_V3_KEY, nonce="abcdefghijkl", associated_data=""
    )
    with pytest.raises(wx.DecryptionFailed):
        wx.decrypt_resource(resource, API_V3_KEY[::-1])


def test_key_and_nonce_sizes_are_enforced() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        wx.encrypt_resource(b"", api_v3_key=b"short", nonce="abcdefghijkl", associated_data="")
    with pytest.raises(ValueError, match="12"):
        wx.encrypt_resource(b"", api_v3_key=API_V3_KEY, nonce="abc", associated_data="")
    with pytest.raises(ValueError, match="12"):
        wx.encrypt_resource(
            b"", api_v3_key=API_V3_KEY, nonce="停车停车停车停车停车停车", associated_data=""
        )


# --------------------------------------------------------------------------- outgoing requests

_AUTH = re.compile(
    r'WECHATPAY2-SHA256-RSA2048 mchid="(?P<mchid>[^"]+)",nonce_str="(?P<nonce>[^"]+)",'
    r'signature="(?P<signature>[^"]+)",timestamp="(?P<timestamp>\d+)",serial_no="(?P<serial>[^"]+)"'
)
PATH = "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109"


def request_keys(keys: Keys) -> dict[tuple[str, str], rsa.RSAPublicKey]:
    return {(MCHID, MERCHANT_SERIAL): keys.merchant.public_key()}


def test_request_signature_matches_the_documented_header(keys: Keys) -> None:
    body = b'{"appid":"wxd678efh567hg6787"}'
    header = wx.sign_request(
        "post",
        "/v3/pay/transactions/jsapi",
        body,
        mchid=MCHID,
        serial_no=MERCHANT_SERIAL,
        private_key=keys.merchant,
        timestamp=1554208460,
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
    )
    match = _AUTH.fullmatch(header)
    assert match is not None
    assert match["mchid"] == MCHID
    assert match["serial"] == MERCHANT_SERIAL
    assert match["timestamp"] == "1554208460"
    message = (
        b"POST\n/v3/pay/transactions/jsapi\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n"
        + body
        + b"\n"
    )
    keys.merchant.public_key().verify(
        base64.b64decode(match["signature"]), message, padding.PKCS1v15(), hashes.SHA256()
    )


def signed_get(keys: Keys, *, timestamp: int = TS) -> str:
    return wx.sign_request(
        "GET",
        PATH,
        b"",
        mchid=MCHID,
        serial_no=MERCHANT_SERIAL,
        private_key=keys.merchant,
        timestamp=timestamp,
        nonce="abc123",
    )


def test_sandbox_accepts_a_signed_request(keys: Keys) -> None:
    auth = wx.verify_request_authorization(
        signed_get(keys),
        method="GET",
        path_with_query=PATH,
        body=b"",
        public_keys=request_keys(keys),
        now=NOW,
    )
    assert auth.mchid == MCHID
    assert auth.timestamp == TS


@pytest.mark.parametrize(
    ("method", "path", "body", "now"),
    [
        ("POST", PATH, b"", NOW),
        ("GET", PATH.replace("1230000109", "1230000110"), b"", NOW),
        ("GET", PATH, b"{}", NOW),
        ("GET", PATH, b"", NOW + timedelta(seconds=300)),
    ],
)
def test_sandbox_rejects_a_request_that_differs_from_what_was_signed(
    keys: Keys, method: str, path: str, body: bytes, now: datetime
) -> None:
    with pytest.raises(wx.AuthorizationRejected):
        wx.verify_request_authorization(
            signed_get(keys),
            method=method,
            path_with_query=path,
            body=body,
            public_keys=request_keys(keys),
            now=now,
        )


def test_sandbox_binds_a_key_to_its_merchant(keys: Keys) -> None:
    with pytest.raises(wx.AuthorizationRejected, match="no key"):
        wx.verify_request_authorization(
            signed_get(keys),
            method="GET",
            path_with_query=PATH,
            body=b"",
            public_keys={("1999999999", MERCHANT_SERIAL): keys.merchant.public_key()},
            now=NOW,
        )


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        'WECHATPAY2-SHA256-RSA2048 mchid="1"',
        'WECHATPAY2-SHA256-RSA2048 mchid="1",mchid="1",nonce_str="a",signature="s",'
        'timestamp="1",serial_no="x"',
        'WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="a",signature="s",'
        'timestamp="-1",serial_no="x"',
        "WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str=a,signature=s,timestamp=1,serial_no=x",
    ],
)
def test_sandbox_rejects_malformed_authorization(keys: Keys, header: str) -> None:
    with pytest.raises(wx.AuthorizationRejected):
        wx.verify_request_authorization(
            header,
            method="GET",
            path_with_query=PATH,
            body=b"",
            public_keys=request_keys(keys),
            now=NOW,
        )


@pytest.mark.parametrize("nonce", ['a"b', "a,b", "a b", "a\nb", ""])
def test_request_signing_refuses_values_that_break_the_header(keys: Keys, nonce: str) -> None:
    with pytest.raises(ValueError, match="nonce"):
        wx.sign_request(
            "GET",
            PATH,
            b"",
            mchid=MCHID,
            serial_no=MERCHANT_SERIAL,
            private_key=keys.merchant,
            timestamp=TS,
            nonce=nonce,
        )


# --------------------------------------------------------------------------- messages


def test_refund_resource_decodes() -> None:
    refund = wx.decode_refund(REFUND_PLAINTEXT)
    assert refund.refund_status is wx.RefundStatus.SUCCESS
    assert refund.amount == wx.RefundAmount(
        total=999, refund=999, payer_total=999, payer_refund=999
    )
    assert refund.out_refund_no == "7752501201407033233368018"


def test_parking_service_resource_decodes_with_its_own_states() -> None:
    payload = {
        "sp_mchid": "1230000109",
        "sub_mchid": "1900000109",
        "out_trade_no": "P20240501120000001",
        "transaction_id": "4200000001202405010000000001",
        "trade_state": "ACCEPTED",
        "trade_scene": "PARKING",
        "amount": {"total": 600, "currency": "CNY", "payer_total": 0, "discount_total": 0},
        "parking_info": {"plate_number": "粤B888888"},
    }
    transaction = wx.decode_transaction(json.dumps(payload, ensure_ascii=False).encode())
    assert transaction.trade_state is wx.TradeState.ACCEPTED
    assert transaction.trade_state in wx.PENDING_TRADE_STATES
    assert transaction.mchid is None
    assert transaction.sp_mchid == "1230000109"


def mutate(payload: bytes, **changes: object) -> bytes:
    document = json.loads(payload)
    for path, value in changes.items():
        target = document
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[]",
        mutate(TRANSACTION_PLAINTEXT, trade_state="PAID"),
        mutate(TRANSACTION_PLAINTEXT, out_trade_no=None),
        mutate(TRANSACTION_PLAINTEXT, amount__total=-1),
        mutate(TRANSACTION_PLAINTEXT, amount__total="100"),
        mutate(TRANSACTION_PLAINTEXT, success_time="2018-06-08T10:34:56"),
    ],
)
def test_undecodable_transaction_raises_message_format_error(bad: bytes) -> None:
    with pytest.raises(wx.MalformedMessage):
        wx.decode_transaction(bad)


def test_undecodable_notification_and_refund_raise_message_format_error() -> None:
    with pytest.raises(wx.MalformedMessage):
        wx.decode_notification(b'{"id": "x"}')
    with pytest.raises(wx.MalformedMessage):
        wx.decode_refund(mutate(REFUND_PLAINTEXT, refund_status="DONE"))


def test_provider_may_add_fields_to_notifications() -> None:
    body = mutate(notification_body(), new_top_level_field="x", resource__new_field=1)
    assert wx.decode_notification(body).id == "EV-2018022511223320873"


def test_encoded_messages_decode_back() -> None:
    transaction = wx.decode_transaction(TRANSACTION_PLAINTEXT)
    assert wx.decode_transaction(wx.encode_message(transaction)) == transaction
    encoded = json.loads(wx.encode_message(transaction))
    assert encoded["success_time"] == "2018-06-08T10:34:56+08:00"
    assert "user_repaid" not in encoded
    refund = wx.decode_refund(REFUND_PLAINTEXT)
    assert wx.decode_refund(wx.encode_message(refund)) == refund
    notification = wx.decode_notification(notification_body())
    assert wx.decode_notification(wx.encode_message(notification)) == notification


# --------------------------------------------------------------------------- trade bill

ALL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,"
    "退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)
# Verbatim from notes/provider-formats.md.
SAMPLE_ROW = (
    "`2022-03-21 13:51:31,`wxfdc955f7104ad557,`180023671,`176531292,`,"
    "`420000612032130748613220688,`2021WERUN1647840687637,`oZWaCKXip5njeEiloC4oeOV1TTsk,"
    "`JSAPI,`SUCCESS,`OTHERS,`CNY,`0.01,`0.00,`0,`0,`0.00,`0.00,`,`,`微信云托管支付测试,`,"
    "`0.00000,`0.90%,`0.01,`0.00,`"
)
REFUND_ROW = (
    "`2022-03-21 15:00:02,`wxfdc955f7104ad557,`180023671,`176531292,`,"
    "`420000612032130748613220688,`2021WERUN1647840687637,`oZWaCKXip5njeEiloC4oeOV1TTsk,"
    "`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300000012022032118463726601,`R2021WERUN1,"
    "`0.01,`0.00,`ORIGINAL,`SUCCESS,`微信云托管支付测试,`,`-0.00006,`0.90%,`0.00,`0.01,`"
)
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)
SAMPLE_BILL = "\r\n".join(
    [
        ALL_HEADER,
        SAMPLE_ROW,
        REFUND_ROW,
        SUMMARY_HEADER,
        "`2,`0.01,`0.01,`0.00,`-0.00006,`0.01,`0.01",
        "",
    ]
)


def test_documented_sample_row_parses() -> None:
    bill = wx.parse_trade_bill(SAMPLE_BILL)
    assert bill.bill_type is wx.TradeBillType.ALL
    payment, refund = bill.rows
    assert payment.trade_time == datetime(2022, 3, 21, 13, 51, 31, tzinfo=BEIJING)
    assert payment.trade_time.utcoffset() == timedelta(hours=8)
    assert payment.appid == "wxfdc955f7104ad557"
    assert payment.sub_mchid == "176531292"
    assert payment.device_info == ""
    assert payment.transaction_id == "420000612032130748613220688"
    assert payment.trade_state is wx.TradeState.SUCCESS
    assert payment.settlement_total_fen == 1
    assert payment.refund_id is None
    assert payment.out_refund_no is None
    assert payment.refund_type is None
    assert payment.fee_milli_fen == 0
    assert payment.fee_rate == "0.90%"
    assert payment.description == "微信云托管支付测试"
    assert payment.order_amount_fen == 1
    assert refund.refund_id == "50300000012022032118463726601"
    assert refund.refund_fen == 1
    assert refund.fee_milli_fen == -6
    assert bill.summary == wx.TradeBillSummary(
        trade_count=2,
        settlement_total_fen=1,
        fee_total_milli_fen=-6,
        refund_total_fen=1,
        recharge_coupon_refund_total_fen=0,
        order_total_fen=1,
        requested_refund_total_fen=1,
    )


def test_render_reproduces_the_sample_bill_byte_for_byte() -> None:
    bill = wx.parse_trade_bill(SAMPLE_BILL)
    assert wx.render_trade_bill(bill.rows, wx.TradeBillType.ALL) == SAMPLE_BILL


def test_lf_only_and_bom_are_tolerated() -> None:
    text = "\ufeff" + SAMPLE_BILL.replace("\r\n", "\n")
    assert wx.parse_trade_bill(text) == wx.parse_trade_bill(SAMPLE_BILL)


def reorder(bill: str, order: list[int]) -> str:
    """Permute the columns of every line of a bill's detail part."""
    lines = bill.rstrip("\r\n").split("\r\n")
    header = lines[0].split(",")
    out = [",".join(header[i] for i in order)]
    for row in lines[1:-2]:
        values = row[1:].split(",`")
        out.append(",".join("`" + values[i] for i in order))
    return "\r\n".join([*out, *lines[-2:]]) + "\r\n"


def test_columns_are_found_by_name_not_position() -> None:
    order = list(range(27))[::-1]
    assert wx.parse_trade_bill(reorder(SAMPLE_BILL, order)) == wx.parse_trade_bill(SAMPLE_BILL)


def test_unknown_extra_columns_are_ignored() -> None:
    lines = SAMPLE_BILL.split("\r\n")
    lines[0] += ",新增列"
    lines[1] += ",`x"
    lines[2] += ",`y"
    assert wx.parse_trade_bill("\r\n".join(lines)).rows == wx.parse_trade_bill(SAMPLE_BILL).rows


def test_legacy_header_names_are_understood() -> None:
    legacy_header = (
        "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
        "付款银行,货币种类,总金额,企业红包金额,微信退款单号,商户退款单号,退款金额,企业红包退款金额,"
        "退款类型,退款状态,商品名称,商户数据包,手续费,费率"
    )
    row = SAMPLE_ROW.rsplit(",`", 3)[0]  # without 订单金额, 申请退款金额, 费率备注
    summary = (
        "总交易单数,总交易额,总退款金额,总企业红包退款金额,手续费总金额\n"
        "`1,`0.01,`0.00,`0.00,`0.00000"
    )
    bill = wx.parse_trade_bill(f"{legacy_header}\n{row}\n{summary}\n")
    (parsed,) = bill.rows
    expected = wx.parse_trade_bill(SAMPLE_BILL).rows[0]
    assert parsed.settlement_total_fen == expected.settlement_total_fen == 1
    assert parsed.coupon_fen == 0
    assert parsed.sub_mchid == "176531292"
    assert parsed.order_amount_fen is None
    assert parsed.fee_rate_remark is None
    assert bill.summary.order_total_fen is None
    assert bill.summary.refund_total_fen == 0


SUCCESS_BILL = "\n".join(
    [
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
        "付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注",
        "`2022-03-21 13:51:31,`wx1,`180023671,`0,`,`4200001,`ORDER-1,`oUser,`NATIVE,`SUCCESS,"
        "`OTHERS,`CNY,`12.30,`0.00,`停车费,`lot=7,`0.07380,`0.60%,`12.30,`",
        "总交易单数,应结订单总金额,手续费总金额,订单总金额",
        "`1,`12.30,`0.07380,`12.30",
    ]
)


def test_success_bill_has_no_refund_columns() -> None:
    bill = wx.parse_trade_bill(SUCCESS_BILL)
    assert bill.bill_type is wx.TradeBillType.SUCCESS
    (row,) = bill.rows
    assert row.sub_mchid is None  # `0 for an ordinary merchant
    assert row.settlement_total_fen == 1230
    assert row.fee_milli_fen == 7380
    assert row.refund_fen is None
    assert bill.summary.refund_total_fen is None
    assert wx.render_trade_bill(bill.rows, bill.bill_type, line_end="\n") == SUCCESS_BILL + "\n"


def test_refund_bill_reads_request_and_success_times() -> None:
    header = ALL_HEADER.replace("代金券金额,", "代金券金额,退款申请时间,退款成功时间,")
    row = REFUND_ROW.replace(
        ",`0.00,`0.00,`503", ",`0.00,`0.00,`2022-03-21 15:00:02,`2022-03-21 15:00:09,`503"
    )
    text = f"{header}\n{row}\n{SUMMARY_HEADER}\n`1,`0.00,`0.01,`0.00,`-0.00006,`0.00,`0.01\n"
    bill = wx.parse_trade_bill(text)
    assert bill.bill_type is wx.TradeBillType.REFUND
    (refund,) = bill.rows
    assert refund.refund_requested_at == datetime(2022, 3, 21, 15, 0, 2, tzinfo=BEIJING)
    assert refund.refund_succeeded_at == datetime(2022, 3, 21, 15, 0, 9, tzinfo=BEIJING)
    assert wx.render_trade_bill(bill.rows, bill.bill_type, line_end="\n") == text


def test_commas_inside_a_value_survive() -> None:
    text = SAMPLE_BILL.replace("微信云托管支付测试", "停车费,3小时")
    assert wx.parse_trade_bill(text).rows[0].description == "停车费,3小时"


@pytest.mark.parametrize(
    ("summary", "field"),
    [
        ("`3,`0.01,`0.01,`0.00,`-0.00006,`0.01,`0.01", "trade_count"),
        ("`2,`0.02,`0.01,`0.00,`-0.00006,`0.01,`0.01", "settlement_total_fen"),
        ("`2,`0.01,`0.00,`0.00,`-0.00006,`0.01,`0.01", "refund_total_fen"),
        ("`2,`0.01,`0.01,`0.00,`0.00000,`0.01,`0.01", "fee_total_milli_fen"),
        ("`2,`0.01,`0.01,`0.00,`-0.00006,`0.02,`0.01", "order_total_fen"),
    ],
)
def test_summary_mismatch_is_detected(summary: str, field: str) -> None:
    text = SAMPLE_BILL.replace("`2,`0.01,`0.01,`0.00,`-0.00006,`0.01,`0.01", summary)
    with pytest.raises(wx.BillMismatch, match=field):
        wx.parse_trade_bill(text)


def test_dropped_row_is_a_mismatch() -> None:
    with pytest.raises(wx.BillMismatch, match="trade_count"):
        wx.parse_trade_bill(SAMPLE_BILL.replace(REFUND_ROW + "\r\n", ""))


@pytest.mark.parametrize(
    "broken",
    [
        "",
        SAMPLE_BILL.replace("`0.00000,", "`0.000001,", 1),  # 6 decimals
        SAMPLE_BILL.replace("`0.01,`0.00,`0,", "`1.001,`0.00,`0,", 1),  # 3 decimals
        SAMPLE_BILL.replace("`2022-03-21 13:51:31", "`2022/03/21 13:51:31"),
        SAMPLE_BILL.replace("`JSAPI,`SUCCESS", "`JSAPI,`PAID", 1),
        SAMPLE_BILL.replace(",`0.90%,`0.01,`0.00,`", ",`0.90%,`0.01,`0.00", 1),  # a value short
        SAMPLE_BILL.replace("交易时间,", "", 1),
        SAMPLE_BILL.replace("商户订单号", "商户号", 1),  # a repeated column
        SAMPLE_BILL + "trailing junk\r\n",
        SAMPLE_BILL.replace("`2,`0.01", "`two,`0.01"),
        SAMPLE_BILL.replace(SUMMARY_HEADER + "\r\n", ""),
    ],
)
def test_malformed_bill_raises_bill_format_error(broken: str) -> None:
    with pytest.raises(wx.MalformedBill):
        wx.parse_trade_bill(broken)


def test_render_refuses_unwritable_values() -> None:
    row = wx.parse_trade_bill(SAMPLE_BILL).rows[0]
    with pytest.raises(ValueError, match="cannot be written"):
        wx.render_trade_bill([msgspec_replace(row, description="a,`b")], wx.TradeBillType.ALL)
    with pytest.raises(ValueError, match="sub-second"):
        wx.render_trade_bill(
            [msgspec_replace(row, trade_time=row.trade_time.replace(microsecond=5))],
            wx.TradeBillType.ALL,
        )
    with pytest.raises(ValueError, match="申请退款金额"):
        wx.render_trade_bill(
            [msgspec_replace(row, requested_refund_fen=None)], wx.TradeBillType.ALL
        )


def msgspec_replace(row: wx.TradeBillRow, **changes: object) -> wx.TradeBillRow:
    return msgspec.structs.replace(row, **changes)


def test_bill_hash_checks_sha1_of_the_file() -> None:
    data = SAMPLE_BILL.encode()
    digest = hashlib.sha1(data).hexdigest()
    assert wx.bill_hash_ok(data, digest)
    assert wx.bill_hash_ok(data, digest.upper())
    assert not wx.bill_hash_ok(data[:-1], digest)
    assert not wx.bill_hash_ok(data, "")


# --------------------------------------------------------------------------- bill round trip

# A small alphabet that still holds every character the format treats
# specially (comma, backtick, quote, tab, space) plus CJK and astral text.
_text = st.text(alphabet="aZ09 ,`\"'\t%.-_停车费粤🚗", max_size=8).filter(
    lambda value: ",`" not in value
)
_id = _text.filter(lambda value: value not in ("", "0"))
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(BEIJING)
).map(lambda moment: moment.replace(microsecond=0))
_fen = st.integers(min_value=-(10**12), max_value=10**12)


@st.composite
def bill_rows(draw: st.DrawFn, bill_type: wx.TradeBillType) -> wx.TradeBillRow:
    with_refunds = bill_type is not wx.TradeBillType.SUCCESS
    refund_only = bill_type is wx.TradeBillType.REFUND

    def maybe(strategy: st.SearchStrategy[object], present: bool) -> object:
        return draw(strategy) if present else None

    return wx.TradeBillRow(
        trade_time=draw(_times),
        appid=draw(_text),
        mchid=draw(_text),
        sub_mchid=draw(st.none() | _id),
        device_info=draw(_text),
        transaction_id=draw(_text),
        out_trade_no=draw(_text),
        openid=draw(_text),
        trade_type=draw(_text),
        trade_state=draw(st.sampled_from(wx.TradeState)),
        bank_type=draw(_text),
        currency=draw(_text),
        settlement_total_fen=draw(_fen),
        coupon_fen=draw(_fen),
        description=draw(_text),
        attach=draw(_text),
        fee_milli_fen=draw(_fen),
        fee_rate=draw(_text),
        refund_requested_at=maybe(st.none() | _times, refund_only),  # type: ignore[arg-type]
        refund_succeeded_at=maybe(st.none() | _times, refund_only),  # type: ignore[arg-type]
        refund_id=maybe(st.none() | _id, with_refunds),  # type: ignore[arg-type]
        out_refund_no=maybe(st.none() | _id, with_refunds),  # type: ignore[arg-type]
        refund_fen=maybe(_fen, with_refunds),  # type: ignore[arg-type]
        recharge_coupon_refund_fen=maybe(_fen, with_refunds),  # type: ignore[arg-type]
        refund_type=maybe(st.none() | _id, with_refunds),  # type: ignore[arg-type]
        refund_status=maybe(st.none() | _id, with_refunds),  # type: ignore[arg-type]
        order_amount_fen=draw(_fen),
        requested_refund_fen=maybe(_fen, with_refunds),  # type: ignore[arg-type]
        fee_rate_remark=draw(_text),
    )


@st.composite
def bills(draw: st.DrawFn) -> tuple[wx.TradeBillType, list[wx.TradeBillRow]]:
    bill_type = draw(st.sampled_from(wx.TradeBillType))
    return bill_type, draw(st.lists(bill_rows(bill_type), max_size=5))


@given(bills(), st.sampled_from(["\r\n", "\n"]))
def test_rendered_bills_parse_back_to_the_same_rows(
    bill: tuple[wx.TradeBillType, list[wx.TradeBillRow]], line_end: str
) -> None:
    bill_type, rows = bill
    text = wx.render_trade_bill(rows, bill_type, line_end=line_end)
    parsed = wx.parse_trade_bill(text)
    assert parsed.bill_type is bill_type
    assert list(parsed.rows) == rows
    assert parsed.summary.trade_count == len(rows)
    assert wx.render_trade_bill(parsed.rows, bill_type, line_end=line_end) == text
