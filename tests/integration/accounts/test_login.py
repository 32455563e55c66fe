from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import redis.asyncio as aioredis
from click.testing import CliRunner
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.accounts import notifier
from parking.accounts.cli import drivers
from parking.accounts.model import REFRESH_AUDIENCE
from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.config import Settings

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[dict[str, Any]]]
PHONE = "13812345678"


async def test_a_first_login_creates_the_account_of_the_phone(api: Client, login: Login) -> None:
    issued = await login("138 1234 5678")
    assert issued["token_type"] == "Bearer"
    assert issued["expires_in"] == 15 * 60
    assert issued["refresh_expires_in"] == 30 * 24 * 3600
    me = await api.get("/v1/me", headers=bearer(issued["access_token"]))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["id"] == issued["account_id"]
    assert (body["phone"], body["status"], body["vehicles"]) == ("+8613812345678", "active", 0)
    assert issued["account_id"].startswith("acc-")


async def test_every_typed_form_of_a_number_logs_into_one_account(
    api: Client, login: Login, redis_client: aioredis.Redis
) -> None:
    first = await login("+86 138-1234-5678")
    await redis_client.flushall()  # the per-phone send limit allows one code a minute
    second = await login("００８６１３８１２３４５６７８")
    assert first["account_id"] == second["account_id"]


async def test_a_code_is_sent_only_to_mainland_mobile_numbers(api: Client) -> None:
    for phone in ("12345678901", "+1 415 555 0100", "0797-8123456", "1381234567x", "\x00"):
        refused = await api.post("/v1/auth/otp", json={"phone": phone})
        assert refused.status_code == 400, (phone, refused.text)
        assert refused.json()["type"].endswith("/invalid-phone")


async def test_a_code_logs_in_once(api: Client, redis_client: aioredis.Redis) -> None:
    await api.post("/v1/auth/otp", json={"phone": PHONE})
    code = await notifier.latest_code(redis_client, "+86" + PHONE)
    first = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
    again = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
    assert first.status_code == 200
    assert again.status_code == 401
    assert again.json()["type"].endswith("/invalid-code")
    assert await notifier.latest_code(redis_client, "+86" + PHONE) is None


async def test_five_wrong_codes_use_the_code_up(api: Client, redis_client: aioredis.Redis) -> None:
    await api.post("/v1/auth/otp", json={"phone": PHONE})
    code = await notifier.latest_code(redis_client, "+86" + PHONE)
    assert code is not None
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    answers = [
        await api.post("/v1/auth/token", json={"phone": PHONE, "code": wrong}) for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [401] * 5
    assert "ask for a new one" in answers[-1].json()["detail"]
    right = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
    assert right.status_code == 401


async def test_concurrent_guesses_through_two_workers_share_the_attempt_count(
    api: Client, app_settings: Settings, redis_client: aioredis.Redis
) -> None:
    await api.post("/v1/auth/otp", json={"phone": PHONE})
    code = await notifier.latest_code(redis_client, "+86" + PHONE)
    assert code is not None
    wrong = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 9)]
    async with AsyncTestClient(app=create_app(app_settings)) as other:
        answers = await asyncio.gather(
            *(
                (api if i % 2 else other).post(
                    "/v1/auth/token", json={"phone": PHONE, "code": guess}
                )
                for i, guess in enumerate(wrong)
            )
        )
    assert all(a.status_code == 401 for a in answers)
    # 8 wrong guesses but only 5 were counted against the code before it was used up.
    right = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
    assert right.status_code == 401


