from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from parking import config
from parking.api.app import create_app
from parking.config import Settings


async def _wait_ready(client: AsyncTestClient) -> int:  # type: ignore[type-arg]
    # The broker connection is made in the background just after start-up.
    status = 0
    for _ in range(50):
        status = (await client.get("/readyz")).status_code
        if status == 200:
            break
        await asyncio.sleep(0.1)
    return status


async def test_readyz_is_200_when_postgres_redis_and_broker_answer(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert await _wait_ready(client) == 200
        body = (await client.get("/readyz")).json()
        assert body == {
            "status": "ready",
            "checks": {"postgres": "ok", "redis": "ok", "broker": "ok"},
        }
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_is_503_problem_with_retry_after_when_postgres_is_down(
    settings: Settings,
) -> None:
    broken = config.load({**os.environ, "PARKING_DATABASE_URL": "postgresql://x:y@127.0.0.1:1/z"})
    async with AsyncTestClient(app=create_app(broken)) as client:
        await asyncio.sleep(0.5)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "5"
        problem = response.json()
        assert problem["status"] == 503
        assert "postgres failed" in problem["detail"]
        assert "Traceback" not in response.text
        # Liveness does not depend on the servers.
        assert (await client.get("/healthz")).status_code == 200


async def test_unknown_route_is_a_404_problem(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.get("/v1/nothing-here")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["title"] == "Not found"


def _from(app: Litestar, address: str) -> httpx.AsyncClient:
    """A client whose requests reach the app from ``address`` (the ASGI peer)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40123))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


async def test_metrics_are_prometheus_text_with_request_counts(settings: Settings) -> None:
    # From the machine itself (the default allowed networks are loopback).
    async with _from(create_app(settings), "127.0.0.1") as client:
        await client.get("/healthz")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert "parking_requests_total{" in response.text
        assert 'path="/healthz"' in response.text


@pytest.mark.parametrize("address", ["203.0.113.9", "10.1.2.3", "::ffff:8.8.8.8", "testclient"])
async def test_metrics_are_a_404_to_a_client_outside_the_allowed_networks(
    settings: Settings, address: str
) -> None:
    async with _from(create_app(settings), address) as client:
        response = await client.get("/metrics")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "parking_requests_total" not in response.text


async def test_metrics_through_a_proxy_on_the_machine_are_a_404(settings: Settings) -> None:
    # A reverse proxy on the same host connects from loopback; the header says
    # the request came from outside.
    async with _from(create_app(settings), "127.0.0.1") as client:
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            response = await client.get("/metrics", headers={header: "203.0.113.9"})
            assert response.status_code == 404, header


async def test_metrics_are_served_to_the_configured_networks_only(settings: Settings) -> None:
    app = create_app(config.load({**os.environ, "PARKING_METRICS_ALLOW": "10.0.0.0/8, ::1"}))
    async with _from(app, "10.1.2.3") as scraper, _from(app, "127.0.0.1") as local:
        assert (await scraper.get("/metrics")).status_code == 200
        assert (await local.get("/metrics")).status_code == 404
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        config.load({**os.environ, "PARKING_METRICS_ALLOW": "everyone"})


async def test_openapi_document_lists_the_routes(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        doc = msgspec.json.decode((await client.get("/schema/openapi.json")).content)
        assert doc["openapi"].startswith("3.1")
        assert {"/healthz", "/readyz"} <= set(doc["paths"])


async def test_metrics_over_a_real_listener_follow_the_peer_address(city_db_url: str) -> None:
    # granian hands the socket's peer to the app: from this machine the default
    # allow-list (loopback) admits it, a list without loopback does not.
    for allow, expected in (("127.0.0.1/32,::1/128", 200), ("10.0.0.0/8", 404)):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {
            **os.environ,
            "PARKING_DATABASE_URL": city_db_url,
            "PARKING_API_HOST": "127.0.0.1",
            "PARKING_API_PORT": str(port),
            "PARKING_METRICS_ALLOW": allow,
        }
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "parking",
            "api",
            "--workers",
            "1",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(200):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                assert (await client.get("/metrics")).status_code == expected, allow
                proxied = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
                assert proxied.status_code == 404
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), timeout=20)
