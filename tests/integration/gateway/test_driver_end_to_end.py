"""Issue 6 end to end, every part a real process: MQTT entry and exit at GZ-DEMO-01
(gates publishing with their own credentials, `parking gateway`, `parking
persister`), the driver's bill in the API (`parking api` under granian), paid
through the sandbox provider (`parking sandbox-pay`, signed and encrypted
notifications), the arrears hold lifted at once, the trial balance 0."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from pipekit import DEMO, Device, Pipeline, eventually
from test_gateway_walkthrough import _pub, _settle, _watch

from parking.accounts import notifier
from parking.auth import tokens as tokens_module
from parking.auth.model import Role
from parking.clock import SHANGHAI
from parking.seed.city import DEMO_COMPANY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))
from payment_servers import SandboxProcess

PLATE = "赣B6E2E1"
PHONE = "13800000061"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except Exception:
        return 0


def _passage(gate: Device, seq: int, direction: str, at: datetime) -> str:
    return json.dumps(
        {
            "device_id": gate.device_id,
            "seq": seq,
            "observed_at": at.isoformat(),
            "direction": direction,
            "plate": PLATE,
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"gz-demo-01/{gate.lane_id}/{seq}.jpg",
        },
        ensure_ascii=False,
    )


async def _lane(
    pipe: Pipeline, gate: Device, seq: int, direction: str, at: datetime
) -> dict[str, str]:
    """Publish a passage as the gate and return the command the lane got back."""
    assert gate.lane_id is not None
    watch = _watch(pipe, gate, pipe.topics.commands(DEMO, gate.lane_id))
    await _settle()
    _pub(pipe, gate, pipe.topics.passages(DEMO, gate.lane_id), _passage(gate, seq, direction, at))
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    command: dict[str, str] = json.loads(out)
    return command


async def test_enter_leave_see_the_bill_pay_in_the_sandbox_and_enter_again(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    s = pipeline.settings
    api_port, sandbox_port = s.api_port + 2, s.sandbox_port + 2
    # Arrears hold at once at this lot (7 days by default), so paying must lift it.
    await pipeline.conn.execute(
        "UPDATE lots SET arrears_hold_after = interval '0' WHERE id = $1", DEMO
    )
    sandbox = SandboxProcess(tmp_path / "sandbox-stack", sandbox_port)
    sandbox.start()
    api = pipeline.process(
        "api",
        "api",
        PARKING_API_PORT=str(api_port),
        PARKING_WECHATPAY_CONFIG=str(sandbox.config_path),
    )
    try:
        api.start()
        entry_gate = await pipeline.add_gate("in1")
        exit_gate = await pipeline.add_gate("out1")
        pipeline.gateway().start()
        pipeline.persister().start()
        await pipeline.subscribed()
        base = f"http://127.0.0.1:{api_port}"

        async def ready() -> bool:
            return _status(f"{base}/readyz") == 200

        await eventually(ready, within=60, what=f"the API to be ready: {api.log()[-2000:]}")

        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
            # The driver logs in and binds the plate.
            sent = await http.post("/v1/auth/otp", json={"phone": PHONE})
            code = await notifier.latest_code(pipeline.redis, sent.json()["phone"])
            tokens = await http.post("/v1/auth/token", json={"phone": PHONE, "code": code})
            assert tokens.status_code == 200, tokens.text
            me = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
            bound = await http.post("/v1/me/vehicles", json={"plate": PLATE}, headers=me)
            assert bound.status_code == 201, bound.text
            # An operator verifies it from the 行驶证 (README: curl, the plate in the body).
            curl = await asyncio.create_subprocess_exec(
                "curl",
                "-s",
                "-X",
                "POST",
                f"{base}/v1/me/plate-claims",
                "-H",
                f"Authorization: {me['Authorization']}",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(
                    {
                        "plate": PLATE,
                        "evidence": "行驶证 360702123456",
                        "photo_ref": "upload/xsz-1.jpg",
                    },
                    ensure_ascii=False,
                ),
                stdout=asyncio.subprocess.PIPE,
            )
            claimed, _ = await curl.communicate()
            assert curl.returncode == 0
            operator = tokens_module.issue(
                s.jwt_key,
                subject="alice",
                role=Role.OPERATOR,
                now=datetime.now(SHANGHAI),
                ttl=timedelta(minutes=10),
                company=DEMO_COMPANY,
            )
            approved = await http.post(
                f"/v1/operator/plate-claims/{json.loads(claimed)['id']}/approve",
                json={},
                headers={"Authorization": f"Bearer {operator}"},
            )
            assert approved.status_code == 200, approved.text
            # A driver of long standing: the plate was theirs before this stay.
            await pipeline.conn.execute(
                "UPDATE vehicles SET bound_at = bound_at - interval '1 day' WHERE plate = $1",
                PLATE,
            )

            # The car entered 65 minutes ago (a passage that old gets no command:
            # the barrier opened long since) and leaves now.
            entered = datetime.now(SHANGHAI) - timedelta(minutes=65)
            _pub(
                pipeline,
                entry_gate,
                pipeline.topics.passages(DEMO, "in1"),
                _passage(entry_gate, 1, "in", entered),
            )

            async def inside() -> bool:
                got = await http.get("/v1/me/sessions/current", headers=me)
                return bool(got.json()["items"])

            await eventually(inside, what="the current session")
            left = await _lane(pipeline, exit_gate, 1, "out", datetime.now(SHANGHAI))
            assert left["action"] == "open"
            assert "应缴" in left["display"]

            async def billed() -> bool:
                got = await http.get("/v1/me/bills", headers=me)
                return bool(got.json()["items"])

            await eventually(billed, what="the persister to bill the stay")
            [bill] = (await http.get("/v1/me/bills", headers=me)).json()["items"]
            history = (await http.get("/v1/me/sessions", headers=me)).json()["items"]
            assert history[0]["status"] == "closed"
            assert history[0]["fee_fen"] == bill["amount_fen"]

            # Owing, the car is held at the next entry.
            held = await _lane(pipeline, entry_gate, 2, "in", datetime.now(SHANGHAI))
            assert held["action"] == "hold", held

            # Pay through the provider; the sandbox notifies the API.
            order = await http.post(
                "/v1/bills/pay",
                json={"bill_ids": [bill["id"]], "provider": "wechat"},
                headers={**me, "Idempotency-Key": "e2e-pay-1"},
            )
            assert order.status_code in (200, 201), order.text
            otn = order.json()["out_trade_no"]
            paid = await http.post(f"{sandbox.base_url}/sandbox/orders/{otn}/pay")
            assert paid.status_code < 300, paid.text

            async def receipt() -> bool:
                got = await http.get(f"/v1/me/receipts/{bill['id']}", headers=me)
                return got.status_code == 200

            await eventually(receipt, what="the payment notification to pay the bill")
            assert (await http.get("/v1/me/bills", headers=me)).json()["arrears_fen"] == 0

        # Paid: the next entry is not held, at once.
        again = await _lane(pipeline, entry_gate, 3, "in", datetime.now(SHANGHAI))
        assert again["action"] == "open", again

        balance = pipeline.cli("ledger", "trial-balance", "--json")
        assert balance.returncode == 0, balance.stderr
        assert json.loads(balance.stdout)["total_fen"] == 0
    finally:
        # SIGTERM: granian stops its workers (a kill -9 of the parent would orphan them).
        api.stop()
        sandbox.stop()
