"""Alipay wire format: RSA2 notifications and the trade bill zip."""

from __future__ import annotations

import base64
import csv
import io
import urllib.parse
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from hypothesis import given
from hypothesis import strategies as st

from parking.payments.wire import alipay as ali

BEIJING = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Keys:
    alipay: RSAPrivateKey
    stranger: RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    def make() -> RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    return Keys(alipay=make(), stranger=make())


# A trade_status_sync notification in the shape of Alipay's documentation.
PAYMENT_FORM = {
    "gmt_create": "2024-05-01 08:30:00",
    "charset": "utf-8",
    "gmt_payment": "2024-05-01 08:30:05",
    "notify_time": "2024-05-01 08:30:06",
    "subject": "停车费 粤B12345",
    "buyer_id": "2088102169940354",
    "invoice_amount": "12.00",
    "version": "1.0",
    "notify_id": "ac05099524730693a8b330c5ecf72da9786",
    "fund_bill_list": '[{"amount":"12.00","fundChannel":"ALIPAYACCOUNT"}]',
    "notify_type": "trade_status_sync",
    "out_trade_no": "CB20240501083000001",
    "total_amount": "12.00",
    "trade_status": "TRADE_SUCCESS",
    "trade_no": "2024050122001412341234567890",
    "auth_app_id": "2021000100000001",
    "receipt_amount": "12.00",
    "point_amount": "0.00",
    "app_id": "2021000100000001",
    "buyer_pay_amount": "12.00",
    "seller_id": "2088102169481075",
}


def signed(form: dict[str, str], key: RSAPrivateKey) -> dict[str, str]:
    return {**form, "sign_type": "RSA2", "sign": ali.sign_params(form, key)}


def verify(keys: Keys, form: dict[str, str]) -> ali.AlipayNotice:
    return ali.verify_notification(form, alipay_public_key=keys.alipay.public_key())


def test_valid_notification_verifies_and_converts_amounts(keys: Keys) -> None:
    notice = verify(keys, signed(PAYMENT_FORM, keys.alipay))
    assert notice.is_paid
    assert not notice.is_refund
    assert notice.trade_status is ali.TradeStatus.TRADE_SUCCESS
    assert notice.total_amount_fen == 1200
    assert notice.receipt_amount_fen == 1200
    assert notice.point_amount_fen == 0
    assert notice.notify_id == "ac05099524730693a8b330c5ecf72da9786"
    assert notice.gmt_payment == datetime(2024, 5, 1, 0, 30, 5, tzinfo=UTC)
    assert notice.seller_id == "2088102169481075"


