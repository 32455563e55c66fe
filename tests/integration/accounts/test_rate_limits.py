from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from litestar.exceptions import ServiceUnavailableException
from litestar.testing import AsyncTestClient

from parking.api.app import create_app
from parking.api.drivers import SEND_PER_CLIENT, VERIFY_PER_PHONE
from parking.api.rate_limit import RateLimiter, Rule
from parking.config import Settings

Client = AsyncTestClient  # type: ignore[type-arg]
PHONE = "13812345678"


def phone(n: int) -> str:
    return f"139{n:08d}"


async def test_a_second_code_within_a_minute_is_a_429_with_retry_after(api: Client) -> None:
    first = await api.post("/v1/auth/otp", json={"phone": PHONE})
    assert first.status_code == 202
    assert first.headers["RateLimit-Limit"] == "1"
    assert first.headers["RateLimit-Remaining"] == "0"
    assert first.headers["RateLimit-Policy"] == "1;w=60"
    second = await api.post("/v1/auth/otp", json={"phone": "+86 " + PHONE})
    assert second.status_code == 429
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["type"].endswith("/too-many-requests")
    assert 55 <= int(second.headers["Retry-After"]) <= 60
    assert second.headers["RateLimit-Remaining"] == "0"
    assert second.headers["RateLimit-Reset"] == second.headers["Retry-After"]


async def test_one_client_address_may_ask_codes_for_only_so_many_phones(api: Client) -> None:
    limit = SEND_PER_CLIENT[0].limit
    answers = [await api.post("/v1/auth/otp", json={"phone": phone(i)}) for i in range(limit + 2)]
    assert [a.status_code for a in answers] == [202] * limit + [429, 429]
    assert answers[-1].headers["RateLimit-Policy"] == f"{limit};w={SEND_PER_CLIENT[0].window_s}"
    assert int(answers[-1].headers["Retry-After"]) > 0


async def test_the_limit_holds_across_two_api_workers_sharing_redis(
    api: Client, app_settings: Settings
) -> None:
    limit = SEND_PER_CLIENT[0].limit
    async with AsyncTestClient(app=create_app(app_settings)) as other:
        workers = (api, other)
        answers = await asyncio.gather(
            *(
                workers[i % 2].post("/v1/auth/otp", json={"phone": phone(i)})
                for i in range(limit + 10)
            )
        )
        statuses = [a.status_code for a in answers]
        assert statuses.count(202) == limit
        assert statuses.count(429) == 10
        # The per-phone limit, too: a code asked through one worker blocks the other.
        await other.post("/v1/auth/otp", json={"phone": phone(0)})
        assert (await api.post("/v1/auth/otp", json={"phone": phone(0)})).status_code == 429


async def test_guessing_codes_is_limited_per_phone(api: Client) -> None:
    limit = VERIFY_PER_PHONE[0].limit
    answers = [
        await api.post("/v1/auth/token", json={"phone": PHONE, "code": f"{i:06d}"})
        for i in range(limit + 1)
    ]
    assert [a.status_code for a in answers] == [401] * limit + [429]
    assert "Retry-After" in answers[-1].headers


async def test_a_refused_hit_does_not_push_the_window_further(
    redis_client: aioredis.Redis,
) -> None:
    limiter = RateLimiter(redis_client, prefix="rl-test")
    rules = [Rule("burst", 2, 1)]
    decisions = [await limiter.hit("client", rules) for _ in range(5)]
    assert [d.admitted for d in decisions] == [True, True, False, False, False]
    await asyncio.sleep(1.05)
    assert (await limiter.hit("client", rules)).admitted


async def test_every_rule_of_a_subject_must_have_room(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, prefix="rl-test")
    rules = [Rule("minute", 3, 60), Rule("hour", 4, 3600)]
    decisions = [await limiter.hit("phone", rules) for _ in range(5)]
    assert [d.admitted for d in decisions] == [True, True, True, False, False]
    assert decisions[2].remaining == 0
    assert decisions[3].rule.name == "minute"
    keys = sorted(k.decode() for k in await redis_client.keys("rl-test:*"))
    # One hash tag per subject: a call never spans Redis Cluster slots.
    assert keys == ["rl-test:{phone}:hour", "rl-test:{phone}:minute"]


async def test_limits_fail_closed_with_a_503_when_redis_is_unreachable() -> None:
    unreachable = aioredis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        with pytest.raises(ServiceUnavailableException) as refused:
            await RateLimiter(unreachable).hit("client", [Rule("any", 1, 60)])
    finally:
        await unreachable.aclose()
    assert refused.value.headers == {"Retry-After": "5"}
