"""Alipay on the wire: RSA2 signatures, async notifications, the trade bill zip.

Kept whole (over 600 lines): one provider's wire format, read beside its spec and
the bill notes.

Pure: callers pass the form they received, the keys they loaded and the bytes
they downloaded. The sandbox provider uses the signing/rendering halves, the
adapters and the payment flow the verifying/parsing halves.

Facts are from notes/provider-formats.md (official docs and SDKs).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final, TypeVar

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from parking.payments.wire import (
    BEIJING,
    BadSignature,
    BillMismatch,
    MalformedBill,
    MalformedMessage,
    NotificationRejected,
    format_beijing_time,
    parse_beijing_time,
)
from parking.payments.wire.money import MalformedAmount, fen_to_yuan, yuan_to_fen

__all__ = [
    "MAX_DETAIL_BYTES",
    "PAID_STATUSES",
    "SIGN_TYPE",
    "SUCCESS_REPLY",
    "AlipayBill",
    "AlipayBillRow",
    "AlipayBillTotals",
    "AlipayNotice",
    "BadSignature",
    "BillMismatch",
    "BusinessType",
    "MalformedBill",
    "MalformedMessage",
    "NotificationRejected",
    "TradeStatus",
    "encode_notice",
    "parse_bill_zip",
    "render_bill_zip",
    "sign_params",
    "sign_request",
    "verify_notification",
]

#: The whole reply body that stops Alipay re-sending: 7 bytes, nothing else
#: (no newline, no JSON, no BOM).
SUCCESS_REPLY: Final = b"success"
SIGN_TYPE: Final = "RSA2"

# --------------------------------------------------------------------------- signatures

_UNSIGNED_IN_NOTIFICATIONS = frozenset({"sign", "sign_type"})
_CHARSETS: Final = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gbk"}


def _content(params: Mapping[str, str], *, drop: frozenset[str], skip_empty: bool) -> str:
    # Sorted by key in code-point order, which is ASCII order for Alipay's
    # ASCII parameter names.
    return "&".join(
        f"{key}={params[key]}"
        for key in sorted(params)
        if key not in drop and not (skip_empty and params[key] == "")
    )


def _charset(params: Mapping[str, str]) -> str:
    # The signed bytes are the content in the message's own charset, which
    # the merchant may have configured as GBK.
    declared = params.get("charset", "utf-8").strip().lower()
    charset = _CHARSETS.get(declared)
    if charset is None:
        raise ValueError(f"unsupported charset {declared!r}")
    return charset


def _sign(content: bytes, private_key: RSAPrivateKey) -> str:
    signature = private_key.sign(content, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def sign_params(params: Mapping[str, str], private_key: RSAPrivateKey) -> str:
    """The ``sign`` of a notification form (the sandbox's side, and test fixtures).

    Signs what ``verify_notification`` checks: every parameter except ``sign``
    and ``sign_type``, sorted, joined as ``k=v&k=v`` (decoded values), in the
    form's ``charset``.
    """
    content = _content(params, drop=_UNSIGNED_IN_NOTIFICATIONS, skip_empty=False)
    return _sign(content.encode(_charset(params)), private_key)


def sign_request(params: Mapping[str, str], private_key: RSAPrivateKey) -> str:
    """The ``sign`` of an outgoing OpenAPI request.

    Differs from notifications on purpose, as Alipay's rules do: ``sign_type``
    IS signed here and empty values are left out.
    """
    content = _content(params, drop=frozenset({"sign"}), skip_empty=True)
    return _sign(content.encode(_charset(params)), private_key)


# --------------------------------------------------------------------------- notifications


class TradeStatus(StrEnum):
    WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
    #: Unpaid and timed out, or fully refunded after payment.
    TRADE_CLOSED = "TRADE_CLOSED"
    TRADE_SUCCESS = "TRADE_SUCCESS"
    #: Paid and no longer refundable.
    TRADE_FINISHED = "TRADE_FINISHED"


#: The only statuses that mean the buyer paid.
PAID_STATUSES: Final = frozenset({TradeStatus.TRADE_SUCCESS, TradeStatus.TRADE_FINISHED})


class AlipayNotice(msgspec.Struct, frozen=True, kw_only=True):
    """A verified ``trade_status_sync`` notification; amounts in fen, times aware.

    Built by this module from a form that passed the signature check, so it
    is not a decoding boundary itself. Unknown form fields are ignored: Alipay
    adds business fields over time and they are covered by the signature.
    """

    notify_id: str
    notify_time: datetime
    notify_type: str
    app_id: str
    trade_no: str
    out_trade_no: str
    trade_status: TradeStatus
    total_amount_fen: int
    charset: str | None = None
    version: str | None = None
    #: The refund request number on a refund notification.
    out_biz_no: str | None = None
    buyer_id: str | None = None
    buyer_open_id: str | None = None
    buyer_logon_id: str | None = None
    seller_id: str | None = None
    seller_email: str | None = None
    receipt_amount_fen: int | None = None
    invoice_amount_fen: int | None = None
    buyer_pay_amount_fen: int | None = None
    point_amount_fen: int | None = None
    #: Total refunded so far on this trade.
    refund_fee_fen: int | None = None
    subject: str | None = None
    body: str | None = None
    passback_params: str | None = None
    gmt_create: datetime | None = None
    gmt_payment: datetime | None = None
    #: Alipay writes this one with milliseconds.
    gmt_refund: datetime | None = None
    gmt_close: datetime | None = None

    @property
    def is_paid(self) -> bool:
        """True only for TRADE_SUCCESS / TRADE_FINISHED.

        A partial refund also arrives as TRADE_SUCCESS (see ``is_refund``): a
        handler must route refund notices before treating one as a payment.
        """
        return self.trade_status in PAID_STATUSES

    @property
    def is_refund(self) -> bool:
        """The notification reports a refund (partial: TRADE_SUCCESS, full: TRADE_CLOSED)."""
        return self.gmt_refund is not None or self.out_biz_no is not None


_NOTICE_TEXT = (
    "notify_id",
    "notify_type",
    "app_id",
    "trade_no",
    "out_trade_no",
    "charset",
    "version",
    "out_biz_no",
    "buyer_id",
    "buyer_open_id",
    "buyer_logon_id",
    "seller_id",
    "seller_email",
    "subject",
    "body",
    "passback_params",
)
_NOTICE_AMOUNTS = (
    "total_amount",
    "receipt_amount",
    "invoice_amount",
    "buyer_pay_amount",
    "point_amount",
    "refund_fee",
)
_NOTICE_TIMES = ("notify_time", "gmt_create", "gmt_payment", "gmt_refund", "gmt_close")


def _decode_notice(form: Mapping[str, str]) -> AlipayNotice:
    fields: dict[str, object] = {
        name: form[name] for name in (*_NOTICE_TEXT, "trade_status") if form.get(name)
    }
    try:
        for name in _NOTICE_AMOUNTS:
            if form.get(name):
                fields[f"{name}_fen"] = yuan_to_fen(form[name])
        for name in _NOTICE_TIMES:
            if form.get(name):
                fields[name] = parse_beijing_time(form[name], allow_millis=True)
        return msgspec.convert(fields, AlipayNotice)
    except (ValueError, msgspec.ValidationError) as exc:
        # A bad amount, time or status, or a missing required field: the
        # signed form is not a trade notification we understand.
        raise MalformedMessage(f"alipay notification: {exc}") from exc


def verify_notification(
    form: Mapping[str, str], *, alipay_public_key: RSAPublicKey
) -> AlipayNotice:
    """Verify an async notification's RSA2 signature and decode it.

    ``form`` is the URL-decoded form body. Signed content: every field except
    ``sign`` and ``sign_type``, sorted by key, ``k=v`` joined with ``&``, in
    the form's ``charset``; ``sign`` is base64 SHA256withRSA (PKCS#1 v1.5)
    under the *Alipay* public key. Raises ``BadSignature`` (a
    ``NotificationRejected``), then ``MalformedMessage`` if the signed form
    is not a trade notification.

    The caller still checks ``out_trade_no`` is ours, ``total_amount_fen``
    equals the order, and ``app_id``/``seller_id`` are ours.
    """
    signature = form.get("sign", "")
    if not signature:
        raise BadSignature("notification has no sign")
    sign_type = form.get("sign_type", SIGN_TYPE)
    if sign_type != SIGN_TYPE:
        # RSA (SHA1) is refused: accepting it would let a downgrade through.
        raise BadSignature(f"unsupported sign_type {sign_type!r}")
    content = _content(form, drop=_UNSIGNED_IN_NOTIFICATIONS, skip_empty=False)
    try:
        raw = base64.b64decode(signature, validate=True)
        alipay_public_key.verify(
            raw, content.encode(_charset(form)), padding.PKCS1v15(), hashes.SHA256()
        )
    except (binascii.Error, ValueError, InvalidSignature) as exc:
        raise BadSignature("notification signature does not verify") from exc
    return _decode_notice(form)


def encode_notice(notice: AlipayNotice) -> dict[str, str]:
    """The form fields of a notice, unsigned (the sandbox's side).

    Add ``sign_type`` and ``sign_params(...)`` as ``sign`` to post it.
    """
    form: dict[str, str] = {}
    for name in _NOTICE_TEXT:
        value = getattr(notice, name)
        if value is not None:
            form[name] = value
    for name in _NOTICE_AMOUNTS:
        amount = getattr(notice, f"{name}_fen")
        if amount is not None:
            form[name] = fen_to_yuan(amount)
    for name in _NOTICE_TIMES:
        moment = getattr(notice, name)
        if moment is not None:
            form[name] = format_beijing_time(moment, allow_millis=True)
    form["trade_status"] = notice.trade_status.value
    return form


# --------------------------------------------------------------------------- bill


class BusinessType(StrEnum):
    """``业务类型``: a refund is its own row, never a change to the payment row."""

    TRADE = "交易"
    REFUND = "退款"


class AlipayBillRow(msgspec.Struct, frozen=True, kw_only=True):
    """One detail row. Amounts in fen, negative on refund rows; times aware.

    Blank secondary amount cells read as 0 and are written back as ``0.00``.
    """

    trade_no: str
    out_trade_no: str
    business_type: BusinessType
    subject: str
    created_at: datetime
    finished_at: datetime | None
    store_id: str
    store_name: str
    operator: str
    terminal_id: str
    counterparty: str
    order_amount_fen: int
    #: 商家实收: what reconciliation matches against the ledger.
    merchant_received_fen: int
    alipay_red_packet_fen: int
    jifenbao_fen: int
    alipay_discount_fen: int
    merchant_discount_fen: int
    voucher_fen: int
    voucher_name: str
    merchant_red_packet_fen: int
    card_fen: int
    #: 退款批次号/请求号: the ``out_request_no`` of the refund; None on payment rows.
    refund_request_no: str | None
    service_fee_fen: int
    profit_share_fen: int
    remark: str


class AlipayBillTotals(msgspec.Struct, frozen=True, kw_only=True):
    """A footer line: ``#交易合计：N笔，商家实收共X元`` or ``#退款合计：...``."""

    count: int
    merchant_received_fen: int


class AlipayBill(msgspec.Struct, frozen=True, kw_only=True):
    """The 业务明细 file of a trade bill, cross-checked against its footer."""

    detail_file_name: str
    #: From the ``#账号：[...]`` header line, when present.
    account: str | None
    #: ``[period_start, period_end)`` from the ``#起始日期`` line, when present.
    period_start: datetime | None
    period_end: datetime | None
    rows: tuple[AlipayBillRow, ...]
    trade_totals: AlipayBillTotals
    #: None only when the file has no refund footer and no refund rows.
    refund_totals: AlipayBillTotals | None
    #: each row's line number in the detail file, and the line as written
    line_numbers: tuple[int, ...] = ()
    lines: tuple[str, ...] = ()


_HEADER = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
)
_REQUIRED = frozenset(
    ("支付宝交易号", "商户订单号", "业务类型", "创建时间", "订单金额（元）", "商家实收（元）")
)
# Alipay appends a tab to these so spreadsheet programs keep them as text
# instead of mangling 28-digit numbers into scientific notation.
_TAB_SUFFIXED = frozenset(("支付宝交易号", "商户订单号", "退款批次号/请求号"))
_DETAIL_MARKER = "业务明细"
_SUMMARY_MARKER = "汇总"
#: A day's detail file is a few MB even for a busy city; anything far larger
#: is a zip bomb or the wrong file.
MAX_DETAIL_BYTES: Final = 256 * 1024 * 1024

_TOTALS_LINE = re.compile(
    r"#(交易|退款)合计[：:]\s*(\d+)\s*笔\s*[，,]\s*商家实收共\s*(-?\d+(?:\.\d+)?)\s*元"
)
_ACCOUNT_LINE = re.compile(r"#账号[：:]\s*\[([^\]]*)\]")
_CN_TIME = r"(\d{4})年(\d{2})月(\d{2})日\s+(\d{2}):(\d{2}):(\d{2})"
_PERIOD_LINE = re.compile(rf"#起始日期[：:]\s*\[{_CN_TIME}\]\s*终止日期[：:]\s*\[{_CN_TIME}\]")


def _normalise_header(name: str) -> str:
    # Half-width parentheses have been seen in re-saved files.
    return name.strip().replace("(", "（").replace(")", "）")


def _cn_time(groups: Sequence[str]) -> datetime:
    year, month, day, hour, minute, second = (int(g) for g in groups)
    return datetime(year, month, day, hour, minute, second, tzinfo=BEIJING)


def _format_cn_time(value: datetime) -> str:
    local = value.astimezone(BEIJING)
    return (
        f"{local.year:04d}年{local.month:02d}月{local.day:02d}日 "
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )


def _member_name(info: zipfile.ZipInfo) -> str:
    # Alipay writes GBK names without the zip UTF-8 flag; Python then decodes
    # them as CP437, which this undoes.
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gb18030")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _detail_member(archive: zipfile.ZipFile) -> tuple[zipfile.ZipInfo, str]:
    candidates = [
        (info, name)
        for info in archive.infolist()
        if (name := _member_name(info)).lower().endswith(".csv") and _SUMMARY_MARKER not in name
    ]
    if len(candidates) > 1:
        candidates = [(info, name) for info, name in candidates if _DETAIL_MARKER in name]
    if len(candidates) != 1:
        names = [_member_name(info) for info in archive.infolist()]
        raise MalformedBill(f"cannot tell the detail file among {names}")
    return candidates[0]


_T = TypeVar("_T")


class _Row:
    def __init__(self, values: list[str], index: Mapping[str, int], line_no: int) -> None:
        self._values = values
        self._index = index
        self._line_no = line_no

    def text(self, column: str) -> str:
        position = self._index.get(column)
        if position is None:
            return ""
        # Only ID-like fields carry the tab, but no field legitimately ends in
        # one, so it is stripped everywhere (files re-saved by hand move it).
        return self._values[position].rstrip("\t")

    def _convert(self, column: str, convert: Callable[[str], _T]) -> _T:
        try:
            return convert(self.text(column).strip())
        except ValueError as exc:
            raise MalformedBill(f"line {self._line_no}, {column}: {exc}") from exc

    def fen(self, column: str) -> int:
        return self._convert(column, yuan_to_fen)

    def fen_or_zero(self, column: str) -> int:
        return self._convert(column, lambda text: yuan_to_fen(text) if text else 0)

    def time(self, column: str) -> datetime:
        return self._convert(column, parse_beijing_time)

    def opt_time(self, column: str) -> datetime | None:
        return self._convert(column, lambda text: parse_beijing_time(text) if text else None)

    def business_type(self) -> BusinessType:
        return self._convert("业务类型", BusinessType)


def _bill_row(row: _Row) -> AlipayBillRow:
    return AlipayBillRow(
        trade_no=row.text("支付宝交易号"),
        out_trade_no=row.text("商户订单号"),
        business_type=row.business_type(),
        subject=row.text("商品名称"),
        created_at=row.time("创建时间"),
        finished_at=row.opt_time("完成时间"),
        store_id=row.text("门店编号"),
        store_name=row.text("门店名称"),
        operator=row.text("操作员"),
        terminal_id=row.text("终端号"),
        counterparty=row.text("对方账户"),
        order_amount_fen=row.fen("订单金额（元）"),
        merchant_received_fen=row.fen("商家实收（元）"),
        alipay_red_packet_fen=row.fen_or_zero("支付宝红包（元）"),
        jifenbao_fen=row.fen_or_zero("集分宝（元）"),
        alipay_discount_fen=row.fen_or_zero("支付宝优惠（元）"),
        merchant_discount_fen=row.fen_or_zero("商家优惠（元）"),
        voucher_fen=row.fen_or_zero("券核销金额（元）"),
        voucher_name=row.text("券名称"),
        merchant_red_packet_fen=row.fen_or_zero("商家红包消费金额（元）"),
        card_fen=row.fen_or_zero("卡消费金额（元）"),
        refund_request_no=row.text("退款批次号/请求号") or None,
        service_fee_fen=row.fen_or_zero("服务费（元）"),
        profit_share_fen=row.fen_or_zero("分润（元）"),
        remark=row.text("备注"),
    )


def _totals(rows: Iterable[AlipayBillRow], kind: BusinessType) -> AlipayBillTotals:
    selected = [row for row in rows if row.business_type is kind]
    return AlipayBillTotals(
        count=len(selected),
        merchant_received_fen=sum(row.merchant_received_fen for row in selected),
    )


def _parse_detail(text: str, name: str) -> AlipayBill:
    account: str | None = None
    period: tuple[datetime, datetime] | None = None
    footer: dict[BusinessType, AlipayBillTotals] = {}
    table: list[tuple[int, str]] = []
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.removesuffix("\r")
        if line.startswith("#"):
            if (match := _TOTALS_LINE.match(line)) is not None:
                kind = BusinessType.TRADE if match.group(1) == "交易" else BusinessType.REFUND
                try:
                    received = yuan_to_fen(match.group(3))
                except MalformedAmount as exc:
                    raise MalformedBill(f"line {number}: {exc}") from exc
                footer[kind] = AlipayBillTotals(
                    count=int(match.group(2)), merchant_received_fen=received
                )
            elif (match := _ACCOUNT_LINE.match(line)) is not None:
                account = match.group(1)
            elif (match := _PERIOD_LINE.match(line)) is not None:
                try:
                    period = (_cn_time(match.groups()[:6]), _cn_time(match.groups()[6:]))
                except ValueError as exc:
                    raise MalformedBill(f"line {number}: {exc}") from exc
        elif line.strip():
            table.append((number, line))
    if not table:
        raise MalformedBill(f"{name} has no column header")
    records = list(csv.reader([line for _, line in table], strict=True))
    if len(records) != len(table):
        raise MalformedBill(f"{name} has a quoted cell spanning lines")
    header = [_normalise_header(cell) for cell in records[0]]
    index = {column: position for position, column in enumerate(header)}
    if len(index) != len(header):
        raise MalformedBill(f"{name} header repeats a column")
    missing = _REQUIRED - index.keys()
    if missing:
        raise MalformedBill(f"{name} header lacks {', '.join(sorted(missing))}")
    rows = []
    for (number, _), values in zip(table[1:], records[1:], strict=True):
        if len(values) != len(header):
            raise MalformedBill(f"line {number} has {len(values)} cells, header {len(header)}")
        rows.append(_bill_row(_Row(values, index, number)))
    trade_totals = footer.get(BusinessType.TRADE)
    if trade_totals is None:
        raise MalformedBill(f"{name} has no #交易合计 footer to check the rows against")
    refund_totals = footer.get(BusinessType.REFUND)
    _cross_check(rows, trade_totals, refund_totals)
    return AlipayBill(
        detail_file_name=name,
        account=account,
        period_start=period[0] if period else None,
        period_end=period[1] if period else None,
        rows=tuple(rows),
        trade_totals=trade_totals,
        refund_totals=refund_totals,
        line_numbers=tuple(number for number, _ in table[1:]),
        lines=tuple(line for _, line in table[1:]),
    )


def _cross_check(
    rows: Sequence[AlipayBillRow],
    trade_totals: AlipayBillTotals,
    refund_totals: AlipayBillTotals | None,
) -> None:
    problems = []
    for kind, stated in ((BusinessType.TRADE, trade_totals), (BusinessType.REFUND, refund_totals)):
        computed = _totals(rows, kind)
        if stated is None:
            stated = AlipayBillTotals(count=0, merchant_received_fen=0)
        if stated != computed:
            problems.append(
                f"{kind.value}: footer says {stated.count} rows / {stated.merchant_received_fen}"
                f" fen, rows are {computed.count} / {computed.merchant_received_fen} fen"
            )
    if problems:
        raise BillMismatch("; ".join(problems))


def parse_bill_zip(data: bytes) -> AlipayBill:
    """Parse the zip from ``alipay.data.dataservice.bill.downloadurl.query`` (trade bill).

    Finds the 业务明细 detail CSV (the one whose name lacks 汇总), decodes it
    as GBK, reads columns by header name, and checks the rows against the
    ``#交易合计`` / ``#退款合计`` footer lines. Raises ``MalformedBill`` or
    ``BillMismatch``.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info, name = _detail_member(archive)
            if info.file_size > MAX_DETAIL_BYTES:
                raise MalformedBill(f"{name} is {info.file_size} bytes, over the limit")
            raw = archive.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise MalformedBill(f"not a readable zip: {exc}") from exc
    try:
        # GB18030 is a superset of GBK: same bytes, same text, no surprises
        # from the rare character GBK lacks.
        text = raw.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise MalformedBill(f"{name} is not GBK text: {exc}") from exc
    try:
        return _parse_detail(text, name)
    except csv.Error as exc:
        raise MalformedBill(f"{name}: {exc}") from exc


def _cell(column: str, value: str) -> str:
    if value and column in _TAB_SUFFIXED:
        return value + "\t"
    return value


def _row_cells(row: AlipayBillRow) -> list[str]:
    values = {
        "支付宝交易号": row.trade_no,
        "商户订单号": row.out_trade_no,
        "业务类型": row.business_type.value,
        "商品名称": row.subject,
        "创建时间": format_beijing_time(row.created_at),
        "完成时间": "" if row.finished_at is None else format_beijing_time(row.finished_at),
        "门店编号": row.store_id,
        "门店名称": row.store_name,
        "操作员": row.operator,
        "终端号": row.terminal_id,
        "对方账户": row.counterparty,
        "订单金额（元）": fen_to_yuan(row.order_amount_fen),
        "商家实收（元）": fen_to_yuan(row.merchant_received_fen),
        "支付宝红包（元）": fen_to_yuan(row.alipay_red_packet_fen),
        "集分宝（元）": fen_to_yuan(row.jifenbao_fen),
        "支付宝优惠（元）": fen_to_yuan(row.alipay_discount_fen),
        "商家优惠（元）": fen_to_yuan(row.merchant_discount_fen),
        "券核销金额（元）": fen_to_yuan(row.voucher_fen),
        "券名称": row.voucher_name,
        "商家红包消费金额（元）": fen_to_yuan(row.merchant_red_packet_fen),
        "卡消费金额（元）": fen_to_yuan(row.card_fen),
        "退款批次号/请求号": row.refund_request_no or "",
        "服务费（元）": fen_to_yuan(row.service_fee_fen),
        "分润（元）": fen_to_yuan(row.profit_share_fen),
        "备注": row.remark,
    }
    for column, value in values.items():
        if any(c in value for c in "\r\n\x00") or value.endswith("\t"):
            raise ValueError(f"{column} value {value!r} cannot be written into a bill")
    # The first cell starts the line, and a line starting with # is a comment.
    if row.trade_no.startswith("#"):
        raise ValueError(f"支付宝交易号 {row.trade_no!r} cannot be written into a bill")
    return [_cell(column, values[column]) for column in _HEADER]


def _totals_line(kind: BusinessType, rows: Sequence[AlipayBillRow]) -> str:
    totals = _totals(rows, kind)
    discount = sum(row.merchant_discount_fen for row in rows if row.business_type is kind)
    return (
        f"#{kind.value}合计：{totals.count}笔，"
        f"商家实收共{fen_to_yuan(totals.merchant_received_fen)}元，"
        f"商家优惠共{fen_to_yuan(discount)}元"
    )


def render_bill_zip(
    rows: Sequence[AlipayBillRow], *, account: str, bill_date: date, exported_at: datetime
) -> bytes:
    """A trade bill zip as Alipay publishes it (the sandbox's side and fixtures).

    A GBK 业务明细 CSV with the ``#`` header and footer lines, plus a minimal
    汇总 file. Deterministic: member timestamps come from ``exported_at``,
    never the clock. The caller chooses which rows belong to ``bill_date``.
    """
    if exported_at.tzinfo is None or exported_at.utcoffset() is None:
        raise ValueError("exported_at must be an aware datetime")
    start = datetime(bill_date.year, bill_date.month, bill_date.day, tzinfo=BEIJING)
    end = start + timedelta(days=1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    lines = [
        "#支付宝业务明细查询",
        f"#账号：[{account}]",
        f"#起始日期：[{_format_cn_time(start)}]   终止日期：[{_format_cn_time(end)}]",
        "#-----------------------------------------业务明细列表----------------------------------------",
    ]
    writer.writerow(_HEADER)
    for row in rows:
        writer.writerow(_row_cells(row))
    footer = [
        "#-----------------------------------------业务明细列表结束------------------------------------",
        _totals_line(BusinessType.TRADE, rows),
        _totals_line(BusinessType.REFUND, rows),
        f"#导出时间：[{_format_cn_time(exported_at)}]",
    ]
    detail = "\r\n".join(lines) + "\r\n" + out.getvalue() + "\r\n".join(footer) + "\r\n"
    summary = "\r\n".join(
        [
            "#支付宝业务汇总查询",
            f"#账号：[{account}]",
            "交易订单总笔数,退款订单总笔数,商家实收（元）",
            f"{_totals(rows, BusinessType.TRADE).count},{_totals(rows, BusinessType.REFUND).count},"
            f"{fen_to_yuan(sum(row.merchant_received_fen for row in rows))}",
            f"#导出时间：[{_format_cn_time(exported_at)}]",
        ]
    )
    stamp = exported_at.astimezone(BEIJING)
    zip_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    day = bill_date.strftime("%Y%m%d")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, content in (
            (f"{account}_{day}_业务明细.csv", detail),
            (f"{account}_{day}_业务明细(汇总).csv", summary + "\r\n"),
        ):
            info = zipfile.ZipInfo(member, date_time=zip_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content.encode("gbk"))
    return buffer.getvalue()