def test_signed_content_is_sorted_pairs_without_sign_and_sign_type(keys: Keys) -> None:
    form = signed(PAYMENT_FORM, keys.alipay)
    content = "&".join(f"{key}={PAYMENT_FORM[key]}" for key in sorted(PAYMENT_FORM))
    assert content.startswith("app_id=2021000100000001&auth_app_id=")
    keys.alipay.public_key().verify(
        base64.b64decode(form["sign"]), content.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_form_as_posted_verifies_after_url_decoding(keys: Keys) -> None:
    form = signed({**PAYMENT_FORM, "body": "a=b&c d+e%"}, keys.alipay)
    posted = urllib.parse.urlencode(form)
    assert "%E5%81%9C" in posted  # 停 travels percent-encoded
    received = dict(urllib.parse.parse_qsl(posted, keep_blank_values=True))
    assert verify(keys, received).body == "a=b&c d+e%"


def test_gbk_charset_is_signed_over_gbk_bytes(keys: Keys) -> None:
    form = {**PAYMENT_FORM, "charset": "GBK"}
    notice = verify(keys, signed(form, keys.alipay))
    assert notice.subject == "停车费 粤B12345"
    utf8_signature = ali.sign_params({**form, "charset": "utf-8"}, keys.alipay)
    with pytest.raises(ali.BadSignature):
        verify(keys, {**form, "sign_type": "RSA2", "sign": utf8_signature})


@pytest.mark.parametrize(
    "change",
    [
        {"total_amount": "0.01"},
        {"trade_status": "TRADE_FINISHED"},
        {"out_trade_no": "CB20240501083000002"},
        {"extra": "added after signing"},
    ],
)
def test_tampered_form_is_bad_signature(keys: Keys, change: dict[str, str]) -> None:
    with pytest.raises(ali.BadSignature):
        verify(keys, {**signed(PAYMENT_FORM, keys.alipay), **change})


def test_sign_type_is_not_signed_but_must_be_rsa2(keys: Keys) -> None:
    form = signed(PAYMENT_FORM, keys.alipay)
    del form["sign_type"]
    assert verify(keys, form).is_paid  # absent sign_type: RSA2 is the only one accepted
    with pytest.raises(ali.BadSignature, match="sign_type"):
        verify(keys, {**form, "sign_type": "RSA"})


@pytest.mark.parametrize("sign", [None, "", "not base64!", "AAAA"])
def test_missing_or_garbage_sign_is_bad_signature(keys: Keys, sign: str | None) -> None:
    form = dict(PAYMENT_FORM, sign_type="RSA2")
    if sign is not None:
        form["sign"] = sign
    with pytest.raises(ali.BadSignature):
        verify(keys, form)


def test_signature_by_another_key_is_bad_signature(keys: Keys) -> None:
    with pytest.raises(ali.BadSignature):
        verify(keys, signed(PAYMENT_FORM, keys.stranger))


def test_unsupported_charset_is_bad_signature(keys: Keys) -> None:
    form = signed(PAYMENT_FORM, keys.alipay)
    with pytest.raises(ali.BadSignature):
        verify(keys, {**form, "charset": "big5"})


@pytest.mark.parametrize(
    ("status", "paid"),
    [
        ("WAIT_BUYER_PAY", False),
        ("TRADE_CLOSED", False),
        ("TRADE_SUCCESS", True),
        ("TRADE_FINISHED", True),
    ],
)
def test_only_success_and_finished_are_paid(keys: Keys, status: str, paid: bool) -> None:
    notice = verify(keys, signed({**PAYMENT_FORM, "trade_status": status}, keys.alipay))
    assert notice.is_paid is paid


def test_partial_refund_notice_is_marked_as_refund(keys: Keys) -> None:
    form = {
        **PAYMENT_FORM,
        "out_biz_no": "RF20240501001",
        "refund_fee": "2.00",
        "gmt_refund": "2024-05-01 18:00:00.320",
    }
    notice = verify(keys, signed(form, keys.alipay))
    assert notice.is_refund
    assert notice.is_paid  # still TRADE_SUCCESS: route refunds first
    assert notice.refund_fee_fen == 200
    assert notice.gmt_refund == datetime(2024, 5, 1, 18, 0, 0, 320000, tzinfo=BEIJING)


@pytest.mark.parametrize(
    "change",
    [
        {"trade_status": "PAID"},
        {"total_amount": "12.001"},
        {"total_amount": ""},
        {"notify_time": "2024/05/01 08:30:06"},
    ],
)
def test_signed_but_undecodable_form_is_message_format_error(
    keys: Keys, change: dict[str, str]
) -> None:
    form = {**PAYMENT_FORM, **change}
    with pytest.raises(ali.MalformedMessage):
        verify(keys, signed(form, keys.alipay))


def test_encoded_notice_signs_and_verifies_back(keys: Keys) -> None:
    notice = verify(keys, signed(PAYMENT_FORM, keys.alipay))
    form = ali.encode_notice(notice)
    assert form["total_amount"] == "12.00"
    assert form["notify_time"] == "2024-05-01 08:30:06"
    assert verify(keys, signed(form, keys.alipay)) == notice


def test_request_signing_includes_sign_type_and_skips_empty_values(keys: Keys) -> None:
    params = {
        "app_id": "2021000100000001",
        "method": "alipay.data.dataservice.bill.downloadurl.query",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "timestamp": "2024-05-02 10:30:00",
        "version": "1.0",
        "app_auth_token": "",
        "biz_content": '{"bill_type":"trade","bill_date":"2024-05-01"}',
    }
    content = (
        'app_id=2021000100000001&biz_content={"bill_type":"trade","bill_date":"2024-05-01"}'
        "&charset=utf-8&method=alipay.data.dataservice.bill.downloadurl.query"
        "&sign_type=RSA2&timestamp=2024-05-02 10:30:00&version=1.0"
    )
    keys.alipay.public_key().verify(
        base64.b64decode(ali.sign_request(params, keys.alipay)),
        content.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_success_reply_is_exactly_seven_bytes() -> None:
    assert ali.SUCCESS_REPLY == b"success"
    assert len(ali.SUCCESS_REPLY) == 7


# --------------------------------------------------------------------------- bill

ACCOUNT = "20881234567890120156"
HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,"
    "对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
    "退款批次号/请求号,服务费（元）,分润（元）,备注"
)
PAYMENT_ROW = (
    "2024050122001412341234567890\t,CB20240501083000001\t,交易,停车费 粤B12345,"
    "2024-05-01 08:30:00,2024-05-01 08:30:05,,,,,abc***@163.com,12.00,12.00,0.00,0.00,0.00,"
    "0.00,0.00,,0.00,0.00,,-0.07,0.00,"
)
REFUND_ROW = (
    "2024050122001412341234567890\t,CB20240501083000001\t,退款,停车费 粤B12345,"
    "2024-05-01 08:30:00,2024-05-01 18:00:00,,,,,abc***@163.com,-2.00,-2.00,0.00,0.00,0.00,"
    "0.00,0.00,,0.00,0.00,RF20240501001\t,0.01,0.00,"
)
TRADE_FOOTER = "#交易合计：1笔，商家实收共12.00元，商家优惠共0.00元"
REFUND_FOOTER = "#退款合计：1笔，商家实收共-2.00元，商家优惠共0.00元"


def detail_text(
    rows: list[str] | None = None, *, header: str = HEADER, footer: list[str] | None = None
) -> str:
    lines = [
        "#支付宝业务明细查询",
        f"#账号：[{ACCOUNT}]",
        "#起始日期：[2024年05月01日 00:00:00]   终止日期：[2024年05月02日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        header,
        *(rows if rows is not None else [PAYMENT_ROW, REFUND_ROW]),
        "#-----------------------------------------业务明细列表结束------------------------------------",
        *(footer if footer is not None else [TRADE_FOOTER, REFUND_FOOTER]),
        "#导出时间：[2024年05月02日 09:12:45]",
    ]
    return "\r\n".join(lines) + "\r\n"


def alipay_zip(detail: str, *, summary: str = "#支付宝业务汇总查询\r\n") -> bytes:
    """A zip as Alipay serves it: GBK content and GBK member names without the UTF-8 flag.

    zipfile always writes non-ASCII names as UTF-8, so the names are written as
    same-length ASCII placeholders and patched to GBK bytes afterwards.
    """
    names = {
        b"D" * 8: "业务明细".encode("gbk"),
        b"S" * 14: "业务明细(汇总)".encode("gbk"),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{ACCOUNT}_20240501_{'D' * 8}.csv", detail.encode("gbk"))
        archive.writestr(f"{ACCOUNT}_20240501_{'S' * 14}.csv", summary.encode("gbk"))
    data = buffer.getvalue()
    for placeholder, gbk in names.items():
        assert data.count(placeholder) == 2  # local header + central directory
        data = data.replace(placeholder, gbk)
    return data


def test_documented_shape_bill_parses() -> None:
    bill = ali.parse_bill_zip(alipay_zip(detail_text()))
    assert bill.detail_file_name == f"{ACCOUNT}_20240501_业务明细.csv"
    assert bill.account == ACCOUNT
    assert bill.period_start == datetime(2024, 5, 1, tzinfo=BEIJING)
    assert bill.period_end == datetime(2024, 5, 2, tzinfo=BEIJING)
    payment, refund = bill.rows
    assert payment.trade_no == "2024050122001412341234567890"  # trailing tab stripped
    assert payment.out_trade_no == "CB20240501083000001"
    assert payment.business_type is ali.BusinessType.TRADE
    assert payment.subject == "停车费 粤B12345"
    assert payment.created_at == datetime(2024, 5, 1, 8, 30, tzinfo=BEIJING)
    assert payment.finished_at == datetime(2024, 5, 1, 8, 30, 5, tzinfo=BEIJING)
    assert payment.order_amount_fen == 1200
    assert payment.merchant_received_fen == 1200
    assert payment.service_fee_fen == -7
    assert payment.refund_request_no is None
    assert refund.business_type is ali.BusinessType.REFUND
    assert refund.trade_no == payment.trade_no
    assert refund.merchant_received_fen == -200
    assert refund.order_amount_fen == -200
    assert refund.refund_request_no == "RF20240501001"
    assert bill.trade_totals == ali.AlipayBillTotals(count=1, merchant_received_fen=1200)
    assert bill.refund_totals == ali.AlipayBillTotals(count=1, merchant_received_fen=-200)


def test_columns_are_found_by_name_not_position() -> None:
    table = list(csv.reader([HEADER, PAYMENT_ROW, REFUND_ROW]))
    order = list(range(len(table[0])))[::-1]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[r[i] for i in order] for r in table])
    header, *rows = out.getvalue().rstrip("\n").split("\n")
    reordered = ali.parse_bill_zip(alipay_zip(detail_text(rows, header=header)))
    assert reordered.rows == ali.parse_bill_zip(alipay_zip(detail_text())).rows


