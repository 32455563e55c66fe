"""A login code is a secret: kept only as a keyed hash, never logged, shown only by
the local notifier, which runs on the local stack only and says so at start."""

from __future__ import annotations

import io
import logging
import os

import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from parking import config
from parking.accounts import logic, notifier
from parking.api.app import create_app
from parking.config import Settings

PHONE = "13812345678"


async def _every_value(redis: aioredis.Redis) -> list[bytes]:
    """Every key name, string value, hash field and hash value in the test Redis."""
    seen: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        seen.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            seen.append(await redis.get(key))
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                seen.extend((field, value))
    return seen


async def test_redis_keeps_a_login_code_only_as_a_keyed_hash(
    app_settings: Settings, redis_client: aioredis.Redis
) -> None:
    async with AsyncTestClient(app=create_app(app_settings)) as api:
        sent = await api.post("/v1/auth/otp", json={"phone": PHONE})
        assert sent.status_code == 202, sent.text
        code = await notifier.latest_code(redis_client, "+86" + PHONE)
        assert code is not None
        values = await _every_value(redis_client)
        assert values, "the code's digest at least is in Redis"
        assert not [v for v in values if code.encode() in v], "the code is in Redis in clear"
        pepper = logic.code_pepper(app_settings.jwt_key)
        digest = await redis_client.hget(f"otp:code:+86{PHONE}", "digest")
        assert digest == logic.code_digest(pepper, "+86" + PHONE, code).encode()
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        refused = await api.post("/v1/auth/token", json={"phone": PHONE, "code": wrong})
        assert refused.status_code == 401
        taken = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
        assert taken.status_code == 200, taken.text


async def test_a_login_code_never_reaches_the_log(
    app_settings: Settings, redis_client: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = msgspec.structs.replace(app_settings, log_level="debug", log_format="json")
    app = create_app(settings)
    # create_app installed the process's log handler; a second one with the same
    # formatter captures exactly the lines the API process writes.
    root = logging.getLogger()
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(root.handlers[0].formatter)
    root.addHandler(capture)
    try:
        async with AsyncTestClient(app=app) as api:
            sent = await api.post("/v1/auth/otp", json={"phone": PHONE})
            assert sent.status_code == 202, sent.text
            code = await notifier.latest_code(redis_client, "+86" + PHONE)
            assert code is not None
            taken = await api.post("/v1/auth/token", json={"phone": PHONE, "code": code})
            assert taken.status_code == 200, taken.text
    finally:
        root.removeHandler(capture)
    logged = lines.getvalue()
    assert "login code sent (local notifier)" in logged, "the send itself is logged"
    assert code not in logged
    printed = capsys.readouterr()
    assert code not in printed.out + printed.err


async def test_the_local_notifier_says_at_start_that_it_is_for_the_local_stack_only(
    app_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with AsyncTestClient(app=create_app(app_settings)) as api:
        assert (await api.get("/healthz")).status_code == 200
    err = capsys.readouterr().err
    assert "LOCAL NOTIFIER" in err
    assert "local stack only" in err
    assert str(notifier.outbox_dir(app_settings.stack_dir)) in err


def test_the_notifier_is_chosen_by_configuration(settings: Settings) -> None:
    env = dict(os.environ)
    assert isinstance(notifier.from_settings(config.load(env)), notifier.LocalNotifier)
    with pytest.raises(notifier.NotifierNotAllowed, match="not a notifier"):
        notifier.from_settings(config.load({**env, "PARKING_NOTIFIER": "carrier-pigeon"}))


def test_the_local_notifier_refuses_an_api_that_listens_beyond_this_machine(
    settings: Settings,
) -> None:
    public = config.load({**os.environ, "PARKING_API_HOST": "0.0.0.0"})
    with pytest.raises(notifier.NotifierNotAllowed, match="local stack only"):
        notifier.from_settings(public)