async def test_the_cli_prints_the_live_code_of_a_phone(
    api: Client, redis_client: aioredis.Redis
) -> None:
    await api.post("/v1/auth/otp", json={"phone": PHONE})
    code = await notifier.latest_code(redis_client, "+86" + PHONE)
    runner = CliRunner()
    shown = await asyncio.to_thread(runner.invoke, drivers, ["otp", "--phone", "138 1234 5678"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip() == code
    await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
    used = await asyncio.to_thread(runner.invoke, drivers, ["otp", "--phone", PHONE])
    assert used.exit_code == 1
    assert "no live code" in used.output


async def test_the_cli_shows_a_drivers_account_and_plates(
    api: Client, login: Login, app_settings: Settings
) -> None:
    issued = await login(PHONE)
    await api.post(
        "/v1/me/vehicles", json={"plate": "赣B12345"}, headers=bearer(issued["access_token"])
    )
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        drivers,
        ["show", "--phone", PHONE],
        env={"PARKING_DATABASE_URL": app_settings.database_url},
    )
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["account"]["id"] == issued["account_id"]
    assert [v["plate"] for v in body["vehicles"]] == ["赣B12345"]


async def test_refreshing_rotates_the_refresh_token(api: Client, login: Login) -> None:
    issued = await login(PHONE)
    renewed = await api.post("/v1/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    pair = renewed.json()
    assert pair["refresh_token"] != issued["refresh_token"]
    assert pair["account_id"] == issued["account_id"]
    assert (await api.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 200
    again = await api.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_login(
    api: Client, login: Login
) -> None:
    issued = await login(PHONE)
    renewed = (
        await api.post("/v1/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    ).json()
    replay = await api.post("/v1/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["type"].endswith("/invalid-refresh-token")
    assert "revoked" in replay.json()["detail"]
    # The thief's copy and the owner's current tokens are all dead now.
    current = await api.post("/v1/auth/refresh", json={"refresh_token": renewed["refresh_token"]})
    assert current.status_code == 401
    for access in (issued["access_token"], renewed["access_token"]):
        assert (await api.get("/v1/me", headers=bearer(access))).status_code == 401


async def test_logout_revokes_the_access_and_refresh_tokens_at_once(
    api: Client, login: Login, redis_client: aioredis.Redis
) -> None:
    mine = await login(PHONE)
    other_phone = await login("13912345678")
    out = await api.post("/v1/auth/logout", headers=bearer(mine["access_token"]))
    assert out.status_code == 204, out.text
    me = await api.get("/v1/me", headers=bearer(mine["access_token"]))
    assert me.status_code == 401
    assert "revoked" in me.json()["detail"]
    # Every route honours the logout, not only the accounts routes.
    quote = await api.post(
        "/v1/tariffs/quote",
        json={
            "lot_id": "GZ-DEMO-01",
            "entry": "2026-11-27T10:00:00+08:00",
            "exit": "2026-11-27T11:00:00+08:00",
        },
        headers=bearer(mine["access_token"]),
    )
    assert quote.status_code == 401
    refreshed = await api.post("/v1/auth/refresh", json={"refresh_token": mine["refresh_token"]})
    assert refreshed.status_code == 401
    # Another login is untouched.
    assert (await api.get("/v1/me", headers=bearer(other_phone["access_token"]))).status_code == 200
    # The denylist entry expires with the token, not later.
    jti = jwt.decode(mine["access_token"], options={"verify_signature": False})["jti"]
    ttl = await redis_client.pttl(f"auth:denied:{jti}")
    assert 0 < ttl <= (15 * 60 + 30) * 1000


async def test_the_two_token_kinds_are_not_interchangeable(api: Client, login: Login) -> None:
    issued = await login(PHONE)
    as_access = await api.get("/v1/me", headers=bearer(issued["refresh_token"]))
    assert as_access.status_code == 401
    as_refresh = await api.post("/v1/auth/refresh", json={"refresh_token": issued["access_token"]})
    assert as_refresh.status_code == 401


async def test_an_expired_refresh_token_is_refused(
    api: Client, settings: Settings, login: Login
) -> None:
    await login(PHONE)
    past = datetime.now(UTC) - timedelta(days=31)
    stale = tokens.issue(
        settings.jwt_key,
        subject="acc-x",
        role=Role.DRIVER,
        now=past,
        ttl=timedelta(days=30),
        audience=REFRESH_AUDIENCE,
    )
    refused = await api.post("/v1/auth/refresh", json={"refresh_token": stale})
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


async def test_a_suspended_account_cannot_log_in_or_refresh(
    api: Client, login: Login, city_db_url: str, redis_client: aioredis.Redis
) -> None:
    issued = await login(PHONE)
    conn = await asyncpg.connect(city_db_url)
    try:
        await conn.execute("UPDATE accounts SET status = 'suspended'")
    finally:
        await conn.close()
    refreshed = await api.post("/v1/auth/refresh", json={"refresh_token": issued["refresh_token"]})
    assert refreshed.status_code == 401
    await redis_client.flushall()
    await api.post("/v1/auth/otp", json={"phone": PHONE})
    code = await notifier.latest_code(redis_client, "+86" + PHONE)
    refused = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/account-suspended")


async def test_codes_are_stored_hashed(api: Client, redis_client: aioredis.Redis) -> None:
    await api.post("/v1/auth/otp", json={"phone": PHONE})
    code = await notifier.latest_code(redis_client, "+86" + PHONE)
    stored = await redis_client.hgetall(f"otp:code:+86{PHONE}")
    assert code is not None
    assert code.encode() not in b"".join(stored.values())
