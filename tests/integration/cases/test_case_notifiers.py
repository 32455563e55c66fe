"""码上反映's notifications leave the platform: SMS and WeChat template messages sent to
the sandbox provider (``parking sandbox-pay`` as a real process, which speaks WeChat's
``/cgi-bin`` API and the SMS gateway strictly and records what it received), from
cases made through the API over real PostgreSQL and Redis. The adapters are the ones
the clock job builds from ``PARKING_CASES_NOTIFY_CONFIG``: the sandbox's own
``notify.json`` with this test's contacts."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from kits import bearer, free_port, log_in
from litestar.testing import AsyncTestClient
from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "payments"))

from payment_servers import SandboxProcess, running_sandbox

from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.cases import channels as wire
from parking.cases import notifiers
from parking.clock import FixedClock, SystemClock
from parking.config import Settings
from parking.seed.city import DEMO_LOT

Client = AsyncTestClient[Any]
STAFF = f"lot_staff:{DEMO_LOT}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), free_port()) as process:
        yield process


@pytest.fixture
def clock() -> FixedClock:
    # Now (not a date of its own): the clock job's run in the last test reads real time.
    return FixedClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def app(
    app_settings: Settings, redis_client: Any, clock: FixedClock
) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(app_settings, clock=clock)) as client:
        yield client


@pytest.fixture
async def sandbox_http(sandbox: SandboxProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.base_url, trust_env=False) as http:
        yield http
        await control(http, action="reset")


class Person(msgspec.Struct, frozen=True):
    phone: str
    openid: str


def someone() -> Person:
    """A phone and an openid of this test only (the sandbox's record is shared)."""
    return Person(
        phone="+86139" + "".join(secrets.choice("0123456789") for _ in range(8)),
        openid="o" + secrets.token_urlsafe(21)[:27],
    )


def read_secret(path: str) -> str:
    return Path(path).read_text(encoding="utf-8").strip()


def sandbox_config(sandbox: SandboxProcess, **changes: Any) -> wire.NotifyConfig:
    """The ``notify.json`` the sandbox wrote (its URLs, keys and templates), with
    ``changes`` (this test's contacts)."""
    config = wire.load_config(sandbox.data_dir / "notify.json")
    return msgspec.structs.replace(config, **changes)


@pytest.fixture
async def provider_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as http:
        yield http


def outbound(
    sandbox: SandboxProcess, http: httpx.AsyncClient, **changes: Any
) -> notifiers.Outbound:
    return notifiers.build(sandbox_config(sandbox, **changes), http, SystemClock())


async def control(http: httpx.AsyncClient, **command: Any) -> Any:
    answer = await http.post("/sandbox/messages/control", json=command)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def calls(http: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    answer = await http.get("/sandbox/messages", params=query)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def staff(settings: Settings, clock: FixedClock, role: Role, scope: str) -> dict[str, str]:
    return bearer(
        tokens.issue(
            settings.jwt_key,
            subject=f"{role.value}-{scope}",
            role=role,
            now=clock.now(),
            ttl=timedelta(hours=12),
            scope=scope,
        )
    )


async def report(app: Client, redis_client: Any, phone: str, **body: Any) -> str:
    driver = bearer((await log_in(app, redis_client, phone))["access_token"])
    made = await app.post("/v1/reports", json={"lot_id": DEMO_LOT, **body}, headers=driver)
    assert made.status_code == 201, made.text
    case_id: str = made.json()["id"]
    return case_id


async def rows(conn: asyncpg.Connection, case_id: str) -> list[dict[str, Any]]:
    found = await conn.fetch(
        "SELECT recipient, kind, delivery, channels, attempts, last_error, sent, delivered_at, "
        "next_attempt_at FROM case_notifications WHERE case_id = $1 ORDER BY id",
        case_id,
    )
    return [dict(r) for r in found]


async def test_a_case_dispatched_to_a_lots_staff_reaches_their_phone_and_their_wechat(
    app: Client,
    redis_client: Any,
    city_db: asyncpg.Connection,
    clock: FixedClock,
    sandbox: SandboxProcess,
    sandbox_http: httpx.AsyncClient,
    provider_http: httpx.AsyncClient,
) -> None:
    wang = someone()
    channels = outbound(
        sandbox,
        provider_http,
        contacts={STAFF: wire.Contact(phones=[wang.phone], openids=[wang.openid])},
    )
    case_id = await report(
        app, redis_client, "13800000601", category="space_blocked", text="3号车位被杂物占了"
    )
    with capture_logs() as logged:
        done = await channels.deliver(city_db, now=clock.now(), limit=10)
    assert done["delivered"] == 1

    (sms,) = await calls(sandbox_http, to=wang.phone)
    assert (sms["api"], sms["outcome"], sms["template"]) == ("sms_send", "ok", "SMS_CB_CASE")
    assert sms["fields"]["case"] == case_id
    assert sms["fields"]["lot"] == DEMO_LOT
    assert sms["text"].startswith("【畅泊停车】码上反映：小事工单")
    (wechat,) = await calls(sandbox_http, to=wang.openid)
    assert (wechat["api"], wechat["outcome"]) == ("template_send", "ok")
    assert wechat["fields"]["character_string1"] == case_id
    assert wechat["fields"]["phrase3"] == "新工单"
    assert wechat["fields"]["thing4"] == "车位被占"

    (row,) = await rows(city_db, case_id)
    assert (row["recipient"], row["kind"], row["delivery"]) == (STAFF, "dispatched", "delivered")
    assert (row["channels"], row["attempts"], row["last_error"]) == (["sms", "wechat"], 1, None)
    assert row["delivered_at"] == clock.now()
    # nothing personal in the outbox or the log: hashes and masked forms only
    for personal in (wang.phone, wang.openid):
        assert personal not in repr(row)
        assert personal not in repr(logged)
    assert f"{wang.phone[:6]}****{wang.phone[-4:]}" in repr(logged)
    # delivered once: a later run sends nothing more
    clock.advance(timedelta(hours=1))
    assert not any((await channels.deliver(city_db, now=clock.now(), limit=10)).values())
    assert len(await calls(sandbox_http, to=wang.phone)) == 1


async def test_a_refused_access_token_is_refreshed_once(
    app: Client,
    redis_client: Any,
    city_db: asyncpg.Connection,
    clock: FixedClock,
    sandbox: SandboxProcess,
    sandbox_http: httpx.AsyncClient,
    provider_http: httpx.AsyncClient,
) -> None:
    li = someone()
    channels = outbound(
        sandbox, provider_http, sms=None, contacts={STAFF: wire.Contact(openids=[li.openid])}
    )
    await report(app, redis_client, "13800000602", category="space_blocked", text="车位被占")
    tokens_before = len(await calls(sandbox_http, api="token"))
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["delivered"] == 1
    assert len(await calls(sandbox_http, api="token")) == tokens_before + 1

    # the token expires at WeChat before our margin says so: 42001, a new token, sent
    await control(sandbox_http, action="expire_tokens")
    await report(app, redis_client, "13800000603", category="facility_damage", text="护栏坏了")
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["delivered"] == 1
    assert [c["outcome"] for c in await calls(sandbox_http, to=li.openid)] == ["ok", "42001", "ok"]
    assert len(await calls(sandbox_http, api="token")) == tokens_before + 2

    # a token refused again after the refresh is not refreshed in a loop: the error stays
    await control(sandbox_http, action="fail", channel="wechat", code="40001", count=2)
    case_id = await report(
        app, redis_client, "13800000604", category="illegal_parking", text="占用消防通道"
    )
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["pending"] == 1
    assert [c["outcome"] for c in await calls(sandbox_http, to=li.openid)][3:] == ["40001"] * 2
    assert len(await calls(sandbox_http, api="token")) == tokens_before + 3
    (row,) = await rows(city_db, case_id)
    assert row["delivery"] == "pending"
    assert "errcode 40001" in row["last_error"]


async def test_a_failing_channel_leaves_the_notification_undelivered_until_a_later_run(
    app: Client,
    redis_client: Any,
    city_db: asyncpg.Connection,
    clock: FixedClock,
    sandbox: SandboxProcess,
    sandbox_http: httpx.AsyncClient,
    provider_http: httpx.AsyncClient,
) -> None:
    zhou = someone()
    channels = outbound(
        sandbox,
        provider_http,
        contacts={STAFF: wire.Contact(phones=[zhou.phone], openids=[zhou.openid])},
    )
    case_id = await report(
        app, redis_client, "13800000605", category="space_blocked", text="车位被锁"
    )
    await control(sandbox_http, action="fail", channel="sms", count=1)
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["pending"] == 1
    (row,) = await rows(city_db, case_id)
    assert (row["delivery"], row["attempts"], row["delivered_at"]) == ("pending", 1, None)
    assert row["last_error"] == (
        f"sms {zhou.phone[:6]}****{zhou.phone[-4:]}: isp.SYSTEM_ERROR: System error"
    )
    assert row["next_attempt_at"] == clock.now() + wire.BACKOFF[0]
    assert len(row["sent"]) == 1  # WeChat got it

    # not before its retry time
    assert not any((await channels.deliver(city_db, now=clock.now(), limit=10)).values())
    clock.advance(timedelta(minutes=2))
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["delivered"] == 1
    assert [c["outcome"] for c in await calls(sandbox_http, to=zhou.phone)] == [
        "isp.SYSTEM_ERROR",
        "ok",
    ]
    # the address that had it already is not sent it again
    assert [c["outcome"] for c in await calls(sandbox_http, to=zhou.openid)] == ["ok"]
    (row,) = await rows(city_db, case_id)
    assert (row["delivery"], row["attempts"], row["last_error"]) == ("delivered", 2, None)


async def test_a_channel_that_keeps_failing_gives_up_after_max_attempts(
    app: Client,
    redis_client: Any,
    city_db: asyncpg.Connection,
    clock: FixedClock,
    sandbox: SandboxProcess,
    sandbox_http: httpx.AsyncClient,
    provider_http: httpx.AsyncClient,
) -> None:
    sun = someone()
    channels = outbound(
        sandbox,
        provider_http,
        wechat=None,
        max_attempts=2,
        contacts={STAFF: wire.Contact(phones=[sun.phone])},
    )
    case_id = await report(app, redis_client, "13800000606", category="space_blocked", text="堵")
    await control(sandbox_http, action="fail", channel="sms", count=10, code="isv.DAY_LIMIT")
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["pending"] == 1
    clock.advance(timedelta(minutes=2))
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["failed"] == 1
    (row,) = await rows(city_db, case_id)
    assert (row["delivery"], row["attempts"], row["next_attempt_at"]) == ("failed", 2, None)
    assert "isv.DAY_LIMIT" in row["last_error"]
    clock.advance(timedelta(hours=2))
    assert not any((await channels.deliver(city_db, now=clock.now(), limit=10)).values())
    assert len(await calls(sandbox_http, to=sun.phone)) == 2


async def test_a_recipient_with_no_address_is_recorded_as_such_and_not_retried(
    app: Client,
    redis_client: Any,
    city_db: asyncpg.Connection,
    clock: FixedClock,
    sandbox: SandboxProcess,
    provider_http: httpx.AsyncClient,
) -> None:
    # the district's team has no entry in this directory
    channels = outbound(sandbox, provider_http, contacts={})
    case_id = await report(
        app, redis_client, "13800000607", lane_id="out1", category="gate_fault", text="不抬杆"
    )
    assert (await channels.deliver(city_db, now=clock.now(), limit=10))["no_address"] == 1
    (row,) = await rows(city_db, case_id)
    assert (row["recipient"], row["delivery"], row["attempts"]) == (
        "district_team:ZG",
        "no_address",
        1,
    )
    assert row["last_error"] == "no address for district_team:ZG on sms, wechat"
    clock.advance(timedelta(hours=1))
    assert not any((await channels.deliver(city_db, now=clock.now(), limit=10)).values())
    assert (await rows(city_db, case_id))[0]["attempts"] == 1


async def test_a_reporter_gets_an_sms_at_their_accounts_phone_when_their_case_is_resolved(
    app: Client,
    redis_client: Any,
    app_settings: Settings,
    city_db: asyncpg.Connection,
    clock: FixedClock,
    sandbox: SandboxProcess,
    sandbox_http: httpx.AsyncClient,
    provider_http: httpx.AsyncClient,
) -> None:
    channels = outbound(sandbox, provider_http, contacts={})
    case_id = await report(
        app, redis_client, "13800000608", category="space_blocked", text="杂物堆在车位上"
    )
    lot_staff = staff(app_settings, clock, Role.LOT_STAFF, DEMO_LOT)
    for action in ("accept", "resolve"):
        clock.advance(timedelta(minutes=5))
        moved = await app.post(
            f"/v1/cases/{case_id}/{action}", json={"note": "已清走"}, headers=lot_staff
        )
        assert moved.status_code == 200, moved.text
    done = await channels.deliver(city_db, now=clock.now(), limit=10)
    assert (done["delivered"], done["no_address"]) == (1, 1)  # the staff have no address here

    (sms,) = await calls(sandbox_http, to="+8613800000608")
    assert (sms["template"], sms["outcome"]) == ("SMS_CB_RESOLVED", "ok")
    assert sms["text"] == (
        f"【畅泊停车】您在{DEMO_LOT}反映的问题（工单{case_id}）已办结，请在畅泊确认或重开。"
    )
    resolved = [r for r in await rows(city_db, case_id) if r["kind"] == "resolved"]
    assert [(r["delivery"], r["channels"]) for r in resolved] == [("delivered", ["sms"])]
    assert resolved[0]["recipient"].startswith("account:acc-")


async def test_the_clock_job_sends_what_is_due_when_channels_are_configured(
    app: Client,
    redis_client: Any,
    app_settings: Settings,
    city_db: asyncpg.Connection,
    sandbox: SandboxProcess,
    sandbox_http: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    zhao = someone()
    config = sandbox_config(
        sandbox, contacts={STAFF: wire.Contact(phones=[zhao.phone], openids=[zhao.openid])}
    )
    path = tmp_path / "notify.json"
    path.write_bytes(msgspec.json.encode(config))
    case_id = await report(app, redis_client, "13800000609", category="space_blocked", text="占")
    tick = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "parking", "cases", "tick", "--once",
        env={
            **os.environ,
            "PARKING_DATABASE_URL": app_settings.database_url,
            "PARKING_CASES_NOTIFY_CONFIG": str(path),
            "PARKING_LOG_FORMAT": "json",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(tick.communicate(), timeout=60)
    assert tick.returncode == 0, err.decode()
    done = json.loads(out.decode().strip().splitlines()[-1])
    assert done["notifications_delivered"] == 1
    assert [c["outcome"] for c in await calls(sandbox_http, to=zhao.phone)] == ["ok"]
    assert [c["outcome"] for c in await calls(sandbox_http, to=zhao.openid)] == ["ok"]
    assert (await rows(city_db, case_id))[0]["delivery"] == "delivered"
    assert zhao.phone.encode() not in out + err


async def test_the_sandbox_refuses_what_wechat_and_the_sms_gateway_would_refuse(
    sandbox: SandboxProcess, sandbox_http: httpx.AsyncClient
) -> None:
    config = sandbox_config(sandbox)
    assert config.wechat is not None
    assert config.sms is not None
    secret = read_secret(config.wechat.app_secret_path)
    token_query = {"grant_type": "client_credential", "appid": config.wechat.appid}
    refused = await sandbox_http.get("/cgi-bin/token", params={**token_query, "secret": "x"})
    assert refused.json()["errcode"] == 40001
    token = (
        await sandbox_http.get("/cgi-bin/token", params={**token_query, "secret": secret})
    ).json()["access_token"]
    send: dict[str, Any] = {
        "touser": someone().openid,
        "template_id": "Sbx7Yq2cCaseNoticeT1mPl4tE-0001-kw5qZrT8vLmN",
        "data": {
            "character_string1": {"value": "cs-1"},
            "thing2": {"value": DEMO_LOT},
            "phrase3": {"value": "新工单"},
            "thing4": {"value": "车位被占"},
            "time5": {"value": "2026-12-04 09:30"},
        },
    }

    async def template(body: dict[str, Any], access_token: str | None = token) -> int:
        params = {} if access_token is None else {"access_token": access_token}
        answer = await sandbox_http.post("/cgi-bin/message/template/send", params=params, json=body)
        assert answer.status_code == 200
        errcode: int = answer.json()["errcode"]
        return errcode

    assert await template(send) == 0
    assert await template(send, access_token=None) == 41001
    assert await template(send, access_token="not-a-token") == 40001
    assert await template({**send, "colour": "red"}) == 47001
    assert await template({**send, "template_id": "nope"}) == 40037
    assert await template({**send, "touser": "13800000000"}) == 40003
    assert await template({**send, "data": {**send["data"], "thing2": {"value": "长" * 21}}}) == (
        47003
    )
    del send["data"]["time5"]
    assert await template(send) == 47003

    sms = {
        "phone_number": "+8613900000009",
        "sign_name": "畅泊停车",
        "template_code": "SMS_CB_RESOLVED",
        "template_params": {"lot": DEMO_LOT, "case": "cs-1"},
        "out_id": "t",
    }
    key = read_secret(config.sms.access_key_secret_path).encode()

    async def gateway(
        body: dict[str, Any], *, nonce: str | None = None, secret: bytes = key, skew: int = 0
    ) -> tuple[int, str]:
        raw = json.dumps(body).encode()
        stamp = int(datetime.now(UTC).timestamp()) + skew
        nonce = nonce or secrets.token_hex(16)
        string = wire.sms_string_to_sign(
            timestamp=stamp, nonce=nonce, method="POST", path="/sms/v1/send", body=raw
        )
        signature = base64.b64encode(hmac.new(secret, string, "sha256").digest()).decode()
        assert config.sms is not None
        authorization = (
            f"CB-HMAC-SHA256 KeyId={config.sms.access_key_id},Timestamp={stamp},"
            f"Nonce={nonce},Signature={signature}"
        )
        answer = await sandbox_http.post(
            "/sms/v1/send",
            content=raw,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
        )
        return answer.status_code, answer.json()["code"]

    used = secrets.token_hex(16)
    assert await gateway(sms, nonce=used) == (200, "OK")
    assert await gateway(sms, nonce=used) == (403, "SignatureNonceUsed")
    assert await gateway(sms, secret=b"wrong") == (403, "SignatureDoesNotMatch")
    assert await gateway(sms, skew=-600) == (403, "InvalidTimeStamp.Expired")
    assert await gateway({**sms, "extra": 1}) == (400, "InvalidParameter")
    assert await gateway({**sms, "phone_number": "13900000009"}) == (
        200,
        "isv.MOBILE_NUMBER_ILLEGAL",
    )
    assert await gateway({**sms, "sign_name": "别的"}) == (200, "isv.SMS_SIGNATURE_ILLEGAL")
    assert await gateway({**sms, "template_params": {"lot": DEMO_LOT}}) == (
        200,
        "isv.TEMPLATE_MISSING_PARAMETERS",
    )
    assert await gateway({**sms, "template_params": {"lot": "长" * 36, "case": "c"}}) == (
        200,
        "isv.PARAM_LENGTH_LIMIT",
    )
