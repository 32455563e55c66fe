"""Real servers for the provider tests (used by conftest.py and the tests), all over loopback:

- the sandbox provider (``parking sandbox-pay``) as a subprocess on port 8061,
  with a scaled-down retry schedule and its own stack folder;
- a notification receiver (port 8062) that records every request byte for
  byte and answers what a test scripted;
- the sandbox's Alipay side (``counterparts.payments.alipay``, port 8063), run
  in-process: it checks RSA2 request signatures, signs its answers and posts
  signed notifications, as Alipay's documentation describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from counterparts.payments.alipay import AlipayGateway, Trade
from parking.payments.port import PaymentProvider

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

    @property
    def alipay_config_path(self) -> Path:
        return self.data_dir / "alipay.json"

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
def running_sandbox(
    stack_dir: Path, port: int, *, alipay_port: int | None = None
) -> Iterator[SandboxProcess]:
    """A ``parking sandbox-pay`` process for the length of the block (every sandbox
    fixture's body: the folders differ by scope, the ports by suite); with
    ``alipay_port`` its Alipay side too."""
    extra = ["--alipay-port", str(alipay_port)] if alipay_port is not None else []
    process = SandboxProcess(stack_dir, port, extra_args=extra)
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


#: Alipay's gateway is the sandbox's Alipay side (counterparts/payments/alipay.py), run
#: in-process here on its own port.
FakeAlipayGateway = AlipayGateway
FakeTrade = Trade


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
