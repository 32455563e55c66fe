"""The city's figures per hour and per business day (issue 13), checked against ground
truth this test computes itself from the passages it published (over MQTT, through the
real gateway and persister) and the payments it made (through the API and the sandbox
provider): entries, exits, turnover, stays, billed, collected, collection rate, arrears
and what was recovered, and the device online rate after a gate falls silent.

The cars park in a lot of their own, made for the test, so the lot's figures are this
test's alone (other tests drive cars through the seeded lots of the same database)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pipekit import DEMO, Device, Pipeline, eventually
from test_gateway_walkthrough import _pub

from parking.auth.model import Principal, Role
from parking.city.model import ARREARS_AFTER
from parking.clock import SHANGHAI
from parking.lots import service as lots
from parking.lots.model import NewLane, NewLot
from parking.seed.city import DEMO_COMPANY

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))
from payment_servers import SandboxProcess

CAPACITY = 50
#: the silent window of this test's processes (seconds): a gate not heard for this long is offline
SILENT_AFTER_S = 20


def _passage(gate: Device, seq: int, direction: str, plate: str, at: datetime) -> str:
    return json.dumps(
        {
            "device_id": gate.device_id,
            "seq": seq,
            "observed_at": at.isoformat(),
            "direction": direction,
            "plate": plate,
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"t13/{gate.lane_id}/{seq}.jpg",
        },
        ensure_ascii=False,
    )


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


async def _make_lot(pipe: Pipeline, capacity: int = CAPACITY, tag: str = "T13") -> str:
    """A gated lot of the demo company, priced as the demo lot, with two lanes."""
    lot_id = f"{tag}-{pipe.run}".upper()
    owner = Principal(subject="t13", role=Role.OPERATOR, token_id="t13", company=DEMO_COMPANY)
    now = datetime.now(UTC)
    demo = await lots.find_lot(pipe.conn, DEMO)
    assert demo is not None
    async with pipe.conn.transaction():
        await lots.create_lot(
            pipe.conn,
            NewLot(
                id=lot_id,
                name="测试停车场",
                district_code=demo.district_code,
                kind="gated",
                capacity=capacity,
                latitude=demo.latitude,
                longitude=demo.longitude,
            ),
            by=owner,
            now=now,
        )
        for lane, direction in (("in1", "in"), ("out1", "out")):
            await lots.add_lane(
                pipe.conn, lot_id, NewLane(lane_id=lane, direction=direction), by=owner, now=now
            )
        await pipe.conn.execute(
            "INSERT INTO lot_tariffs (lot_id, vehicle_class, tariff_id) "
            "SELECT $1, vehicle_class, tariff_id FROM lot_tariffs WHERE lot_id = $2",
            lot_id,
            DEMO,
        )
    return lot_id


def _rollup(pipe: Pipeline) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "parking", "city", "rollup", "--once"],
        env=pipe.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def test_a_days_figures_match_the_cars_and_payments_that_made_them(
    pipeline: Pipeline, token_for: Any, tmp_path: Path
) -> None:
    s = pipeline.settings
    pipeline.env["PARKING_DEVICE_SILENT_AFTER_S"] = str(SILENT_AFTER_S)
    lot_id = await _make_lot(pipeline)
    entry = await pipeline.add_gate("in1", lot=lot_id)
    exit_gate = await pipeline.add_gate("out1", lot=lot_id)
    sandbox = SandboxProcess(tmp_path / "sandbox-stack", s.sandbox_port + 5)
    sandbox.start()
    try:
        pipeline.gateway().start()
        pipeline.persister().start()
        await pipeline.subscribed()
        base = await pipeline.api(s.api_port + 5, PARKING_WECHATPAY_CONFIG=str(sandbox.config_path))
        await _drive_and_check(pipeline, token_for, lot_id, entry, exit_gate, base, sandbox)
    finally:
        sandbox.stop()


async def _drive_and_check(
    pipeline: Pipeline,
    token_for: Any,
    lot_id: str,
    entry: Device,
    exit_gate: Device,
    base: str,
    sandbox: SandboxProcess,
) -> None:
    t = datetime.now(UTC).replace(microsecond=0)
    tag = pipeline.run[:4].upper()
    # plate -> (entered, left or None): A leaves 40 min ago and pays now (arrears
    # recovered), B leaves a minute ago and pays now (paid on leaving), C leaves
    # 30 min ago and never pays (arrears outstanding), E leaves 10 min ago (not yet
    # arrears), D is still inside.
    cars: dict[str, tuple[datetime, datetime | None]] = {
        f"赣B{tag}A": (t - timedelta(hours=3), t - timedelta(minutes=40)),
        f"赣B{tag}B": (t - timedelta(hours=2), t - timedelta(minutes=1)),
        f"赣B{tag}C": (t - timedelta(minutes=90), t - timedelta(minutes=30)),
        f"赣B{tag}E": (t - timedelta(minutes=50), t - timedelta(minutes=10)),
        f"赣B{tag}D": (t - timedelta(minutes=20), None),
    }
    a, b, c, e, _ = cars
    entries = sorted(cars, key=lambda p: cars[p][0])
    for seq, plate in enumerate(entries, start=1):
        at = cars[plate][0]
        _pub(
            pipeline,
            entry,
            pipeline.topics.passages(lot_id, "in1"),
            _passage(entry, seq, "in", plate, at),
        )
    leaving = sorted((p for p in cars if cars[p][1] is not None), key=lambda p: cars[p][1] or t)
    for seq, plate in enumerate(leaving, start=1):
        at = cars[plate][1]
        assert at is not None
        _pub(
            pipeline,
            exit_gate,
            pipeline.topics.passages(lot_id, "out1"),
            _passage(exit_gate, seq, "out", plate, at),
        )
    exit_heard = datetime.now(UTC)

    async def all_in() -> bool:
        closed = await pipeline.fetchval(
            "SELECT count(*) FROM sessions WHERE lot_id = $1 AND status = 'closed'", lot_id
        )
        billed = await pipeline.fetchval("SELECT count(*) FROM bills WHERE lot_id = $1", lot_id)
        return closed == len(leaving) and billed == len(leaving)

    await eventually(all_in, within=60, what="the persister to close and bill the stays")

    # What each stay was billed, as a driver paying for the plate sees it.
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30) as http:
        amounts: dict[str, int] = {}
        bill_ids: dict[str, str] = {}
        for n, plate in enumerate(leaving):
            driver = {"Authorization": f"Bearer {token_for(Role.DRIVER, f'acc-t13-{n}')}"}
            got = await http.post("/v1/plate-bills", json={"plate": plate}, headers=driver)
            assert got.status_code == 200, got.text
            [bill] = got.json()["items"]
            amounts[plate], bill_ids[plate] = bill["amount_fen"], bill["id"]
        assert all(amount > 0 for amount in amounts.values()), amounts

        # A and B are paid now through the provider (by a friend, naming the plate).
        payer = {"Authorization": f"Bearer {token_for(Role.DRIVER, 'acc-t13-payer')}"}
        for plate in (a, b):
            order = await http.post(
                "/v1/bills/pay",
                json={"bill_ids": [bill_ids[plate]], "provider": "wechat", "plate": plate},
                headers={**payer, "Idempotency-Key": f"t13-{pipeline.run}-{plate[-1]}"},
            )
            assert order.status_code == 201, order.text
            paid = await http.post(
                f"{sandbox.base_url}/sandbox/orders/{order.json()['out_trade_no']}/pay"
            )
            assert paid.status_code < 300, paid.text
        paid_at = datetime.now(UTC)

        async def settled() -> bool:
            left = await pipeline.fetchval(
                "SELECT count(*) FROM bills WHERE id = ANY($1::text[]) AND paid_at IS NULL",
                [bill_ids[a], bill_ids[b]],
            )
            return left == 0

        await eventually(settled, within=60, what="the notifications to pay A and B")

        # The exit gate falls silent; the entry gate is heard again (car F enters now).
        await asyncio.sleep(
            max(0.0, SILENT_AFTER_S + 1 - (datetime.now(UTC) - exit_heard).total_seconds())
        )
        f = f"赣B{tag}F"
        cars[f] = (datetime.now(UTC), None)
        _pub(
            pipeline,
            entry,
            pipeline.topics.passages(lot_id, "in1"),
            _passage(entry, len(entries) + 1, "in", f, cars[f][0]),
        )

        async def f_inside() -> bool:
            return bool(
                await pipeline.fetchval(
                    "SELECT count(*) FROM sessions WHERE lot_id = $1 AND plate = $2", lot_id, f
                )
            )

        await eventually(f_inside, within=30, what="F's entry")
        # the entry gate's heartbeat, so it is heard within the window whatever the
        # persister took to write F's entry
        _pub(
            pipeline,
            entry,
            pipeline.topics.status(entry.device_id),
            json.dumps(
                {"device_id": entry.device_id, "online": True, "at": datetime.now(UTC).isoformat()}
            ),
        )
        await asyncio.sleep(1)
        report = _rollup(pipeline)
        assert report["sampled"] is True
        city_staff = {"Authorization": f"Bearer {token_for(Role.CITY, 'zhao.city')}"}
        health = (
            await http.get("/v1/city/devices", params={"lot": lot_id}, headers=city_staff)
        ).json()
        assert (health["devices"], health["online"], health["online_rate"]) == (2, 1, 0.5)
        assert health["by_kind"] == {"gate": [1, 2]}

        # ---- ground truth, from what this test did
        want: dict[date, dict[str, Any]] = defaultdict(
            lambda: {"entries": 0, "exits": 0, "stays": [], "arrears": 0, "recovered": 0}
        )
        for entered, left in cars.values():
            want[_day(entered)]["entries"] += 1
            if left is not None:
                want[_day(left)]["exits"] += 1
                want[_day(left)]["stays"].append((left - entered).total_seconds())
        now = datetime.now(UTC)
        for plate in (a, c, e):
            left = cars[plate][1]
            assert left is not None
            due = left + ARREARS_AFTER
            if due <= now:  # E's has not come yet
                want[_day(due)]["arrears"] += amounts[plate]
        want[_day(paid_at)]["recovered"] += amounts[a]
        outstanding = amounts[c] if cars[c][1] + ARREARS_AFTER <= now else 0  # type: ignore[operator]
        billed = sum(amounts.values())
        collected = amounts[a] + amounts[b]

        days = {}
        for day in sorted(want):
            got = await http.get(
                f"/v1/city/days/{day.isoformat()}", params={"lot": lot_id}, headers=city_staff
            )
            assert got.status_code == 200, got.text
            days[day] = got.json()
        for day, expected in want.items():
            figures = days[day]
            assert figures["scope"] == f"lot:{lot_id}"
            assert figures["capacity"] == CAPACITY
            assert (figures["entries"], figures["exits"]) == (
                expected["entries"],
                expected["exits"],
            ), (day, figures)
            assert figures["turnover"] == expected["exits"] / CAPACITY
            assert figures["stays"] == len(expected["stays"])
            if expected["stays"]:
                assert abs(figures["stay_avg_s"] - statistics.mean(expected["stays"])) < 1e-6
                assert abs(figures["stay_median_s"] - statistics.median(expected["stays"])) < 1e-6
            assert figures["arrears_fen"] == expected["arrears"], (day, figures)
            assert figures["arrears_recovered_fen"] == expected["recovered"], (day, figures)
        # Money happened today (bills opened and paid as this test ran): over the days
        # touched it sums to what was billed and paid.
        assert sum(d["billed_fen"] for d in days.values()) == billed
        assert sum(d["collected_fen"] for d in days.values()) == collected
        today = days[_day(now)]
        if today["billed_fen"] == billed:
            assert today["collection_rate"] == collected / billed
        assert today["arrears_outstanding_fen"] == outstanding
        assert today["device_online_rate"] == 0.5
        assert today["occupancy_peak_pct"] == round(100 * 2 / CAPACITY, 1)  # D and F
        assert [p["provider"] for p in today["reconciliation"]] == ["alipay", "wechat"]
        assert today["lane_decisions"] == 0  # the gateway's latency is the city's

        # The same figures per hour, over the last four hours.
        start, end = _hour(t - timedelta(hours=3)), _hour(now) + timedelta(hours=1)
        per_hour = Counter(_hour(entered) for entered, _ in cars.values())
        got = await http.get(
            "/v1/city/timeseries",
            params={
                "metric": "entries",
                "from": start.isoformat(),
                "to": end.isoformat(),
                "step": "hour",
                "lot": lot_id,
            },
            headers=city_staff,
        )
        assert got.status_code == 200, got.text
        series = got.json()
        assert series["unit"] == "cars"
        assert {datetime.fromisoformat(p["at"]): p["value"] for p in series["points"]} == {
            start + timedelta(hours=i): float(per_hour.get(start + timedelta(hours=i), 0))
            for i in range(int((end - start) / timedelta(hours=1)))
        }
        exits_per_hour = Counter(_hour(left) for _, left in cars.values() if left is not None)
        got = await http.get(
            "/v1/city/timeseries",
            params={
                "metric": "exits",
                "from": start.isoformat(),
                "to": end.isoformat(),
                "lot": lot_id,
            },
            headers=city_staff,
        )
        assert [p["value"] for p in got.json()["points"]] == [
            float(exits_per_hour.get(start + timedelta(hours=i), 0))
            for i in range(int((end - start) / timedelta(hours=1)))
        ]
        # The city counts the lot's cars too, and an operator of another company
        # cannot read the lot's figures.
        city_day = (
            await http.get(f"/v1/city/days/{_day(now).isoformat()}", headers=city_staff)
        ).json()
        assert city_day["scope"] == "city"
        assert city_day["entries"] >= want[_day(now)]["entries"]
        # F's passage came in this hour (the others too, unless the hour turned)
        assert city_day["lane_decisions"] >= 1
        assert 0 <= city_day["lane_p50_ms"] <= city_day["lane_p99_ms"]
        county = {"Authorization": f"Bearer {token_for(Role.OPERATOR, 'sun.op', 'gz-county')}"}
        hidden = await http.get(
            f"/v1/city/days/{_day(now).isoformat()}", params={"lot": lot_id}, headers=county
        )
        assert hidden.status_code == 404
        mine = await http.get(
            f"/v1/city/days/{_day(now).isoformat()}",
            headers={"Authorization": f"Bearer {token_for(Role.OPERATOR, 'li.op')}"},
        )
        assert mine.json()["scope"] == f"company:{DEMO_COMPANY}"
        naive = await http.get(
            "/v1/city/timeseries",
            params={"metric": "entries", "from": "2026-12-01T00:00:00", "to": end.isoformat()},
            headers=city_staff,
        )
        assert naive.status_code == 400
        assert "offset" in naive.json()["detail"]
