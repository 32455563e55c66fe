"""Real servers for the provider tests (used by conftest.py and the tests), all over loopback:

- the sandbox provider (``parking sandbox-pay``) as a subprocess on port 8061,
  with a scaled-down retry schedule and its own stack folder;
- a notification receiver (port 8062) that records every request byte for
  byte and answers what a test scripted;
- a small Alipay OpenAPI gateway (port 8063) that checks RSA2 request
  signatures, signs its answers and posts signed notifications, as Alipay's
  documentation describes (there is no Alipay sandbox in this project).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from parking.payments.port import PaymentProvider
from parking.payments.wire import alipay as ali_wire
from parking.payments.wire.money import fen_to_yuan, yuan_to_fen

BEIJING = ZoneInfo("Asia/Shanghai")
SANDBOX_PORT = 8061
RECEIVER_PORT = 8062
ALIPAY_PORT = 8063
#: WeChat's 15 s / 15 s / 30 s ... become 0.15 s / 0.15 s / 0.3 s.
RETRY_SCALE = 0.01
SETTLE_DELAY = 0.3


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"sandbox exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class SandboxProcess:
    """A running ``parking sandbox-pay``; ``start``/``stop`` may be called again (restarts)."""

    stack_dir: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.stack_dir / "sandbox-pay"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "merchant.json"

    def start(self) -> None:
        env = {
            **os.environ,
            "PARKING_STACK_DIR": str(self.stack_dir),
            "PARKING_LOG_FORMAT": "console",
            "PARKING_LOG_LEVEL": "warning",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parking",
                "sandbox-pay",
                "--port",
                str(self.port),
                "--retry-scale",
                str(RETRY_SCALE),
                "--settle-delay",
                str(SETTLE_DELAY),
                "--duplicate-rate",
                "0",
                *self.extra_args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_until_up(f"{self.base_url}/sandbox/healthz", self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.proc = None


@contextlib.contextmanager
def running_sandbox(stack_dir: Path, port: int) -> Iterator[SandboxProcess]:
    """A ``parking sandbox-pay`` process for the length of the block (every sandbox
    fixture's body: the folders differ by scope, the ports by suite)."""
    process = SandboxProcess(stack_dir, port)
    process.start()
    try:
        yield process
    finally:
        process.stop()


class SandboxControl:
    """The sandbox's ``/sandbox`` surface, as a test (or a driver) uses it."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url

    async def _post(self, path: str, payload: Any | None = None) -> Any:
        response = await self._http.post(
            f"{self._base}{path}", json=payload if payload is not None else None
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def pay(self, out_trade_no: str, **fields: Any) -> Any:
        return await self._post(f"/sandbox/orders/{out_trade_no}/pay", fields or None)

    async def fail(self, out_trade_no: str) -> Any:
        return await self._post(f"/sandbox/orders/{out_trade_no}/fail")

    async def repay(self, out_trade_no: str) -> Any:
        return await self._post(f"/sandbox/orders/{out_trade_no}/repay")

    async def control(self, action: str, **fields: Any) -> Any:
        return await self._post("/sandbox/control", {"action": action, **fields})

    async def mandate(self, **fields: Any) -> Any:
        return await self._post("/sandbox/mandates", fields)

    async def now(self) -> datetime:
        response = await self._http.get(f"{self._base}/sandbox/clock")
        return datetime.fromisoformat(response.json()["now"])

    async def move_to(self, moment: datetime) -> datetime:
        """Forward only: other tests share the sandbox and its business clock."""
        if await self.now() >= moment:
            return await self.now()
        answer = await self._post("/sandbox/clock", {"to": moment.isoformat()})
        return datetime.fromisoformat(answer["now"])

    async def notifications(self, out_trade_no: str) -> list[dict[str, Any]]:
        response = await self._http.get(
            f"{self._base}/sandbox/notifications", params={"out_trade_no": out_trade_no}
        )
        result: list[dict[str, Any]] = response.json()
        return result


# --------------------------------------------------------------------------- receiver


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int


class Receiver:
    """Records notification requests per path and answers scripted statuses (default 200)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._lock = threading.Lock()
        self._records: dict[str, list[Received]] = {}
        self._scripts: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = receiver._next_status(self.path)
                receiver._record(
                    Received(
                        path=self.path,
                        headers=dict(self.headers.items()),
                        body=body,
                        at=time.time(),
                        status=status,
                    )
                )
                reply = b"success" if status == 200 else b'{"code":"FAIL","message":"fail"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def new_path(self) -> str:
        return f"/notify/{uuid.uuid4().hex}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, statuses: list[int]) -> None:
        with self._lock:
            self._scripts[path] = list(statuses)

    def _next_status(self, path: str) -> int:
        with self._lock:
            script = self._scripts.get(path)
            return script.pop(0) if script else 200

    def _record(self, record: Received) -> None:
        with self._lock:
            self._records.setdefault(record.path, []).append(record)

    def records(self, path: str) -> list[Received]:
        with self._lock:
            return list(self._records.get(path, []))

    async def wait_for(self, path: str, count: int, within: float = 8.0) -> list[Received]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            records = self.records(path)
            if len(records) >= count:
                return records
            await asyncio.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.records(path))} of {count} notifications")


