"""Device clocks through the real processes: simulated gates (the simulator's own code,
with a skewed clock) -> Mosquitto -> `parking gateway` -> Redis -> `parking persister`
-> PostgreSQL (contracts/mqtt.md v1.1 "Clocks", issue 10 point 1)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pipekit import DEMO, Device, Pipeline, eventually

from counterparts.devices.device import Action, BrokerAddress, Identity, SimulatedDevice
from counterparts.devices.outbox import Outbox
from parking.devices.model import DeviceKind
from parking.pricing import Pricer

Y2036 = datetime(2036, 2, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
async def gates(pipeline: Pipeline) -> dict[str, Device]:
    made = {"in1": await pipeline.add_gate("in1"), "out1": await pipeline.add_gate("out1")}
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    return made


@pytest.fixture
async def simulated(
    pipeline: Pipeline, tmp_path: Path
) -> AsyncIterator[Callable[..., SimulatedDevice]]:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    started: list[SimulatedDevice] = []

    def make(device: Device, **options: object) -> SimulatedDevice:
        sim = SimulatedDevice(
            Identity(
                device_id=device.device_id,
                password=device.password,
                kind=DeviceKind.GATE,
                lot_id=device.lot_id,
                lane_id=device.lane_id,
            ),
            broker=BrokerAddress(pipeline.settings.mqtt_host, pipeline.settings.mqtt_port),
            topics=pipeline.topics,
            outbox=outbox,
            **options,  # type: ignore[arg-type]
        )
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()
    outbox.close()
    # A simulated device leaves its status retained under the stack's prefix: clear
    # it, or the next test's gateway gets it for a device its registry lacks.
    for sim in started:
        s = pipeline.settings
        identity = sim.identity
        cleared = await asyncio.create_subprocess_exec(
            "mosquitto_pub",
            *("-h", s.mqtt_host, "-p", str(s.mqtt_port)),
            *("-u", identity.device_id, "-P", identity.password, "-i", identity.device_id),
            *("-V", "mqttv5", "-q", "1", "-r", "-n"),
            *("-t", pipeline.topics.status(identity.device_id)),
        )
        assert await asyncio.wait_for(cleared.wait(), timeout=15) == 0


async def _pass(sim: SimulatedDevice, direction: str) -> Action:
    await sim.start()
    await sim.wait_ready()
    sim.emit_passage(
        direction=direction,  # type: ignore[arg-type]
        plate="赣B12345",
        plate_color="blue",
        confidence=0.97,
        image_ref=None,
    )

    async def acted() -> bool:
        return bool(sim.actions)

    await eventually(acted, what=f"the {direction} gate's command")
    return sim.actions[-1]


async def test_an_exit_gate_whose_clock_says_2036_does_not_bill_a_stay_of_years(
    pipeline: Pipeline, gates: dict[str, Device], simulated: Callable[..., SimulatedDevice]
) -> None:
    entry = simulated(gates["in1"])
    exit_gate = simulated(gates["out1"], clock_offset=Y2036 - datetime.now(UTC))
    assert (await _pass(entry, "in")).action == "open"
    shown = await _pass(exit_gate, "out")
    # Today's main showed "赣B12345 停车79579小时46分 应缴66320.00元 已离场后付".
    assert shown.action == "open"
    assert shown.display.startswith("赣B12345 停车0小时00分 "), shown.display

    async def stored() -> bool:
        n = await pipeline.fetchval("SELECT count(*) FROM sessions WHERE status = 'closed'")
        return n == 1

    await eventually(stored, what="the persister to store the closed session")
    session = await pipeline.conn.fetchrow(
        "SELECT id, entry_at, exit_at, fee_fen FROM sessions WHERE plate = '赣B12345'"
    )
    assert session["exit_at"] - session["entry_at"] < timedelta(minutes=1)
    priced = (await Pricer.load(pipeline.conn)).price(
        lot_id=DEMO, plate="赣B12345", entry=session["entry_at"], exit=session["exit_at"]
    )
    assert session["fee_fen"] == priced.fee_fen < 6_632_000
    billed = await pipeline.fetchval(
        "SELECT coalesce(sum(amount_fen), 0) FROM bills WHERE session_id = $1", session["id"]
    )
    assert billed == priced.fee_fen
    raw = await pipeline.conn.fetchrow(
        "SELECT observed_at, event_at, sent_at, clock_offset_ms FROM passages WHERE device_id = $1",
        gates["out1"].device_id,
    )
    assert raw["observed_at"].year == raw["sent_at"].year == 2036
    assert raw["event_at"] == session["exit_at"]
    assert (
        abs(raw["clock_offset_ms"] - (Y2036 - raw["event_at"]) / timedelta(milliseconds=1)) < 60_000
    )

    async def flagged() -> bool:
        n = await pipeline.fetchval(
            "SELECT count(*) FROM anomalies WHERE kind = 'device_clock_skew' AND status = 'open' "
            "AND device_id = $1",
            gates["out1"].device_id,
        )
        return n == 1

    await eventually(flagged, what="the exit gate's device_clock_skew anomaly")
    details = json.loads(
        await pipeline.fetchval(  # type: ignore[arg-type]
            "SELECT details::text FROM anomalies WHERE kind = 'device_clock_skew'"
        )
    )
    assert details["offset_ms"] == raw["clock_offset_ms"]
    # the entry gate's clock is right: no anomaly for it
    assert (
        await pipeline.fetchval(
            "SELECT count(*) FROM anomalies WHERE kind = 'device_clock_skew' AND device_id = $1",
            gates["in1"].device_id,
        )
        == 0
    )


async def test_an_entry_gate_clock_hours_ahead_does_not_make_the_stay_free(
    pipeline: Pipeline, gates: dict[str, Device], simulated: Callable[..., SimulatedDevice]
) -> None:
    # A v1 entry gate (no sent_at) whose clock runs 3 hours on, and an exit whose
    # clock is right: the entry is taken as observed when it arrived.
    entry = simulated(gates["in1"], clock_offset=timedelta(hours=3), sends_sent_at=False)
    exit_gate = simulated(gates["out1"])
    assert (await _pass(entry, "in")).action == "open"
    await _pass(exit_gate, "out")

    async def stored() -> bool:
        n = await pipeline.fetchval("SELECT count(*) FROM sessions WHERE status = 'closed'")
        return n == 1

    await eventually(stored, what="the persister to store the closed session")
    session = await pipeline.conn.fetchrow(
        "SELECT entry_at, exit_at FROM sessions WHERE plate = '赣B12345'"
    )
    # today's main recorded the entry 3 hours after the exit: a stay of 0 minutes
    assert timedelta(0) <= session["exit_at"] - session["entry_at"] < timedelta(minutes=1)
    raw = await pipeline.fetchval(
        "SELECT observed_at FROM passages WHERE device_id = $1", gates["in1"].device_id
    )
    assert raw - session["entry_at"] > timedelta(hours=2, minutes=59)


async def test_a_stay_past_the_review_limit_is_not_shown_on_the_lane_as_owed(
    pipeline: Pipeline, gates: dict[str, Device], simulated: Callable[..., SimulatedDevice]
) -> None:
    # A v1 entry recorded 8 days ago (the platform cannot tell it from a backlog).
    entry = simulated(gates["in1"], clock_offset=timedelta(days=-8), sends_sent_at=False)
    exit_gate = simulated(gates["out1"])
    await entry.start()
    await entry.wait_ready()
    entry.emit_passage(
        direction="in", plate="赣B12345", plate_color="blue", confidence=0.97, image_ref=None
    )

    async def entered() -> bool:
        n = await pipeline.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'")
        return n == 1

    await eventually(entered, what="the entry to be stored")
    shown = await _pass(exit_gate, "out")
    assert shown.action == "open"
    assert shown.display.startswith("赣B12345 停车192小时")
    assert shown.display.endswith(" 费用待核实 一路顺风")
    assert "应缴" not in shown.display

    async def reviewed() -> bool:
        n = await pipeline.fetchval(
            "SELECT count(*) FROM anomalies WHERE kind = 'fee_review' AND status = 'open'"
        )
        return n == 1

    await eventually(reviewed, what="the fee_review anomaly")
    fee, billed = await pipeline.conn.fetchrow(
        "SELECT s.fee_fen, b.amount_fen FROM sessions s JOIN bills b ON b.session_id = s.id "
        "WHERE s.plate = '赣B12345'"
    )
    assert fee == billed > 0  # billed as usual


async def test_what_the_broker_held_while_the_gateway_was_down_does_not_read_as_a_slow_clock(
    pipeline: Pipeline, simulated: Callable[..., SimulatedDevice]
) -> None:
    """A queue's wait looks exactly like a clock running behind (``sent_at`` long
    before ``received_at``). Messages the broker held for the gateway (it was down)
    are stored with the device's own times and teach nothing about its clock; the
    same device's messages that arrive when nothing held them do, and its clock,
    five minutes slow, is corrected from then on. (Before, a backlog of a few
    minutes shifted every event's time by the queue's wait: the full-city replay at
    100x stored exits minutes late and priced them so.)"""
    gate = await pipeline.add_gate("in1")
    gateway = pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    assert gateway.stop() == 0
    slow = timedelta(minutes=-5)
    sim = simulated(gate, clock_offset=slow, republish_after=3600.0)
    await sim.start()
    await sim.wait_ready()
    held = [f"赣B7{n:04d}" for n in range(5)]
    for plate in held:
        sim.emit_passage(
            direction="in", plate=plate, plate_color="blue", confidence=0.97, image_ref=None
        )
    await asyncio.sleep(1.0)
    gateway.start()

    def stored(plates: list[str]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            n = await pipeline.fetchval(
                "SELECT count(*) FROM passages WHERE device_id = $1 AND plate = ANY($2)",
                gate.device_id,
                plates,
            )
            return n == len(plates)

        return check

    await eventually(stored(held), what="the held passages stored after the restart")
    rows = await pipeline.conn.fetch(
        "SELECT observed_at, event_at, clock_offset_ms FROM passages "
        "WHERE device_id = $1 AND plate = ANY($2)",
        gate.device_id,
        held,
    )
    assert len(rows) == len(held)
    for r in rows:
        assert r["event_at"] == r["observed_at"], r
        assert r["clock_offset_ms"] is None, r
    skewed = "SELECT count(*) FROM anomalies WHERE kind = 'device_clock_skew' AND device_id = $1"
    assert await pipeline.fetchval(skewed, gate.device_id) == 0

    # Now nothing holds the gate's messages: its five slow minutes are its clock's.
    await asyncio.sleep(3.0)
    live = [f"赣B8{n:04d}" for n in range(3)]
    for plate in live:
        sim.emit_passage(
            direction="in", plate=plate, plate_color="blue", confidence=0.97, image_ref=None
        )
        await asyncio.sleep(0.2)
    await eventually(stored(live), what="the live passages stored")
    rows = await pipeline.conn.fetch(
        "SELECT observed_at, event_at, clock_offset_ms FROM passages "
        "WHERE device_id = $1 AND plate = ANY($2)",
        gate.device_id,
        live,
    )
    assert len(rows) == len(live)
    for r in rows:
        assert abs(r["clock_offset_ms"] - slow / timedelta(milliseconds=1)) < 10_000, r
        assert abs((r["event_at"] - r["observed_at"]) - (-slow)) < timedelta(seconds=10), r

    async def flagged() -> bool:
        return await pipeline.fetchval(skewed, gate.device_id) == 1

    await eventually(flagged, what="the gate's device_clock_skew anomaly")