def test_half_width_parentheses_in_header_are_accepted() -> None:
    header = HEADER.replace("（", "(").replace("）", ")")
    bill = ali.parse_bill_zip(alipay_zip(detail_text(header=header)))
    assert bill.rows[0].merchant_received_fen == 1200


def test_utf8_flagged_member_names_are_read_too() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{ACCOUNT}_20240501_业务明细(汇总).csv", b"#x\r\n")
        archive.writestr(f"{ACCOUNT}_20240501_业务明细.csv", detail_text().encode("gbk"))
    assert len(ali.parse_bill_zip(buffer.getvalue()).rows) == 2


@pytest.mark.parametrize(
    ("footer", "match"),
    [
        (["#交易合计：2笔，商家实收共12.00元", REFUND_FOOTER], "交易"),
        (["#交易合计：1笔，商家实收共12.01元", REFUND_FOOTER], "交易"),
        ([TRADE_FOOTER, "#退款合计：1笔，商家实收共-2.01元"], "退款"),
        ([TRADE_FOOTER, "#退款合计：0笔，商家实收共0.00元"], "退款"),
        ([TRADE_FOOTER], "退款"),  # refund rows but no refund footer
    ],
)
def test_footer_mismatch_is_detected(footer: list[str], match: str) -> None:
    with pytest.raises(ali.BillMismatch, match=match):
        ali.parse_bill_zip(alipay_zip(detail_text(footer=footer)))


