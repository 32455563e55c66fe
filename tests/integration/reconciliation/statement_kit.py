"""Statement files for the reconciliation tests, written with the wire formats' own
renderers (the ones the sandbox provider uses), so a test file is a real file."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta

from parking.clock import SHANGHAI
from parking.payments.wire import alipay as ali
from parking.payments.wire import wechat as wx

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"


def at(day: date, hh: int = 12, mm: int = 0, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=SHANGHAI)


def fee_milli(amount_fen: int) -> int:
    """0.60 %, rounded half up to the fen, as milli-fen (the sandbox's rate)."""
    sign = -1 if amount_fen < 0 else 1
    return sign * ((abs(amount_fen) * 6 + 500) // 1000) * 1000


def wechat_payment(
    out_trade_no: str, amount_fen: int, when: datetime, **changes: object
) -> wx.TradeBillRow:
    row = wx.TradeBillRow(
        trade_time=when,
        appid=APPID,
        mchid=MCHID,
        sub_mchid=None,
        device_info="",
        transaction_id=f"42000{zlib.crc32(out_trade_no.encode()) % 10**20:020d}",
        out_trade_no=out_trade_no,
        openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        trade_type="NATIVE",
        trade_state=wx.TradeState.SUCCESS,
        bank_type="OTHERS",
        currency="CNY",
        settlement_total_fen=amount_fen,
        coupon_fen=0,
        description="停车费",
        attach="",
        fee_milli_fen=fee_milli(amount_fen),
        fee_rate="0.60%",
        refund_fen=0,
        recharge_coupon_refund_fen=0,
        order_amount_fen=amount_fen,
        requested_refund_fen=0,
    )
    return wx.TradeBillRow(**{**_fields(row), **changes})  # type: ignore[arg-type]


def wechat_refund(
    out_trade_no: str, out_refund_no: str, refund_fen: int, order_fen: int, when: datetime
) -> wx.TradeBillRow:
    return wx.TradeBillRow(
        **{
            **_fields(wechat_payment(out_trade_no, order_fen, when)),
            "trade_state": wx.TradeState.REFUND,
            "settlement_total_fen": 0,
            "fee_milli_fen": fee_milli(-refund_fen),
            "refund_requested_at": when,
            "refund_succeeded_at": when + timedelta(seconds=5),
            "refund_id": f"50300{zlib.crc32(out_refund_no.encode()) % 10**20:020d}",
            "out_refund_no": out_refund_no,
            "refund_fen": refund_fen,
            "refund_type": "ORIGINAL",
            "refund_status": "SUCCESS",
            "requested_refund_fen": refund_fen,
        }
    )


def _fields(row: object) -> dict[str, object]:
    return {f: getattr(row, f) for f in row.__struct_fields__}  # type: ignore[attr-defined]


def wechat_file(rows: Sequence[wx.TradeBillRow]) -> bytes:
    return wx.render_trade_bill(rows, wx.TradeBillType.ALL).encode("utf-8")


def alipay_payment(out_trade_no: str, amount_fen: int, when: datetime) -> ali.AlipayBillRow:
    return ali.AlipayBillRow(
        trade_no=f"2026{zlib.crc32(out_trade_no.encode()) % 10**24:024d}",
        out_trade_no=out_trade_no,
        business_type=ali.BusinessType.TRADE,
        subject="停车费",
        created_at=when - timedelta(seconds=20),
        finished_at=when,
        store_id="",
        store_name="",
        operator="",
        terminal_id="",
        counterparty="ali***@example.com",
        order_amount_fen=amount_fen,
        merchant_received_fen=amount_fen,
        alipay_red_packet_fen=0,
        jifenbao_fen=0,
        alipay_discount_fen=0,
        merchant_discount_fen=0,
        voucher_fen=0,
        voucher_name="",
        merchant_red_packet_fen=0,
        card_fen=0,
        refund_request_no=None,
        service_fee_fen=fee_milli(amount_fen) // 1000,
        profit_share_fen=0,
        remark="",
    )


def alipay_file(rows: Sequence[ali.AlipayBillRow], day: date) -> bytes:
    return ali.render_bill_zip(
        rows, account="2088123456789012", bill_date=day, exported_at=at(day + timedelta(days=1), 9)
    )
