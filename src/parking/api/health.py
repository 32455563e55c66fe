"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get

from parking.api.infra import infra_of
from parking.api.problems import problem_response

_CHECK_TIMEOUT_S = 2.0
_RETRY_AFTER_S = "5"


class Health(msgspec.Struct, kw_only=True):
    status: str


class Readiness(msgspec.Struct, kw_only=True):
    status: str
    checks: dict[str, str]


@get("/healthz", tags=["health"], summary="The process is alive", sync_to_thread=False)
def healthz() -> Health:
    return Health(status="ok")


@get(
    "/readyz",
    tags=["health"],
    summary="PostgreSQL, Redis and the broker all answer",
    responses={},
)
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    infra = infra_of(request.app)

    async def postgres() -> None:
        async with infra.pool.acquire(timeout=_CHECK_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1")

    async def redis() -> None:
        await infra.redis.ping()

    async def broker() -> None:
        if not infra.publisher.connected:
            raise ConnectionError("not connected to the broker")

    checks: dict[str, str] = {}
    for name, probe in (("postgres", postgres), ("redis", redis), ("broker", broker)):
        try:
            await asyncio.wait_for(probe(), timeout=_CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"failed: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return Response(Readiness(status="ready", checks=checks))
    failed = ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
    return problem_response(
        request,
        status=503,
        slug="not-ready",
        title="Service unavailable",
        detail=failed,
        headers={"Retry-After": _RETRY_AFTER_S},
    )
