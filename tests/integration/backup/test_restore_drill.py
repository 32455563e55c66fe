"""The restore drill: a stack with WAL archiving, money written through the platform's
services before and after a base backup, `parking restore` to a moment in between.

The drill runs its own source stack (in the test's temporary directory, on free
ports): turning archiving on restarts PostgreSQL, which the shared test stack
must never do under other tests.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments_flow"))

from payflow_support import LOT, TARIFF, build_city

from parking import config
from parking.bills import service as bills
from parking.db import migrate as migrations
from parking.ledger import service as ledger
from parking.occupancy import store as core
from parking.payments import notifications, pay
from parking.payments.model import AttemptKind, Payer
from parking.payments.port import OrderState, OrderStatus
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

_seq = itertools.count(1)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stack_env(stack_dir: Path, ports: list[int]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PARKING_DATABASE_URL", "PARKING_OWNER_DATABASE_URL", "PARKING_REDIS_URL")
    }
    env.update(
        PARKING_STACK_DIR=str(stack_dir),
        PARKING_PG_PORT=str(ports[0]),
        PARKING_REDIS_PORT=str(ports[1]),
        PARKING_MQTT_PORT=str(ports[2]),
        PARKING_MQTT_PLATFORM_PORT=str(ports[3]),
    )
    return env


def _parking(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "parking", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, f"parking {' '.join(args)}: {done.stderr}"
    return done.stdout


class FakeWechat:
    """The provider as the settle path sees it: only its name (no refund is owed here)."""

    name = "wechat"


async def _session(conn: asyncpg.Connection, session_id: str, plate: str, at: datetime) -> None:
    async with conn.transaction():
        await sessions.record(
            conn,
            [
                SessionChange(
                    id=session_id,
                    lot_id=LOT,
                    status=SessionStatus.OPEN,
                    plate=plate,
                    entry_at=at,
                    entry_device_id="drill-in",
                    entry_seq=next(_seq),
                )
            ],
            now=at,
        )


async def _leave(
    conn: asyncpg.Connection, session_id: str, plate: str, at: datetime, fee: int
) -> str:
    async with conn.transaction():
        opened = await sessions.record(
            conn,
            [
                SessionChange(
                    id=session_id,
                    lot_id=LOT,
                    status=SessionStatus.CLOSED,
                    plate=plate,
                    exit_at=at,
                    exit_device_id="drill-out",
                    exit_seq=next(_seq),
                    fee_fen=fee,
                    tariff_id=TARIFF,
                    tariff_version=1,
                    quote=b'{"total_fen": 0, "lines": []}',
                )
            ],
            now=at,
        )
    assert len(opened) == 1
    return opened[0]


async def _pay(pool: asyncpg.Pool, bill_id: str, plate: str, at: datetime) -> None:
    async with pool.acquire() as conn, conn.transaction():
        attempt = await pay.open_attempt(
            conn,
            "wechat",
            [bill_id],
            payer=Payer(plate=plate),
            idempotency=None,
            kind=AttemptKind.NATIVE,
            expires_at=at + timedelta(minutes=15),
            now=at,
        )
    status = OrderStatus(
        provider="wechat",
        out_trade_no=attempt.out_trade_no,
        state=OrderState.PAID,
        provider_state="SUCCESS",
        amount_fen=attempt.amount_fen,
        paid_fen=attempt.amount_fen,
        transaction_id=f"wx-{uuid.uuid4().hex[:16]}",
        succeeded_at=at,
    )
    await notifications.settle_from_status(pool, FakeWechat(), status, now=at)  # type: ignore[arg-type]


_TABLES = ("sessions", "bills", "payment_attempts", "ledger_transactions", "ledger_postings")


async def _rows(conn: asyncpg.Connection) -> dict[str, list[str]]:
    # Each table's rows as text, in a stable order: compared whole, so a row too
    # many, too few or different fails the drill.
    return {
        table: [r[0] for r in await conn.fetch(f"SELECT t::text FROM {table} t ORDER BY t::text")]
        for table in _TABLES
    }


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    # As root the clusters run as the postgres user, which must reach their folders;
    # pytest makes its temporary folders private (0700).
    for folder in (tmp_path, *tmp_path.parents[:2]):
        folder.chmod(0o755)
    ports = _free_ports(8)
    source = _stack_env(tmp_path / "source", ports[:4])
    restored = _stack_env(tmp_path / "restored", ports[4:])
    try:
        yield source, restored
    finally:
        for env in (restored, source):
            if Path(env["PARKING_STACK_DIR"]).exists():
                subprocess.run(
                    [sys.executable, "-m", "parking", "stack", "down"],
                    env=env,
                    capture_output=True,
                    check=False,
                )


async def test_a_restore_to_a_moment_between_writes_has_exactly_that_moments_rows_and_occupancy(
    stacks: tuple[dict[str, str], dict[str, str]],
) -> None:
    source_env, restored_env = stacks
    _parking(source_env, "stack", "up", "--backups")
    source = config.load(source_env)
    owner = await asyncpg.connect(source.owner_database_url)
    try:
        await migrations.migrate(owner)
    finally:
        await owner.close()
    pool = await asyncpg.create_pool(source.database_url, min_size=1, max_size=4)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await build_city(conn)
            t0 = datetime.now(UTC) - timedelta(hours=3)
            # Before the base backup: two cars in, one out and paid.
            await _session(conn, "s-1", "赣B10001", t0)
            await _session(conn, "s-2", "赣B10002", t0)
            await _session(conn, "s-3", "赣B10003", t0)
            paid_early = await _leave(conn, "s-3", "赣B10003", t0 + timedelta(hours=1), 500)
        await _pay(pool, paid_early, "赣B10003", t0 + timedelta(hours=1))

        _parking(source_env, "backup", "now")

        async with pool.acquire() as conn:
            # After it, still before the moment: one more in, one out (owed).
            await _session(conn, "s-4", "赣B10004", t0 + timedelta(hours=2))
            owed = await _leave(conn, "s-1", "赣B10001", t0 + timedelta(hours=2), 700)
            async with conn.transaction(isolation="repeatable_read"):
                moment = await conn.fetchval("SELECT now()")
                expected = await _rows(conn)
        # After the moment: the owed bill paid, another car out, another in.
        await _pay(pool, owed, "赣B10001", t0 + timedelta(hours=2, minutes=30))
        async with pool.acquire() as conn:
            late_bill = await _leave(conn, "s-2", "赣B10002", t0 + timedelta(hours=2), 300)
            await _session(conn, "s-5", "赣B10005", t0 + timedelta(hours=2))
    finally:
        await pool.close()

    out = _parking(
        source_env,
        "restore",
        "--to",
        moment.isoformat(),
        "--into",
        restored_env["PARKING_STACK_DIR"],
        "--pg-port",
        restored_env["PARKING_PG_PORT"],
        "--redis-port",
        restored_env["PARKING_REDIS_PORT"],
        "--mqtt-port",
        restored_env["PARKING_MQTT_PORT"],
        "--mqtt-platform-port",
        restored_env["PARKING_MQTT_PLATFORM_PORT"],
    )
    report = json.loads(out)
    assert report["occupancy_rebuilt"]["open_sessions"] == 2

    restored = config.load(restored_env)
    conn = await asyncpg.connect(restored.database_url)
    try:
        assert await _rows(conn) == expected
        open_ids = {
            r["id"] for r in await conn.fetch("SELECT id FROM sessions WHERE status = 'open'")
        }
        assert open_ids == {"s-2", "s-4"}
        assert (await bills.get(conn, paid_early)).status.value == "paid"
        assert (await bills.get(conn, owed)).status.value == "open"
        assert await conn.fetchval("SELECT count(*) FROM bills WHERE id = $1", late_bill) == 0
        assert (await ledger.trial_balance(conn)).total_fen == 0
        assert (await bills.receivables_check(conn)).equal
    finally:
        await conn.close()
    redis = aioredis.Redis.from_url(restored.redis_url)
    try:
        counts = await core.live_counts(redis, [LOT])
    finally:
        await redis.aclose()
    assert counts[LOT].sessions == 2
    assert counts[LOT].capacity == 100