def test_dropped_row_is_a_mismatch() -> None:
    with pytest.raises(ali.BillMismatch):
        ali.parse_bill_zip(alipay_zip(detail_text([PAYMENT_ROW])))


def test_refund_footer_may_be_absent_when_there_are_no_refunds() -> None:
    bill = ali.parse_bill_zip(alipay_zip(detail_text([PAYMENT_ROW], footer=[TRADE_FOOTER])))
    assert bill.refund_totals is None


def test_missing_trade_footer_is_a_format_error() -> None:
    with pytest.raises(ali.MalformedBill, match="交易合计"):
        ali.parse_bill_zip(alipay_zip(detail_text(footer=[REFUND_FOOTER])))


@pytest.mark.parametrize(
    "data",
    [
        b"not a zip",
        b"",
        alipay_zip(detail_text([PAYMENT_ROW.replace(",12.00,12.00,", ",12.00,12.001,")])),
        alipay_zip(detail_text([PAYMENT_ROW.replace(",交易,", ",冻结,")])),
        alipay_zip(detail_text([PAYMENT_ROW.replace("2024-05-01 08:30:00", "2024-5-1 8:30")])),
        alipay_zip(detail_text([PAYMENT_ROW + ",extra cell"])),
        alipay_zip(detail_text(header=HEADER.replace("商家实收（元）", "实收"))),
        alipay_zip(detail_text(header=HEADER.replace("门店编号", "门店名称"))),
        alipay_zip(detail_text([PAYMENT_ROW.replace("停车费", '"停车费')])),
    ],
)
def test_malformed_bill_raises_bill_format_error(data: bytes) -> None:
    with pytest.raises(ali.MalformedBill):
        ali.parse_bill_zip(data)