# --------------------------------------------------------------------------- Alipay gateway


def _new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_private(key: RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _beijing(moment: datetime) -> str:
    local = moment.astimezone(BEIJING)
    return local.strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class FakeTrade:
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


class FakeAlipayGateway:
    """Alipay's OpenAPI gateway as documented, small: enough for the adapter's contract.

    Checks every request's RSA2 signature with the app public key, answers
    ``{"<method>_response": {...}, "sign": ...}`` signed over the node's exact
    text, and posts signed ``trade_status_sync`` notifications. Unlike Alipay,
    it does not re-send a notification that was not answered ``success``.
    """

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.app_id = "2021000100000001"
        self.seller_id = "2088100000000001"
        self.app_key = _new_key()
        self.alipay_key = _new_key()
        self.outage = False
        self.trades: dict[str, FakeTrade] = {}
        self._bills: dict[str, bytes] = {}
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "app_private_key.pem").write_bytes(_pem_private(self.app_key))
        (folder / "alipay_public_key.pem").write_bytes(_pem_public(self.alipay_key.public_key()))
        self.config_path = folder / "alipay.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "gateway_url": f"http://127.0.0.1:{port}/gateway.do",
                    "app_id": self.app_id,
                    "seller_id": self.seller_id,
                    "app_private_key_path": "app_private_key.pem",
                    "alipay_public_key_path": "alipay_public_key.pem",
                }
            )
        )
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode("utf-8")
                text = gateway.handle(self.path, body)
                data = text.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                data = gateway._bills.pop(token, None)
                self.send_response(200 if data is not None else 404)
                payload = data or b"expired"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
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
                trade = FakeTrade(
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

    def _refund(self, trade: FakeTrade, biz: dict[str, Any], ok: dict[str, str]) -> dict[str, Any]:
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

    def _bill(self, day: date) -> bytes:
        rows = []
        for trade in self.trades.values():
            if trade.paid_at is not None and trade.paid_at.astimezone(BEIJING).date() == day:
                rows.append(self._bill_row(trade, trade.paid_at, trade.total_fen, None))
            for request_no, (fen, at) in trade.refunds.items():
                if at.astimezone(BEIJING).date() == day:
                    rows.append(self._bill_row(trade, at, -fen, request_no))
        return ali_wire.render_bill_zip(
            rows,
            account=f"{self.seller_id}0156",
            bill_date=day,
            exported_at=datetime.now(UTC).replace(microsecond=0),
        )

    def _bill_row(
        self, trade: FakeTrade, at: datetime, fen: int, request_no: str | None
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
            order_amount_fen=trade.total_fen,
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
            service_fee_fen=0,
            profit_share_fen=0,
            remark="",
        )

    # -- the driver's side (test hooks)

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
            assert trade.status == "WAIT_BUYER_PAY", trade.status
            trade.status = "TRADE_SUCCESS"
            trade.paid_at = datetime.now(UTC).replace(microsecond=0)
        self._notify_later(trade)

    def notification_form(
        self, trade: FakeTrade, *, refund_no: str | None = None
    ) -> dict[str, str]:
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

    def _notify_later(self, trade: FakeTrade, *, refund_no: str | None = None) -> None:
        if trade.notify_url is None:
            return
        form = self.notification_form(trade, refund_no=refund_no)
        url = trade.notify_url

        def send() -> None:
            # Like Alipay, an unreachable merchant is not the gateway's problem.
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, data=form, timeout=5)

        threading.Thread(target=send, daemon=True).start()


# --------------------------------------------------------------------------- the contract harness


@dataclass
class Harness:
    """One adapter plus the provider-side hooks its contract test needs."""

    name: str
    provider: PaymentProvider
    scan: Callable[[str], Any]
    pay: Callable[[str], Any]
    make_bill_ready: Callable[[date], Any]
    today: Callable[[], Any]
    set_outage: Callable[[bool], Any]


def new_trade_no(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:20]}"
