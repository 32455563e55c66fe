"""Tariffs v2 on the real stack (issue 16): a 江南宋城 lot (seeded with the contract's
real rule: the first-hour price again after each 24 h) bills a 25-hour stay 2400 fen
(v1 would say 2100) in the driver's live fee, at the exit lane, in the session and in
the bill; every part a real process (broker, gateway, persister, PostgreSQL, Redis)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from kits import bearer, log_in
from litestar.testing import AsyncTestClient
from pipekit import Device, Pipeline, eventually
from test_gateway_walkthrough import _pub, _settle, _watch

from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.clock import SHANGHAI, FixedClock
from parking.seed.city import DEMO_COMPANY, SONGCHENG_TARIFF

PLATE = "赣B2S024"
PHONE = "13800000241"


def _passage(gate: Device, seq: int, direction: str, at: datetime) -> str:
    return json.dumps(
        {
            "device_id": gate.device_id,
            "seq": seq,
            "observed_at": at.isoformat(),
            # v1.1: sent now from the camera's outbox (the entry waited a day in it)
            "sent_at": datetime.now(SHANGHAI).isoformat(),
            "direction": direction,
            "plate": PLATE,
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"songcheng/{gate.lane_id}/{seq}.jpg",
        },
        ensure_ascii=False,
    )


async def test_a_25_hour_stay_at_songcheng_bills_2400_everywhere(pipeline: Pipeline) -> None:
    lot = await pipeline.fetchval(
        "SELECT lot_id FROM lot_tariffs WHERE tariff_id = $1 AND vehicle_class = 1 "
        "ORDER BY lot_id LIMIT 1",
        SONGCHENG_TARIFF,
    )
    assert isinstance(lot, str)
    entry_gate = await pipeline.add_gate("in1", lot=lot)
    exit_gate = await pipeline.add_gate("out1", lot=lot)
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    left_at = datetime.now(SHANGHAI).replace(microsecond=0) - timedelta(seconds=5)
    entered_at = left_at - timedelta(hours=25)
    clock = FixedClock(entered_at - timedelta(hours=1))
    async with AsyncTestClient(app=create_app(pipeline.settings, clock=clock)) as api:
        # the driver holds the plate (verified) from before the stay
        me = bearer((await log_in(api, pipeline.redis, PHONE))["access_token"])
        account = (await api.get("/v1/me", headers=me)).json()["id"]
        assert (await api.post("/v1/me/vehicles", json={"plate": PLATE}, headers=me)).is_success
        claim = await api.post(
            "/v1/me/plate-claims",
            json={
                "plate": PLATE,
                "evidence": "行驶证 360702123456",
                "photo_ref": "upload/xsz-sc.jpg",
            },
            headers=me,
        )
        assert claim.status_code == 201, claim.text
        operator = bearer(
            tokens.issue(
                pipeline.settings.jwt_key, subject="alice", role=Role.OPERATOR, now=clock.now(),
                ttl=timedelta(minutes=10), company=DEMO_COMPANY,
            )
        )  # fmt: skip
        approved = await api.post(
            f"/v1/operator/plate-claims/{claim.json()['id']}/approve", json={}, headers=operator
        )
        assert approved.status_code == 200, approved.text

        _pub(
            pipeline,
            entry_gate,
            pipeline.topics.passages(lot, "in1"),
            _passage(entry_gate, 1, "in", entered_at),
        )
        clock.set(left_at)
        driver = bearer(
            tokens.issue(
                pipeline.settings.jwt_key, subject=account, role=Role.DRIVER, now=clock.now(),
                ttl=timedelta(minutes=10),
            )
        )  # fmt: skip

        async def inside() -> list[dict[str, Any]]:
            got = await api.get("/v1/me/sessions/current", headers=driver)
            items: list[dict[str, Any]] = got.json()["items"]
            return items

        await eventually(inside, within=30, what="the stay in the driver's live fee")
        [live] = await inside()
        # cycle 1: 400 + 23 x 100 = 2700, capped 2000; cycle 2 starts again: 400
        assert (live["lot_id"], live["fee_fen"]) == (lot, 2400)
        assert live["tariff_id"] == SONGCHENG_TARIFF

    watch = _watch(pipeline, exit_gate, pipeline.topics.commands(lot, "out1"))
    await _settle()
    _pub(
        pipeline,
        exit_gate,
        pipeline.topics.passages(lot, "out1"),
        _passage(exit_gate, 1, "out", left_at),
    )
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    command = json.loads(out)
    assert command["action"] == "open"
    assert "应缴24.00元" in command["display"], command["display"]

    async def billed() -> bool:
        count = await pipeline.fetchval("SELECT count(*) FROM bills WHERE plate = $1", PLATE)
        return bool(count)

    await eventually(billed, within=60, what="the persister to bill the stay")
    session = await pipeline.conn.fetchrow(
        "SELECT status, fee_fen, tariff_id, quote FROM sessions WHERE plate = $1", PLATE
    )
    assert session is not None
    assert (session["status"], session["fee_fen"], session["tariff_id"]) == (
        "closed", 2400, SONGCHENG_TARIFF,
    )  # fmt: skip
    quote = json.loads(session["quote"])
    assert quote["tiers_restart"] == "cycle"
    assert [c["cap_fen"] for c in quote["cycles"]] == [2000, 2000]
    bill = await pipeline.fetchval("SELECT amount_fen FROM bills WHERE plate = $1", PLATE)
    assert bill == 2400
    # no process wrote the plate or the phone unmasked in its log
    for proc in pipeline.procs:
        written = proc.log()
        assert PLATE not in written, proc.name
        assert PHONE not in written, proc.name
