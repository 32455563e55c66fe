from __future__ import annotations

import asyncio
import os

import msgspec
from litestar.testing import AsyncTestClient

from parking import config
from parking.api.app import create_app
from parking.config import Settings


async def _wait_ready(client: AsyncTestClient) -> int:  # type: ignore[type-arg]
    # The broker connection is made by paho's thread just after start-up.
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


async def test_metrics_are_prometheus_text_with_request_counts(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        await client.get("/healthz")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert "parking_requests_total{" in response.text
        assert 'path="/healthz"' in response.text


async def test_openapi_document_lists_the_routes(settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        doc = msgspec.json.decode((await client.get("/schema/openapi.json")).content)
        assert doc["openapi"].startswith("3.1")
        assert {"/healthz", "/readyz"} <= set(doc["paths"])
