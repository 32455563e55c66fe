"""Binding a plate proves nothing until it is verified (issue 10, point 7): binding is
rate limited, claims need the 行驶证 photo, and an approved claim verifies the binding."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from kits import bearer
from litestar.testing import AsyncTestClient

from parking.api.drivers import BIND_PER_ACCOUNT, BIND_PER_PHONE
from parking.api.rate_limit import RateLimiter
from parking.auth.model import Role

Client = AsyncTestClient  # type: ignore[type-arg]
Login = Callable[[str], Awaitable[dict[str, Any]]]
ALICE, BOB = "13800000091", "13800000092"
PLATE = "赣B9T910"
PHOTO = "upload/xsz-9T910.jpg"


CLAIMS = "/v1/me/plate-claims"


async def test_binding_is_rate_limited_per_account(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    limit = BIND_PER_ACCOUNT[0].limit
    answers = []
    for n in range(limit + 1):
        plate = f"赣B{n:05d}"
        answers.append(
            await api.post("/v1/me/vehicles", json={"plate": plate}, headers=bearer(alice))
        )
        if answers[-1].status_code == 201:
            # Unbinding gives back the room of 5 plates, not the tries.
            vehicle = answers[-1].json()["id"]
            gone = await api.delete(f"/v1/me/vehicles/{vehicle}", headers=bearer(alice))
            assert gone.status_code == 204, gone.text

    assert [a.status_code for a in answers] == [201] * limit + [429]
    refused = answers[-1]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["RateLimit-Policy"] == BIND_PER_ACCOUNT[0].policy
    assert int(refused.headers["Retry-After"]) > 0


async def test_binding_is_rate_limited_per_phone(
    api: Client, login: Login, redis_client: aioredis.Redis
) -> None:
    alice = (await login(ALICE))["access_token"]
    # The phone used its day's binds under an earlier account of the same number.
    limiter = RateLimiter(redis_client)
    for _ in range(BIND_PER_PHONE[0].limit):
        assert (await limiter.hit("bind:phone:+86" + ALICE, BIND_PER_PHONE)).admitted

    refused = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))

    assert refused.status_code == 429, refused.text
    assert refused.headers["RateLimit-Policy"] == BIND_PER_PHONE[0].policy
    mine = await api.get("/v1/me/vehicles", headers=bearer(alice))
    assert mine.json()["items"] == []


async def test_a_claim_needs_the_licence_photo(api: Client, login: Login) -> None:
    alice = (await login(ALICE))["access_token"]
    bob = (await login(BOB))["access_token"]
    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))
    assert bound.status_code == 201

    bare = await api.post(
        CLAIMS, json={"plate": PLATE, "evidence": "行驶证 360702123456"}, headers=bearer(bob)
    )
    spaced = await api.post(
        CLAIMS,
        json={"plate": PLATE, "evidence": "行驶证 360702123456", "photo_ref": "a photo"},
        headers=bearer(bob),
    )
    unnamed = await api.post(
        CLAIMS, json={"evidence": "行驶证 360702123456", "photo_ref": PHOTO}, headers=bearer(bob)
    )

    assert (bare.status_code, spaced.status_code) == (400, 400)
    assert unnamed.status_code == 400, unnamed.text


async def test_an_approved_claim_on_my_own_binding_verifies_it(
    api: Client, login: Login, token_for: Callable[..., str]
) -> None:
    alice = (await login(ALICE))["access_token"]
    operator = bearer(token_for(Role.OPERATOR, "ops-li"))
    bound = await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))
    assert (bound.status_code, bound.json()["trust"]) == (201, "unverified")

    claim = await api.post(
        CLAIMS,
        json={"plate": PLATE, "evidence": "行驶证 360702123456", "photo_ref": PHOTO},
        headers=bearer(alice),
    )
    assert claim.status_code == 201, claim.text
    assert claim.json()["photo_ref"] == PHOTO
    [queued] = (await api.get("/v1/operator/plate-claims", headers=operator)).json()["items"]
    assert (queued["photo_ref"], queued["holder_account_id"]) == (
        PHOTO,
        queued["claimant_account_id"],
    )
    approved = await api.post(
        f"/v1/operator/plate-claims/{queued['id']}/approve", json={}, headers=operator
    )
    assert approved.status_code == 200, approved.text

    [vehicle] = (await api.get("/v1/me/vehicles", headers=bearer(alice))).json()["items"]
    assert (vehicle["trust"], vehicle["bound_at"]) == ("verified", bound.json()["bound_at"])
    assert vehicle["verified_at"] is not None
    again = await api.post(
        CLAIMS,
        json={"plate": PLATE, "evidence": "行驶证 360702123456", "photo_ref": PHOTO},
        headers=bearer(alice),
    )
    assert again.status_code == 409


async def test_a_plate_won_by_a_claim_is_verified_for_its_new_holder(
    api: Client, login: Login, token_for: Callable[..., str]
) -> None:
    alice = (await login(ALICE))["access_token"]
    bob = (await login(BOB))["access_token"]
    operator = bearer(token_for(Role.OPERATOR, "ops-li"))
    await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=bearer(alice))
    claim = await api.post(
        CLAIMS,
        json={"plate": PLATE, "evidence": "行驶证 360702123456", "photo_ref": PHOTO},
        headers=bearer(bob),
    )
    assert claim.status_code == 201, claim.text

    decided = await api.post(
        f"/v1/operator/plate-claims/{claim.json()['id']}/approve", json={}, headers=operator
    )

    assert decided.status_code == 200, decided.text
    [vehicle] = (await api.get("/v1/me/vehicles", headers=bearer(bob))).json()["items"]
    assert (vehicle["plate"], vehicle["trust"]) == (PLATE, "verified")
