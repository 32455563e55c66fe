"""Contactless payment (无感支付) switched on and off through the driver API, against the
sandbox provider: ``parking sandbox-pay`` as a real process on a free port, which the
app asks over HTTP (WeChat Pay v3) whether the driver authorised the plate."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from sandboxkit import (
    Client,
    Login,
    SandboxControl,
    SandboxProcess,
    api,
    app_settings,
    bearer,
    sandbox,
)

__all__ = ["api", "app_settings", "sandbox"]
ALICE = "13800000041"
PLATE = "赣B5C222"


@pytest.fixture
async def control(sandbox: SandboxProcess) -> AsyncIterator[SandboxControl]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield SandboxControl(http, sandbox.base_url)


async def alice_with_her_plate(api: Client, login: Login) -> tuple[str, str, str]:
    """Alice's token and account, her plate bound, and the binding's id (routes name the
    binding by it: a plate never goes in a URL)."""
    alice = await login(ALICE)
    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))
    assert bound.status_code == 201, bound.text
    me = await api.get("/v1/me", headers=bearer(alice))
    account: str = me.json()["id"]
    vehicle: str = bound.json()["id"]
    return alice, account, vehicle


async def test_a_driver_turns_contactless_on_and_off_for_their_plate(
    api: Client, login: Login, control: SandboxControl, city_db: asyncpg.Connection
) -> None:
    alice, account, vehicle = await alice_with_her_plate(api, login)
    openid = "o" + uuid.uuid4().hex[:20]
    # She authorised WeChat Pay's vehicle service for the plate (in WeChat, not with us).
    await control.mandate(openid=openid, plate_number=PLATE)

    on = await api.put(
        f"/v1/me/contactless/{vehicle}",
        json={"provider": "wechat", "payer_id": openid},
        headers=bearer(alice),
    )

    assert on.status_code == 200, on.text
    body = on.json()
    assert (body["provider"], body["plate"], body["state"]) == ("wechat", PLATE, "active")
    stored = await city_db.fetchrow(
        "SELECT state, account_id, payer_id FROM contactless_mandates WHERE id = $1", body["id"]
    )
    assert stored is not None
    assert dict(stored) == {"state": "active", "account_id": account, "payer_id": openid}

    off = await api.delete(f"/v1/me/contactless/{vehicle}", headers=bearer(alice))

    assert off.status_code == 204, off.text
    assert (
        await city_db.fetchval("SELECT state FROM contactless_mandates WHERE id = $1", body["id"])
        == "revoked"
    )
    actions = await city_db.fetch(
        "SELECT action, actor FROM audit_log WHERE target = $1 AND action LIKE 'mandate.%' "
        "ORDER BY id",
        f"plate:{PLATE}",
    )
    assert [(a["action"], a["actor"]) for a in actions] == [
        ("mandate.enabled", account),
        ("mandate.disabled", account),
    ]


async def test_contactless_stays_off_until_the_driver_authorised_it_at_the_provider(
    api: Client, login: Login, control: SandboxControl, city_db: asyncpg.Connection
) -> None:
    alice, _, vehicle = await alice_with_her_plate(api, login)

    on = await api.put(
        f"/v1/me/contactless/{vehicle}",
        json={"provider": "wechat", "payer_id": "o" + uuid.uuid4().hex[:20]},
        headers=bearer(alice),
    )

    assert on.status_code == 409, on.text
    assert on.json()["type"].endswith("/mandate-not-authorised")
    assert await city_db.fetchval("SELECT count(*) FROM contactless_mandates") == 0


async def test_from_a_page_the_trip_to_the_provider_and_back_turns_contactless_on(
    api: Client, login: Login, sandbox: SandboxProcess, city_db: asyncpg.Connection
) -> None:
    """The page's way on (no openid known): the provider's sign-in (WeChat 网页授权),
    its authorising page, back; each return address works once and only for a trip the
    platform started."""
    alice, account, vehicle = await alice_with_her_plate(api, login)
    bob = await login("13800000042")
    assert (await api.get("/v1/me/contactless", headers=bearer(alice))).json() == {"items": []}
    start = {"provider": "wechat", "return_to": "/q/tok_EN-1"}
    stolen = await api.post(
        f"/v1/me/contactless/{vehicle}/authorisation", json=start, headers=bearer(bob)
    )
    assert stolen.status_code == 404
    wrong = await api.post(
        f"/v1/me/contactless/{vehicle}/authorisation",
        json={**start, "return_to": "https://elsewhere.example/q/x"},
        headers=bearer(alice),
    )
    assert wrong.status_code == 400

    begun = await api.post(
        f"/v1/me/contactless/{vehicle}/authorisation", json=start, headers=bearer(alice)
    )
    assert begun.status_code == 200, begun.text
    sign_in = httpx.URL(begun.json()["url"])
    assert str(sign_in).startswith(f"{sandbox.base_url}/connect/oauth2/authorize?")
    assert sign_in.params["scope"] == "snsapi_base"
    assert httpx.URL(sign_in.params["redirect_uri"]).path == "/q/contactless/back"
    async with httpx.AsyncClient(trust_env=False) as wechat_user:  # the phone at WeChat
        signed_in = await wechat_user.get(sign_in)
        assert signed_in.status_code == 302
        back = httpx.URL(signed_in.headers["location"])
        assert back.params["state"] == sign_in.params["state"]
        # a code the provider never gave is refused by it: the page says so, nothing stored
        forged = await api.get(
            "/q/contactless/back",
            params={"state": back.params["state"], "code": "forged"},
            follow_redirects=False,
        )
        assert forged.status_code == 502
        assert "text/html" in forged.headers["content-type"]
        onward = await api.get(back.path, params=dict(back.params), follow_redirects=False)
        assert onward.status_code == 302, onward.text
        authorising = httpx.URL(onward.headers["location"])
        assert authorising.path == "/sandbox/mandates/authorize"
        assert authorising.params["plate_number"] == PLATE
        done = httpx.URL(authorising.params["return_url"])
        assert done.path == "/q/contactless/done"
        agreed = await wechat_user.post(
            f"{sandbox.base_url}/sandbox/mandates/authorize", data=dict(authorising.params)
        )
        assert agreed.status_code == 303
        assert agreed.headers["location"] == str(done)

    finished = await api.get(done.path, params=dict(done.params), follow_redirects=False)
    assert finished.status_code == 303
    assert finished.headers["location"].endswith("/q/tok_EN-1?contactless=on")
    mine = (await api.get("/v1/me/contactless", headers=bearer(alice))).json()["items"]
    assert [(m["plate"], m["provider"], m["state"]) for m in mine] == [(PLATE, "wechat", "active")]
    stored = await city_db.fetchrow(
        "SELECT account_id, payer_id FROM contactless_mandates WHERE plate = $1", PLATE
    )
    assert stored is not None
    assert stored["account_id"] == account
    assert stored["payer_id"] == authorising.params["openid"]
    assert (await api.get("/v1/me/contactless", headers=bearer(bob))).json() == {"items": []}
    # used once: the same link again, or a state nobody started, is an expired page
    for path, params in (
        (done.path, dict(done.params)),
        ("/q/contactless/done", {"state": "x" * 32}),
        ("/q/contactless/back", {"state": "x" * 32, "code": "c"}),
    ):
        again = await api.get(path, params=params, follow_redirects=False)
        assert again.status_code == 410
        assert "链接已过期" in again.text


async def test_the_access_log_names_the_route_never_the_path_as_sent(
    api: Client, login: Login, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _, vehicle = await alice_with_her_plate(api, login)
    caplog.set_level(logging.INFO, logger="parking.access")
    off = await api.delete(f"/v1/me/contactless/{vehicle}", headers=bearer(alice))
    assert off.status_code == 204
    lines = [r.msg for r in caplog.records if r.name == "parking.access"]
    assert {"method": "DELETE", "path": "/v1/me/contactless/{vehicle_id}", "status": 204} in [
        {k: line[k] for k in ("method", "path", "status")}
        for line in lines
        if isinstance(line, dict)
    ]
    assert vehicle not in caplog.text
    assert PLATE not in caplog.text