def test_zip_without_a_detail_file_is_a_format_error() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x_业务明细(汇总).csv", b"")
    with pytest.raises(ali.MalformedBill, match="detail file"):
        ali.parse_bill_zip(buffer.getvalue())


def test_non_gbk_detail_file_is_a_format_error() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x_业务明细.csv", b"\xff\xfe\xff")
    with pytest.raises(ali.MalformedBill, match="GBK"):
        ali.parse_bill_zip(buffer.getvalue())


def test_rendered_bill_is_gbk_with_tab_suffixed_ids_and_deterministic() -> None:
    rows = ali.parse_bill_zip(alipay_zip(detail_text())).rows
    exported = datetime(2024, 5, 2, 9, 12, 45, tzinfo=BEIJING)
    data = ali.render_bill_zip(
        rows, account=ACCOUNT, bill_date=date(2024, 5, 1), exported_at=exported
    )
    assert data == ali.render_bill_zip(
        rows, account=ACCOUNT, bill_date=date(2024, 5, 1), exported_at=exported
    )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        detail = archive.read(f"{ACCOUNT}_20240501_业务明细.csv").decode("gbk")
    assert f"{ACCOUNT}_20240501_业务明细(汇总).csv" in names
    assert detail == detail_text()
    bill = ali.parse_bill_zip(data)
    assert bill.rows == rows
    assert bill.period_start == datetime(2024, 5, 1, tzinfo=BEIJING)


def test_render_refuses_rows_that_would_read_back_differently() -> None:
    row = ali.parse_bill_zip(alipay_zip(detail_text())).rows[0]
    exported = datetime(2024, 5, 2, 9, tzinfo=BEIJING)
    for bad in (
        msgspec.structs.replace(row, trade_no="#2024"),
        msgspec.structs.replace(row, remark="two\nlines"),
        msgspec.structs.replace(row, subject="ends in tab\t"),
    ):
        with pytest.raises(ValueError, match="cannot be written"):
            ali.render_bill_zip(
                [bad], account=ACCOUNT, bill_date=date(2024, 5, 1), exported_at=exported
            )


# --------------------------------------------------------------------------- round trip

# GBK-encodable, and holding what CSV treats specially: comma, quote, space, tab.
_text = st.text(alphabet="aZ09 ,\"'#\t-_/：停车费粤（）", max_size=8).filter(
    lambda value: not value.endswith("\t")
)
_id = _text.filter(lambda value: value != "" and not value.startswith("#"))
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(BEIJING)
).map(lambda moment: moment.replace(microsecond=0))
_fen = st.integers(min_value=-(10**10), max_value=10**10)

bill_rows = st.builds(
    ali.AlipayBillRow,
    trade_no=_id,
    out_trade_no=_id,
    business_type=st.sampled_from(ali.BusinessType),
    subject=_text,
    created_at=_times,
    finished_at=st.none() | _times,
    store_id=_text,
    store_name=_text,
    operator=_text,
    terminal_id=_text,
    counterparty=_text,
    order_amount_fen=_fen,
    merchant_received_fen=_fen,
    alipay_red_packet_fen=_fen,
    jifenbao_fen=_fen,
    alipay_discount_fen=_fen,
    merchant_discount_fen=_fen,
    voucher_fen=_fen,
    voucher_name=_text,
    merchant_red_packet_fen=_fen,
    card_fen=_fen,
    refund_request_no=st.none() | _id,
    service_fee_fen=_fen,
    profit_share_fen=_fen,
    remark=_text,
)


@given(
    st.lists(bill_rows, max_size=5),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
)
def test_rendered_bill_zips_parse_back_to_the_same_rows(
    rows: list[ali.AlipayBillRow], bill_date: date
) -> None:
    exported = datetime(2024, 5, 2, 9, tzinfo=BEIJING)
    data = ali.render_bill_zip(rows, account=ACCOUNT, bill_date=bill_date, exported_at=exported)
    bill = ali.parse_bill_zip(data)
    assert list(bill.rows) == rows
    assert bill.account == ACCOUNT
    assert bill.trade_totals.count == sum(r.business_type is ali.BusinessType.TRADE for r in rows)
