"""Fixtures of the provider tests: real servers over loopback (see payment_servers.py).

No PostgreSQL: these tests never touch the ``settings`` fixture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta

import httpx
import pytest
from payment_servers import (
    ALIPAY_PORT,
    BEIJING,
    RECEIVER_PORT,
    SANDBOX_PORT,
    FakeAlipayGateway,
    Harness,
    Receiver,
    SandboxControl,
    SandboxProcess,
    running_sandbox,
)

from parking.clock import SystemClock
from parking.payments.providers import alipay as alipay_adapter
from parking.payments.providers import wechat as wechat_adapter


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox-stack"), SANDBOX_PORT) as process:
        yield process


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
async def sandbox_control(
    sandbox: SandboxProcess, http: httpx.AsyncClient
) -> AsyncIterator[SandboxControl]:
    control = SandboxControl(http, sandbox.base_url)
    yield control
    # Misbehaviour never leaks into the next test.
    await control.control("reset")


@pytest.fixture
def wechat(sandbox: SandboxProcess, http: httpx.AsyncClient) -> wechat_adapter.WechatPayProvider:
    config = wechat_adapter.load_config(sandbox.config_path)
    return wechat_adapter.WechatPayProvider.from_config(config, http=http, clock=SystemClock())


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = Receiver(RECEIVER_PORT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def alipay_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAlipayGateway]:
    gateway = FakeAlipayGateway(ALIPAY_PORT, tmp_path_factory.mktemp("alipay"))
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def alipay(
    alipay_gateway: FakeAlipayGateway, http: httpx.AsyncClient
) -> alipay_adapter.AlipayProvider:
    config = alipay_adapter.load_config(alipay_gateway.config_path)
    return alipay_adapter.AlipayProvider.from_config(config, http=http, clock=SystemClock())


@pytest.fixture(params=["wechat-sandbox", "alipay-gateway"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "wechat-sandbox":
        control: SandboxControl = request.getfixturevalue("sandbox_control")
        provider = request.getfixturevalue("wechat")

        async def nothing(_: str) -> None:
            return None

        async def ready(day: date) -> None:
            moment = datetime.combine(day + timedelta(days=1), datetime.min.time(), BEIJING)
            await control.move_to(moment + timedelta(hours=10, seconds=1))

        async def today() -> date:
            return (await control.now()).astimezone(BEIJING).date()

        async def outage(enabled: bool) -> None:
            await control.control("outage", enabled=enabled)

        yield Harness("wechat", provider, nothing, control.pay, ready, today, outage)
        return
    gateway: FakeAlipayGateway = request.getfixturevalue("alipay_gateway")
    provider = request.getfixturevalue("alipay")

    async def scan(no: str) -> None:
        await asyncio.to_thread(gateway.scan, no)

    async def pay(no: str) -> None:
        await asyncio.to_thread(gateway.pay, no)

    async def no_wait(_: date) -> None:
        return None

    async def real_today() -> date:
        return datetime.now(BEIJING).date()

    async def gateway_outage(enabled: bool) -> None:
        gateway.outage = enabled

    yield Harness("alipay", provider, scan, pay, no_wait, real_today, gateway_outage)
    gateway.outage = False
