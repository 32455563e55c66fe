"""The sandbox's Alipay side: Alipay's OpenAPI gateway as documented, small, enough for the
platform adapter's contract (``parking.payments.providers.alipay``).

It checks every request's RSA2 signature with the app public key, answers
``{"<method>_response": {...}, "sign": ...}`` signed over the node's exact text,
posts signed ``trade_status_sync`` notifications, and serves a day's trade bill zip
(GBK CSVs, ``#`` header and footer lines, refunds as negative rows) for any date,
with the same misbehaviour controls as the WeChat side (a wrong amount, an omitted
order, an order we never made). Unlike Alipay it does not re-send a notification
that was not answered ``success``.

``parking sandbox-pay --alipay-port N`` runs it beside the WeChat side in the same
process; its keys and the platform's ``alipay.json`` live in the sandbox folder,
so a restart keeps them. Trades are kept in memory. Control (no authentication,
loopback only): ``POST /sandbox/alipay/scan/{out_trade_no}``,
``POST /sandbox/alipay/pay/{out_trade_no}``, ``POST /sandbox/alipay/control`` with
``{"action": "outage" | "bill_wrong_amount" | "bill_omit" | "bill_add_unknown" |
"reset", ...}``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from parking.clock import SHANGHAI
from parking.payments.wire import alipay as ali_wire
from parking.payments.wire.money import fen_to_yuan, yuan_to_fen

#: the platform's app config, as ``parking.payments.providers.alipay.load_config`` reads it
CONFIG: Final = "alipay.json"
APP_KEY: Final = "app_private_key.pem"
ALIPAY_KEY: Final = "alipay_private_key.pem"
ALIPAY_PUBLIC_KEY: Final = "alipay_public_key.pem"
APP_ID: Final = "2021000100000001"
SELLER_ID: Final = "2088100000000001"
#: the sandbox's service fee: 0.60 %, rounded half up to the fen (as its WeChat side)
FEE_PER_MILLE: Final = 6


def service_fee_fen(amount_fen: int) -> int:
    sign = -1 if amount_fen < 0 else 1
    return sign * ((abs(amount_fen) * FEE_PER_MILLE + 500) // 1000)


def _key(path: Path) -> RSAPrivateKey:
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(loaded, RSAPrivateKey)
        return loaded
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def _beijing(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def ensure(folder: Path, port: int) -> Path:
    """The Alipay side's keys (kept) and the platform's ``alipay.json`` pointing at
    ``port``, in ``folder``; returns the config's path. Run before the platform starts,
    so its adapter finds the config."""
    folder.mkdir(parents=True, exist_ok=True)
    _key(folder / APP_KEY)
    alipay_key = _key(folder / ALIPAY_KEY)
    (folder / ALIPAY_PUBLIC_KEY).write_bytes(
        alipay_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = folder / CONFIG
    config.write_text(
        json.dumps(
            {
                "gateway_url": f"http://127.0.0.1:{port}/gateway.do",
                "app_id": APP_ID,
                "seller_id": SELLER_ID,
                "app_private_key_path": APP_KEY,
                "alipay_public_key_path": ALIPAY_PUBLIC_KEY,
            }
        )
    )
    return config


@dataclass
class Trade:
    out_trade_no: str
    total_fen: int
    subject: str
    notify_url: str | None
    passback: str | None
    qr_code: str
    status: str = "CREATED"  # precreated, nobody scanned it yet
    trade_no: str = ""
    created_at: datetime | None = None
    paid_at: datetime | None = None
    refunds: dict[str, tuple[int, datetime]] = field(default_factory=dict)


@dataclass
class BillControls:
    amounts: dict[str, int] = field(default_factory=dict)
    omit: set[str] = field(default_factory=set)
    #: (out_trade_no, amount, bill date) of orders we never made
    extra: list[tuple[str, int, date]] = field(default_factory=list)


class AlipayGateway:
    """Alipay's gateway on ``port`` (``/gateway.do``), its keys and config in ``folder``."""

    def __init__(self, port: int, folder: Path, *, host: str = "127.0.0.1") -> None:
        self.port = port
        self.app_id = APP_ID
        self.seller_id = SELLER_ID
        self.config_path = ensure(folder, port)
        self.app_key = _key(folder / APP_KEY)
        self.alipay_key = _key(folder / ALIPAY_KEY)
        self.outage = False
        self.bill_controls = BillControls()
        self.trades: dict[str, Trade] = {}
        self._bills: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request side

    def _signature_ok(self, params: dict[str, str]) -> bool:
        content = "&".join(
            f"{key}={params[key]}" for key in sorted(params) if key != "sign" and params[key] != ""
        )
        try:
            self.app_key.public_key().verify(
                base64.b64decode(params.get("sign", "")),
                content.encode("utf-8"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def _answer(self, method: str, node: dict[str, Any], *, signed: bool = True) -> str:
        key = method.replace(".", "_") + "_response"
        raw = json.dumps(node, ensure_ascii=False, separators=(",", ":"))
        if not signed:
            return f'{{"{key}":{raw}}}'
        signature = self.alipay_key.sign(raw.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
        return f'{{"{key}":{raw},"sign":"{base64.b64encode(signature).decode()}"}}'

    @staticmethod
    def _fail(sub_code: str, sub_msg: str, code: str = "40004") -> dict[str, Any]:
        msg = {"40004": "Business Failed", "40002": "Invalid Arguments"}.get(code, "Error")
        return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg}

    def handle(self, path: str, body: str) -> str:
        params = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        method = params.get("method", "")
        if not self._signature_ok(params):
            return self._answer(
                method, self._fail("isv.invalid-signature", "验签出错", "40002"), signed=False
            )
        if self.outage:
            return self._answer(
                method,
                {
                    "code": "20000",
                    "msg": "Service Currently Unavailable",
                    "sub_code": "isp.unknow-error",
                    "sub_msg": "系统繁忙",
                },
            )
        biz = json.loads(params["biz_content"])
        with self._lock:
            node = self._dispatch(method, biz, params)
        return self._answer(method, node)

    def _dispatch(self, method: str, biz: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        ok = {"code": "10000", "msg": "Success"}
        trade = self.trades.get(biz.get("out_trade_no", ""))
        if method == "alipay.trade.precreate":
            if trade is None:
                trade = Trade(
                    out_trade_no=biz["out_trade_no"],
                    total_fen=yuan_to_fen(biz["total_amount"]),
                    subject=biz["subject"],
                    notify_url=params.get("notify_url"),
                    passback=biz.get("passback_params"),
                    qr_code=f"https://qr.alipay.com/bax0{secrets.token_hex(8)}",
                )
                self.trades[trade.out_trade_no] = trade
            return {**ok, "out_trade_no": trade.out_trade_no, "qr_code": trade.qr_code}
        if method == "alipay.data.dataservice.bill.downloadurl.query":
            token = secrets.token_hex(8)
            self._bills[token] = self._bill(date.fromisoformat(biz["bill_date"]))
            return {**ok, "bill_download_url": f"http://127.0.0.1:{self.port}/bill/{token}"}
        if trade is None or trade.status == "CREATED":
            return self._fail("ACQ.TRADE_NOT_EXIST", "交易不存在")
        if method == "alipay.trade.query":
            node = {
                **ok,
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "buyer_logon_id": "159****5620",
                "trade_status": trade.status,
                "total_amount": fen_to_yuan(trade.total_fen),
                "buyer_user_id": "2088101117955611",
            }
            if trade.paid_at is not None:
                node["buyer_pay_amount"] = fen_to_yuan(trade.total_fen)
                node["receipt_amount"] = fen_to_yuan(trade.total_fen)
                node["send_pay_date"] = _beijing(trade.paid_at)
            if trade.passback:
                node["passback_params"] = trade.passback
            return node
        if method == "alipay.trade.close":
            if trade.status != "WAIT_BUYER_PAY":
                return self._fail("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            trade.status = "TRADE_CLOSED"
            return {**ok, "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no}
        if method == "alipay.trade.refund":
            return self._refund(trade, biz, ok)
        if method == "alipay.trade.fastpay.refund.query":
            found = trade.refunds.get(biz["out_request_no"])
            if found is None:
                return ok
            return {
                **ok,
                "trade_no": trade.trade_no,
                "out_trade_no": trade.out_trade_no,
                "out_request_no": biz["out_request_no"],
                "refund_amount": fen_to_yuan(found[0]),
                "total_amount": fen_to_yuan(trade.total_fen),
                "gmt_refund_pay": _beijing(found[1]),
            }
        return self._fail("isv.invalid-method", "不存在的方法名", "40002")

    def _refund(self, trade: Trade, biz: dict[str, Any], ok: dict[str, str]) -> dict[str, Any]:
        request_no = biz["out_request_no"]
        fund_change = "N"
        if request_no not in trade.refunds:
            if trade.status != "TRADE_SUCCESS":
                return self._fail("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            amount = yuan_to_fen(biz["refund_amount"])
            refunded = sum(fen for fen, _ in trade.refunds.values())
            if amount > trade.total_fen - refunded:
                return self._fail("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            trade.refunds[request_no] = (amount, datetime.now(UTC).replace(microsecond=0))
            fund_change = "Y"
            if refunded + amount == trade.total_fen:
                trade.status = "TRADE_CLOSED"
            self._notify_later(trade, refund_no=request_no)
        total_refunded = sum(fen for fen, _ in trade.refunds.values())
        return {
            **ok,
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_logon_id": "159****5620",
            "fund_change": fund_change,
            "refund_fee": fen_to_yuan(total_refunded),
            "gmt_refund_pay": _beijing(trade.refunds[request_no][1]),
        }

    # -- the day's bill

    def _bill(self, day: date) -> bytes:
        controls = self.bill_controls
        rows = []
        for trade in self.trades.values():
            if trade.out_trade_no in controls.omit:
                continue
            if trade.paid_at is not None and trade.paid_at.astimezone(SHANGHAI).date() == day:
                fen = controls.amounts.get(trade.out_trade_no, trade.total_fen)
                rows.append(self._bill_row(trade, trade.paid_at, fen, None))
            for request_no, (fen, at) in trade.refunds.items():
                if at.astimezone(SHANGHAI).date() == day:
                    rows.append(self._bill_row(trade, at, -fen, request_no))
        for no, fen, bill_date in controls.extra:
            if bill_date == day:
                moment = datetime.combine(day, datetime.min.time(), SHANGHAI).replace(hour=12)
                stranger = Trade(
                    out_trade_no=no,
                    total_fen=fen,
                    subject="停车费",
                    notify_url=None,
                    passback=None,
                    qr_code="",
                    trade_no="2024" + "".join(secrets.choice("0123456789") for _ in range(24)),
                    created_at=moment,
                )
                rows.append(self._bill_row(stranger, moment, fen, None))
        rows.sort(key=lambda row: (row.finished_at or row.created_at, row.out_trade_no))
        return ali_wire.render_bill_zip(
            rows,
            account=f"{self.seller_id}0156",
            bill_date=day,
            exported_at=datetime.now(UTC).replace(microsecond=0),
        )

    def _bill_row(
        self, trade: Trade, at: datetime, fen: int, request_no: str | None
    ) -> ali_wire.AlipayBillRow:
        assert trade.created_at is not None
        return ali_wire.AlipayBillRow(
            trade_no=trade.trade_no,
            out_trade_no=trade.out_trade_no,
            business_type=ali_wire.BusinessType.REFUND
            if request_no
            else ali_wire.BusinessType.TRADE,
            subject=trade.subject,
            created_at=trade.created_at,
            finished_at=at,
            store_id="",
            store_name="",
            operator="",
            terminal_id="",
            counterparty="159****5620",
            order_amount_fen=fen,
            merchant_received_fen=fen,
            alipay_red_packet_fen=0,
            jifenbao_fen=0,
            alipay_discount_fen=0,
            merchant_discount_fen=0,
            voucher_fen=0,
            voucher_name="",
            merchant_red_packet_fen=0,
            card_fen=0,
            refund_request_no=request_no,
            service_fee_fen=service_fee_fen(fen),
            profit_share_fen=0,
            remark="",
        )

    def control(self, command: dict[str, Any]) -> dict[str, Any]:
        """The sandbox's misbehaviour controls for the Alipay side."""
        action = command.get("action")
        with self._lock:
            if action == "outage":
                self.outage = bool(command["enabled"])
            elif action == "bill_wrong_amount":
                self.bill_controls.amounts[str(command["out_trade_no"])] = int(
                    command["amount_fen"]
                )
            elif action == "bill_omit":
                self.bill_controls.omit.add(str(command["out_trade_no"]))
            elif action == "bill_add_unknown":
                self.bill_controls.extra.append(
                    (
                        str(command["out_trade_no"]),
                        int(command["amount_fen"]),
                        date.fromisoformat(str(command["bill_date"])),
                    )
                )
            elif action == "reset":
                self.outage = False
                self.bill_controls = BillControls()
            else:
                raise ValueError(f"unknown action {action!r}")
        return {"ok": True}

    # -- the driver's side

    def scan(self, out_trade_no: str) -> None:
        with self._lock:
            trade = self.trades[out_trade_no]
            if trade.status == "CREATED":
                trade.status = "WAIT_BUYER_PAY"
                trade.trade_no = "2024" + "".join(secrets.choice("0123456789") for _ in range(24))
                trade.created_at = datetime.now(UTC).replace(microsecond=0)

    def pay(self, out_trade_no: str) -> None:
        self.scan(out_trade_no)
        with self._lock:
            trade = self.trades[out_trade_no]
            if trade.status != "WAIT_BUYER_PAY":
                raise ValueError(f"trade {out_trade_no} is {trade.status}")
            trade.status = "TRADE_SUCCESS"
            trade.paid_at = datetime.now(UTC).replace(microsecond=0)
        self._notify_later(trade)

    def notification_form(self, trade: Trade, *, refund_no: str | None = None) -> dict[str, str]:
        assert trade.created_at is not None
        now = datetime.now(UTC).replace(microsecond=0)
        form = {
            "notify_time": _beijing(now),
            "notify_type": "trade_status_sync",
            "notify_id": uuid.uuid4().hex,
            "app_id": self.app_id,
            "charset": "utf-8",
            "version": "1.0",
            "trade_no": trade.trade_no,
            "out_trade_no": trade.out_trade_no,
            "buyer_id": "2088101117955611",
            "seller_id": self.seller_id,
            "trade_status": trade.status,
            "total_amount": fen_to_yuan(trade.total_fen),
            "receipt_amount": fen_to_yuan(trade.total_fen),
            "buyer_pay_amount": fen_to_yuan(trade.total_fen),
            "subject": trade.subject,
            "gmt_create": _beijing(trade.created_at),
        }
        if trade.paid_at is not None:
            form["gmt_payment"] = _beijing(trade.paid_at)
        if trade.passback:
            form["passback_params"] = trade.passback
        if refund_no is not None:
            form["out_biz_no"] = refund_no
            form["refund_fee"] = fen_to_yuan(sum(fen for fen, _ in trade.refunds.values()))
            form["gmt_refund"] = _beijing(trade.refunds[refund_no][1]) + ".000"
        form["sign_type"] = "RSA2"
        form["sign"] = ali_wire.sign_params(form, self.alipay_key)
        return form

    def _notify_later(self, trade: Trade, *, refund_no: str | None = None) -> None:
        if trade.notify_url is None:
            return
        form = self.notification_form(trade, refund_no=refund_no)
        url = trade.notify_url

        def send() -> None:
            # Like Alipay, an unreachable merchant is not the gateway's problem.
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, data=form, timeout=5)

        threading.Thread(target=send, daemon=True).start()


def _handler(gateway: AlipayGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode("utf-8")
            if self.path.startswith("/sandbox/alipay/"):
                self._control(self.path.removeprefix("/sandbox/alipay/"), body)
                return
            text = gateway.handle(self.path, body)
            self._send(200, text.encode("utf-8"), "application/json;charset=utf-8")

        def _control(self, what: str, body: str) -> None:
            try:
                if what.startswith("pay/"):
                    gateway.pay(what.removeprefix("pay/"))
                    answer: dict[str, Any] = {"ok": True}
                elif what.startswith("scan/"):
                    gateway.scan(what.removeprefix("scan/"))
                    answer = {"ok": True}
                elif what == "control":
                    answer = gateway.control(json.loads(body or "{}"))
                else:
                    self._send(404, b'{"error": "no such control"}', "application/json")
                    return
            except (KeyError, ValueError) as exc:
                error = json.dumps({"error": str(exc)}, ensure_ascii=False).encode()
                self._send(400, error, "application/json")
                return
            self._send(200, json.dumps(answer).encode(), "application/json")

        def do_GET(self) -> None:
            token = self.path.rsplit("/", 1)[-1]
            data = gateway._bills.pop(token, None)
            if data is None:
                self._send(404, b"expired", "text/plain")
                return
            self._send(200, data, "application/zip")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
