"""Fixtures of the payment-flow tests: the sandbox provider over real HTTP, a fresh database
with a tiny city, the real API app behind a loopback bridge the sandbox notifies.

The sandbox is started with the helpers of ../payments (imported, not copied)
on its own port, so these tests run beside the provider tests.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from litestar import Litestar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))

from payflow_support import Bridge, build_city, client_forward, serve
from payment_servers import SandboxControl, SandboxProcess, running_sandbox

from parking import config
from parking.api.app import create_app
from parking.clock import SystemClock
from parking.config import Settings
from parking.payments.providers import wechat as wechat_adapter

#: Ports 8081-8089 are this suite's (the provider tests use 8061-8063), moved
#: with the test stack's ports (TEST_PORT_BASE) so two checkouts run it at once.
_PORT_SHIFT = int(os.environ.get("PARKING_SANDBOX_PORT", "8020")) - 8020
FLOW_SANDBOX_PORT = 8081 + _PORT_SHIFT
BRIDGE_PORT = 8082 + _PORT_SHIFT
RECEIVER_PORT = 8083 + _PORT_SHIFT


@pytest.fixture(scope="session")
def flow_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("payflow-sandbox"), FLOW_SANDBOX_PORT) as process:
        yield process


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
async def control(
    flow_sandbox: SandboxProcess, http: httpx.AsyncClient
) -> AsyncIterator[SandboxControl]:
    sandbox = SandboxControl(http, flow_sandbox.base_url)
    await sandbox.control("reset")
    yield sandbox
    # Misbehaviour never leaks into the next test.
    await sandbox.control("reset")


@pytest.fixture
def wechat(
    flow_sandbox: SandboxProcess, http: httpx.AsyncClient
) -> wechat_adapter.WechatPayProvider:
    config_ = wechat_adapter.load_config(flow_sandbox.config_path)
    return wechat_adapter.WechatPayProvider.from_config(config_, http=http, clock=SystemClock())


@pytest.fixture
async def city_conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's fresh database, holding the tiny city."""
    conn = await asyncpg.connect(db_url)
    try:
        await build_city(conn)
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pool(city_conn: asyncpg.Connection, db_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(db_url, min_size=1, max_size=12)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    """The notify URL's server; its prefix is this test's, so a late re-send meant for an
    earlier test is turned away instead of reaching this test's database."""
    server = Bridge(BRIDGE_PORT, prefix=f"/t/{uuid.uuid4().hex[:10]}")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def api_app(
    settings: Settings,
    db_url: str,
    flow_sandbox: SandboxProcess,
    bridge: Bridge,
    monkeypatch: pytest.MonkeyPatch,
) -> Litestar:
    """The real app over this test's database, its WeChat adapter on the sandbox, its notify
    URL the bridge's."""
    monkeypatch.setenv("PARKING_WECHATPAY_CONFIG", str(flow_sandbox.config_path))
    monkeypatch.setenv("PARKING_NOTIFY_BASE_URL", bridge.base_url)
    return create_app(config.load({**os.environ, "PARKING_DATABASE_URL": db_url}))


@pytest.fixture
async def api(
    api_app: Litestar, city_conn: asyncpg.Connection, bridge: Bridge
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running app; the bridge forwards the sandbox's notifications to it."""
    async with serve(api_app) as client:
        bridge.forward = client_forward(client)
        yield client
        bridge.forward = None
