"""Helpers of the payment-flow tests: a tiny city, bills, a real-HTTP bridge, polling.

The sandbox provider (a subprocess, see ../payments/payment_servers.py) posts
notifications to a URL, so the API must listen on a real port. The test
client runs the real Litestar app in-process (lifespan, pool, routes); the
``Bridge`` is a small HTTP/1.1 server on a loopback port that forwards each
request to it, byte for byte, and sends the app's answer back. It can also
capture requests instead (to replay a signed notification by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import asyncpg
import httpx

from parking.bills import service as bills
from parking.bills.model import Bill
from parking.ledger import service as ledger

LOT = "GZ-PF-01"
TARIFF = "pf-tariff"
QUOTE = b'{"total_fen": 0, "lines": []}'
_sessions = itertools.count()


async def build_city(conn: asyncpg.Connection) -> None:
    """The least a bill refers to: a district, a lot, a tariff version."""
    await conn.execute(
        """INSERT INTO districts (code, name, kind, latitude, longitude)
           VALUES ('ZG', '章贡区', 'district', 25.85, 114.93);
           INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude)
           VALUES ('GZ-PF-01', '支付测试停车场', 'ZG', 'gated', 100, 25.85, 114.93);
           INSERT INTO tariffs (id, name) VALUES ('pf-tariff', 'payments flow');
           INSERT INTO tariff_versions (tariff_id, version, effective_from, document, created_by)
           VALUES ('pf-tariff', 1, '2026-01-01T00:00:00+08:00', '{}', 'test');"""
    )


def new_account() -> str:
    return f"acc-{uuid.uuid4().hex[:20].upper()}"


def new_plate() -> str:
    return "赣B" + uuid.uuid4().hex[:5].upper()


async def open_bill(
    conn: asyncpg.Connection,
    amount_fen: int = 500,
    *,
    account_id: str | None = None,
    plate: str | None = None,
    now: datetime | None = None,
) -> Bill:
    moment = now or datetime.now(UTC)
    async with conn.transaction():
        bill = await bills.open_bill(
            conn,
            session_id=f"pf-{uuid.uuid4().hex[:12]}-{next(_sessions)}",
            lot_id=LOT,
            plate=plate or new_plate(),
            account_id=account_id,
            amount_fen=amount_fen,
            tariff_id=TARIFF,
            tariff_version=1,
            quote=QUOTE,
            closed_at=moment,
            now=moment,
        )
    assert bill is not None
    return bill


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 8.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.03)
    raise AssertionError(f"{what} did not happen within {within} s")


async def bill_status(conn: asyncpg.Connection, bill_id: str) -> str:
    return str((await bills.get(conn, bill_id)).status.value)


async def ledger_count(conn: asyncpg.Connection, kind: str, correlation_id: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM ledger_transactions WHERE kind = $1 AND correlation_id = $2",
            kind,
            correlation_id,
        )
    )


async def assert_books_straight(conn: asyncpg.Connection) -> None:
    """The invariants every scenario ends with: the ledger balances, receivables equal the
    owed bills, every paid bill has exactly one bill_paid transaction and one paid attempt."""
    balance = await ledger.trial_balance(conn)
    assert balance.total_fen == 0, balance
    check = await bills.receivables_check(conn)
    assert check.equal, check
    wrong = await conn.fetch(
        """SELECT b.id, b.status, b.paid_at,
                  (SELECT count(*) FROM ledger_transactions t
                    WHERE t.kind = 'bill_paid' AND t.correlation_id = b.id) AS paid_txs,
                  (SELECT count(*) FROM payment_bills pb JOIN payment_attempts a
                        ON a.id = pb.attempt_id
                    WHERE pb.bill_id = b.id AND a.status = 'paid'
                      AND a.out_trade_no = b.payment_ref) AS paying_attempts
             FROM bills b"""
    )
    for row in wrong:
        expected = 0 if row["paid_at"] is None else 1
        assert row["paid_txs"] == expected, dict(row)
        if row["paid_at"] is not None:
            assert row["paying_attempts"] == 1, dict(row)


# --------------------------------------------------------------------------- the bridge


@dataclass(frozen=True)
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes


Forward = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, dict[str, str], bytes]]]
_HOP_BY_HOP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}
)


@dataclass
class Bridge:
    """A loopback HTTP/1.1 server forwarding requests under ``prefix`` to ``forward``."""

    port: int
    forward: Forward | None = None
    prefix: str = "/"
    #: answer 200 and keep the request instead of forwarding it
    capture: bool = False
    captured: list[Captured] = field(default_factory=list)
    forwarded: list[tuple[Captured, int]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix.rstrip('/')}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def wait_captured(self, count: int, within: float = 8.0) -> list[Captured]:
        async def enough() -> bool:
            return len(self.captured) >= count

        await eventually(enough, within=within, what=f"{count} captured requests")
        return list(self.captured)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One request per connection (Connection: close): a keep-alive
        # connection would outlive this bridge and carry the next test's
        # notifications to it.
        try:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                raw = await reader.readline()
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip()] = value.strip()
            length = int(
                next((v for k, v in headers.items() if k.lower() == "content-length"), "0")
            )
            body = await reader.readexactly(length)
            status, reply_headers, reply = await self._answer(method, target, headers, body)
            head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
            head += [f"{k}: {v}" for k, v in reply_headers.items() if k.lower() not in _HOP_BY_HOP]
            head += [f"Content-Length: {len(reply)}", "Connection: close"]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if not target.startswith(self.prefix):
            return 410, {}, b"gone"  # a re-send meant for an earlier test
        path = "/" + target[len(self.prefix) :].lstrip("/")
        record = Captured(path=path, headers=headers, body=body)
        if self.capture or self.forward is None:
            self.captured.append(record)
            return 200, {}, b""
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        status, reply_headers, reply = await self.forward(method, path, forwarded, body)
        self.forwarded.append((record, status))
        return status, reply_headers, reply


def client_forward(client: Any) -> Forward:
    """Forward to an httpx client of the app (see ``serve``)."""

    async def forward(
        method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        response = await client.request(method, path, content=body, headers=headers)
        return response.status_code, dict(response.headers.items()), response.content

    return forward


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run an ASGI app's lifespan in this event loop and talk to it through httpx.

    Unlike Litestar's AsyncTestClient, which runs the app on a loop in another
    thread and blocks the caller's loop for the length of each request, this
    lets requests run truly concurrently (ten notifications at once, a retry
    while the first request is in flight) beside the bridge.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await lifespan
