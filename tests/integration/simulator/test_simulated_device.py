"""The simulated devices keep the device side of contracts/mqtt.md against the real broker.

The test plays the platform: a paho client with the platform's credentials
that sees what devices publish and publishes watermarks and commands.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import pytest
from mqttkit import PlatformClient, prefixed_broker

from counterparts.devices.city import (
    CityRunner,
    PlateFactory,
    RunOptions,
    choose_lots,
    load_trace,
)
from counterparts.devices.device import BrokerAddress, Identity, SimulatedDevice
from counterparts.devices.outbox import Outbox
from parking.config import Settings
from parking.devices import messages, service
from parking.devices.messages import Topics

SMALL_CITY = """
INSERT INTO districts (code, name, kind, latitude, longitude)
VALUES ('ZG', '章贡区', 'district', 25.83, 114.93) ON CONFLICT DO NOTHING;
INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude) VALUES
    ('T-GATED', '测试停车场', 'ZG', 'gated', 50, 25.83, 114.93),
    ('T-STREET', '测试路段', 'ZG', 'on_street', 3, 25.83, 114.93);
INSERT INTO lanes (lot_id, lane_id, direction) VALUES
    ('T-GATED', 'in1', 'in'), ('T-GATED', 'out1', 'out');
INSERT INTO spaces (lot_id, space_id) VALUES
    ('T-STREET', 'S0001'), ('T-STREET', 'S0002'), ('T-STREET', 'S0003');
"""
TRACE = Path("/work/shared/data/birmingham-carpark-occupancy-2016.csv")
# Not the stack's prefix: the gateway tests keep persistent shared sessions on
# `parking/v1/...` in the same broker, and what these devices publish must not
# queue up there.
P = "simtest/v1"


@pytest.fixture
async def broker(settings: Settings, db_url: str) -> AsyncIterator[service.Broker]:
    """The stack's broker with this module's prefix; the stack's prefix is restored afterwards."""
    async for configured in prefixed_broker(settings, db_url, P):
        yield configured


class Platform(PlatformClient):
    """The platform's side: sees everything under the prefix, publishes watermarks and commands."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, P)

    def decoded(self, topic: str) -> list[dict[str, object]]:
        return [json.loads(p) for p in self.seen(topic) if p]

    async def wait_until(self, check: Callable[[], bool], within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.02)


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    side = Platform(settings)
    yield side
    side.stop()


@pytest.fixture
async def city(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(SMALL_CITY)
    return db


@pytest.fixture
async def identities(
    city: asyncpg.Connection, settings: Settings, broker: service.Broker
) -> AsyncIterator[dict[str, Identity]]:
    """A gate at T-GATED/in1 and a sensor at T-STREET/S0001 with ids unique to this test.

    Unique ids: the broker keeps retained watermarks and statuses across tests.
    """
    run = uuid.uuid4().hex[:6]
    made: dict[str, Identity] = {}
    for name, lot, lane, space in (
        ("gate", "T-GATED", "in1", None),
        ("sensor", "T-STREET", None, "S0001"),
    ):
        added = await service.add_device(
            city, lot_id=lot, lane_id=lane, space_id=space, device_id=f"{name}-{run}", broker=None
        )
        made[name] = Identity(
            device_id=added.device_id,
            password=added.password,
            kind=added.kind,
            lot_id=lot,
            lane_id=lane,
            space_id=space,
        )
    await service.sync_broker(city, broker)
    yield made
    clear = Platform(settings)
    for ident in made.values():
        for topic in (
            f"{P}/devices/{ident.device_id}/watermark",
            f"{P}/devices/{ident.device_id}/status",
        ):
            clear.publish(topic, b"", retain=True)
    clear.stop()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite3")
    yield box
    box.close()


DeviceFactory = Callable[..., Awaitable[SimulatedDevice]]


@pytest.fixture
async def boot(settings: Settings, outbox: Outbox) -> AsyncIterator[DeviceFactory]:
    """Start a device object (a "boot"); every one still running is stopped at the end."""
    started: list[SimulatedDevice] = []

    async def make(identity: Identity, **options: float) -> SimulatedDevice:
        device = SimulatedDevice(
            identity,
            broker=BrokerAddress(settings.mqtt_host, settings.mqtt_port),
            topics=Topics(P),
            outbox=outbox,
            **options,  # type: ignore[arg-type]
        )
        started.append(device)
        await device.start()
        return device

    yield make
    for device in started:
        await device.stop()


def _passage(device: SimulatedDevice, plate: str = "赣B12345") -> int:
    return device.emit_passage(
        direction="in", plate=plate, plate_color="blue", confidence=0.97, image_ref="t/in1/1.jpg"
    )


def _passages_topic(ident: Identity) -> str:
    return f"{P}/lots/{ident.lot_id}/lanes/{ident.lane_id}/passages"


async def test_seq_counts_up_and_survives_a_reboot_of_the_device(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory, outbox: Outbox
) -> None:
    gate = identities["gate"]
    topic = _passages_topic(gate)
    first = await boot(gate)
    await first.wait_ready()
    assert [_passage(first) for _ in range(3)] == [1, 2, 3]
    await platform.wait_until(lambda: len(platform.seen(topic)) == 3)
    await first.stop()

    second = await boot(gate)  # a reboot: same outbox, new object, new connection
    await second.wait_ready()
    assert _passage(second) == 4
    await platform.wait_until(lambda: len(platform.seen(topic)) == 3 + 3 + 1)
    seqs = [m["seq"] for m in platform.decoded(topic)]
    assert seqs == [1, 2, 3, 1, 2, 3, 4]  # nothing covered yet: the outbox re-publishes at boot
    assert outbox.last_seq(gate.device_id) == 4


async def test_every_payload_keeps_the_contract(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory
) -> None:
    gate, sensor = identities["gate"], identities["sensor"]
    g, s = await boot(gate), await boot(sensor)
    await g.wait_ready()
    await s.wait_ready()
    g.emit_passage(direction="out", plate=None, plate_color=None, confidence=0.0, image_ref=None)
    s.emit_space_state(occupied=True, battery_pct=81)
    state_topic = f"{P}/lots/T-STREET/spaces/S0001/state"
    await platform.wait_until(
        lambda: bool(platform.seen(_passages_topic(gate))) and bool(platform.seen(state_topic))
    )
    topics = Topics(P)
    passage = messages.decode(
        topics.parse(_passages_topic(gate)),  # type: ignore[arg-type]
        platform.seen(_passages_topic(gate))[0],
        registered_device=gate.device_id,
    )
    assert isinstance(passage, messages.Passage)
    assert (passage.seq, passage.plate, passage.direction) == (1, None, "out")
    assert passage.observed_at.utcoffset() is not None
    assert passage.observed_at.utcoffset().total_seconds() == 8 * 3600  # type: ignore[union-attr]
    state = messages.decode(
        topics.parse(state_topic),  # type: ignore[arg-type]
        platform.seen(state_topic)[0],
        registered_device=sensor.device_id,
    )
    assert isinstance(state, messages.SpaceState)
    assert (state.seq, state.occupied, state.battery_pct) == (1, True, 81)
    status = messages.decode(
        topics.parse(f"{P}/devices/{gate.device_id}/status"),  # type: ignore[arg-type]
        platform.seen(f"{P}/devices/{gate.device_id}/status")[0],
        registered_device=gate.device_id,
    )
    assert isinstance(status, messages.DeviceStatus)
    assert status.online is True


async def test_the_outbox_is_republished_after_a_reconnect_with_the_same_seq_and_payload(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory
) -> None:
    gate = identities["gate"]
    topic = _passages_topic(gate)
    device = await boot(gate)
    await device.wait_ready()
    _passage(device, "赣B11111")
    _passage(device, "赣BD22222")
    await platform.wait_until(lambda: len(platform.seen(topic)) == 2)
    original = platform.seen(topic)
    await platform.wait_until(lambda: device.stats.published == 2 and not device._inflight)

    device.interrupt_network()
    await platform.wait_until(lambda: device.stats.connects == 2 and device.ready.is_set())
    await platform.wait_until(lambda: len(platform.seen(topic)) == 4)
    # contract v1.1: a re-publish is the same event (seq, observed_at, everything)
    # in a new copy, whose sent_at says when it left
    again = platform.decoded(topic)[2:]
    first = [json.loads(p) for p in original]
    assert [{**m, "sent_at": None} for m in again] == [{**m, "sent_at": None} for m in first]
    assert all(a["sent_at"] > f["sent_at"] for a, f in zip(again, first, strict=True))
    assert device.stats.republished == 2


async def test_events_covered_by_the_watermark_leave_the_outbox(
    identities: dict[str, Identity],
    platform: Platform,
    boot: DeviceFactory,
    outbox: Outbox,
) -> None:
    gate = identities["gate"]
    topic = _passages_topic(gate)
    device = await boot(gate)
    await device.wait_ready()
    for _ in range(3):
        _passage(device)
    await platform.wait_until(lambda: len(platform.seen(topic)) == 3)
    platform.publish(f"{P}/devices/{gate.device_id}/watermark", b'{"seq": 2}', retain=True)
    await platform.wait_until(lambda: device.pending_seqs() == [3])
    assert [e.seq for e in outbox.pending(gate.device_id)] == [3]
    assert device.stats.covered == 2
    await device.stop()

    # after a reboot only the uncovered event is sent again
    again = await boot(gate)
    await again.wait_ready()
    await platform.wait_until(lambda: len(platform.seen(topic)) == 4)
    assert [m["seq"] for m in platform.decoded(topic)] == [1, 2, 3, 3]
    platform.publish(f"{P}/devices/{gate.device_id}/watermark", b'{"seq": 3}', retain=True)
    await platform.wait_until(lambda: again.outbox_size == 0)
    assert outbox.size(gate.device_id) == 0


async def test_a_watermark_beyond_the_last_seq_moves_the_counter_past_it(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory
) -> None:
    # A controller replaced with an empty outbox must not reuse seqs the platform has.
    sensor = identities["sensor"]
    platform.publish(f"{P}/devices/{sensor.device_id}/watermark", b'{"seq": 100}', retain=True)
    device = await boot(sensor)
    await device.wait_ready()
    await platform.wait_until(lambda: device.watermark == 100)
    assert device.emit_space_state(occupied=False, battery_pct=90) == 101


async def test_an_uncovered_event_is_published_again_after_the_timeout(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory
) -> None:
    gate = identities["gate"]
    topic = _passages_topic(gate)
    device = await boot(gate, republish_after=0.5)
    await device.wait_ready()
    _passage(device)
    await platform.wait_until(lambda: len(platform.seen(topic)) >= 3, within=10)
    # the same event every time (contract v1.1: each copy with its own sent_at)
    copies = platform.decoded(topic)
    assert len({json.dumps({**m, "sent_at": None}) for m in copies}) == 1
    assert len({m["sent_at"] for m in copies}) == len(copies)

    platform.publish(f"{P}/devices/{gate.device_id}/watermark", b'{"seq": 1}', retain=True)
    await platform.wait_until(lambda: device.outbox_size == 0)
    await asyncio.sleep(0.3)  # a copy sent just before the watermark may still be on its way
    settled = len(platform.seen(topic))
    await asyncio.sleep(1.5)
    assert len(platform.seen(topic)) == settled


async def test_a_gate_acks_each_command_and_acts_once_per_command_id(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory, outbox: Outbox
) -> None:
    gate = identities["gate"]
    commands = f"{P}/lots/{gate.lot_id}/lanes/{gate.lane_id}/commands"
    acks = f"{commands}/ack"
    device = await boot(gate)
    await device.wait_ready()
    command = msgspec.json.encode(
        {
            "command_id": "c-01JTEST0000000000000000001",
            "action": "open",
            "plate": "赣B12345",
            "session_id": "s-01JTEST0000000000000000001",
            "display": "赣B12345 欢迎光临",
            "issued_at": "2026-11-27T08:00:03+08:00",
        }
    )
    platform.publish(commands, command)
    await platform.wait_until(lambda: len(platform.seen(acks)) == 1)
    ack = platform.decoded(acks)[0]
    assert (ack["command_id"], ack["result"]) == ("c-01JTEST0000000000000000001", "done")
    assert isinstance(ack["at"], str)
    assert re.search(r"\+08:00$", ack["at"])

    platform.publish(commands, command)  # the platform did not see the ack in time
    await platform.wait_until(lambda: len(platform.seen(acks)) == 2)
    assert platform.decoded(acks)[1]["result"] == "done"
    assert [a.command_id for a in device.actions] == ["c-01JTEST0000000000000000001"]
    assert device.stats.repeated_commands == 1

    # a reboot remembers the command: acked again, not acted on again
    await device.stop()
    rebooted = await boot(gate)
    await rebooted.wait_ready()
    platform.publish(commands, command)
    await platform.wait_until(lambda: len(platform.seen(acks)) == 3)
    assert list(rebooted.actions) == []

    # a command that breaks the contract is answered "failed"
    platform.publish(commands, b'{"command_id": "c-bad", "action": "explode"}')
    await platform.wait_until(lambda: len(platform.seen(acks)) == 4)
    assert platform.decoded(acks)[3] == {**platform.decoded(acks)[3], "result": "failed"}
    assert platform.decoded(acks)[3]["command_id"] == "c-bad"


async def test_the_last_will_is_published_when_the_connection_dies(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory, settings: Settings
) -> None:
    sensor = identities["sensor"]
    status = f"{P}/devices/{sensor.device_id}/status"
    device = await boot(sensor)
    await device.wait_ready()
    await platform.wait_until(lambda: any(m["online"] for m in platform.decoded(status)))
    await device.crash()
    await platform.wait_until(lambda: platform.decoded(status)[-1]["online"] is False)
    last = platform.decoded(status)[-1]
    assert last["device_id"] == sensor.device_id
    # retained: a platform process that starts later learns the device is offline
    late = Platform(settings)
    try:
        await late.wait_until(lambda: bool(late.decoded(status)))
        assert late.decoded(status)[-1]["online"] is False
    finally:
        late.stop()


async def test_a_graceful_stop_reports_offline_and_keeps_the_outbox(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory, outbox: Outbox
) -> None:
    gate = identities["gate"]
    status = f"{P}/devices/{gate.device_id}/status"
    device = await boot(gate)
    await device.wait_ready()
    _passage(device)
    await device.stop()
    await platform.wait_until(
        lambda: (
            platform.decoded(status)[-1:] != [] and platform.decoded(status)[-1]["online"] is False
        )
    )
    assert [e.seq for e in outbox.pending(gate.device_id)] == [1]


async def test_a_device_stopped_before_the_broker_answered_its_connect_leaves_cleanly(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory
) -> None:
    """No Last Will fired later: whoever clears the status topic after a stop clears it for good."""
    gate = identities["gate"]
    status = f"{P}/devices/{gate.device_id}/status"
    device = await boot(gate)
    await asyncio.sleep(0)  # the connect task ran: CONNECT sent, the CONNACK not read yet
    assert not device.connected
    await device.stop()
    assert device.stats.connects == 1
    await platform.wait_until(lambda: len(platform.decoded(status)) >= 2)
    await asyncio.sleep(0.5)  # a will would come once the broker saw the socket close
    assert [m["online"] for m in platform.decoded(status)] == [True, False]


async def test_a_device_with_a_wrong_secret_is_refused_and_keeps_its_events(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory, outbox: Outbox
) -> None:
    gate = identities["gate"]
    wrong = Identity(
        device_id=gate.device_id,
        password="not-the-secret",
        kind=gate.kind,
        lot_id=gate.lot_id,
        lane_id=gate.lane_id,
    )
    device = await boot(wrong)
    _passage(device)
    await platform.wait_until(lambda: device.stats.refused_connects >= 1)
    assert not device.ready.is_set()
    assert platform.seen(_passages_topic(gate)) == []
    assert [e.seq for e in outbox.pending(gate.device_id)] == [1]


# ------------------------------------------------------------------ the city


@pytest.mark.skipif(not TRACE.exists(), reason="the Birmingham trace is not on this machine")
def test_the_trace_is_cleaned_by_clamping_and_counting() -> None:
    trace = load_trace(TRACE)
    c = trace.cleaning
    assert c.rows == 35_717
    assert c.above_capacity + c.below_zero == 385
    assert c.unreadable == 0
    assert all(0.0 <= f <= 1.0 for park in trace.car_parks for f in park.fractions)
    assert all(list(p.times) == sorted(set(p.times)) for p in trace.car_parks)


def test_plates_look_like_plates() -> None:
    import random

    plates = PlateFactory(random.Random(7))
    vehicles = [plates.vehicle() for _ in range(2000)]
    ordinary = re.compile(
        r"^[京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新][A-HJ-NP-Z][A-HJ-NP-Z0-9]{5}$"
    )
    nev = re.compile(
        r"^[京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵云藏陕甘青宁新][A-HJ-NP-Z][DF][0-9]{5}$"
    )
    for v in vehicles:
        if v.plate is None:
            assert v.color is None
        elif v.color == "green":
            assert nev.match(v.plate), v.plate
        else:
            assert ordinary.match(v.plate), v.plate
    assert sum(v.plate is None for v in vehicles) > 0
    assert sum(v.color == "green" for v in vehicles) > 100
    assert sum((v.plate or "").startswith("赣B") for v in vehicles) > 1000
    reads = [plates.read(v) for v in vehicles]
    assert any(r.confidence is not None and r.confidence < 0.85 for r in reads if r.plate)


@pytest.mark.skipif(not TRACE.exists(), reason="the Birmingham trace is not on this machine")
async def test_the_city_runner_drives_gates_and_sensors_at_the_rate(
    city: asyncpg.Connection,
    settings: Settings,
    platform: Platform,
    tmp_path: Path,
    broker: service.Broker,
) -> None:
    secrets_file = tmp_path / "device-secrets.json"
    await service.provision_city(city, secrets_file=secrets_file, broker=broker)
    lots = choose_lots(await service.fleet(city), count=5, seed=3)
    outbox = Outbox(tmp_path / "city-outbox.sqlite3")
    lines: list[str] = []
    runner = CityRunner(
        lots,
        service.read_secrets(secrets_file),
        broker=BrokerAddress(settings.mqtt_host, settings.mqtt_port),
        topics=Topics(P),
        outbox=outbox,
        trace=load_trace(TRACE),
        options=RunOptions(rate=40, duration=3.0, seed=3, progress_every=1.0),
        progress=lines.append,
    )
    totals = await runner.run()
    assert (totals.devices, totals.online) == (2 + 3, 5)
    # 40/s for the 3 s less the time the devices took to connect
    assert 40 <= totals.events <= 125
    assert totals.published == totals.events
    assert totals.errors == 0
    assert any(" | online " in line and "acked by watermark" in line for line in lines[1:])
    assert "373 above capacity and 12 below zero clamped" in lines[0]

    def ours() -> list[tuple[str, bytes]]:
        return [
            (t, p)
            for t, p, _ in platform.messages
            if t.startswith(f"{P}/lots/T-") and t.endswith(("/passages", "/state"))
        ]

    await platform.wait_until(lambda: len(ours()) >= totals.events)
    topics = Topics(P)
    registered = {
        (d.lot_id, d.lane_id or d.space_id): d.device_id for lot in lots for d in lot.devices
    }
    for topic, payload in ours():
        parsed = topics.parse(topic)
        assert parsed is not None
        where = getattr(parsed, "lane_id", None) or getattr(parsed, "space_id", None)
        decoded = messages.decode(
            parsed,
            payload,
            registered_device=registered[(parsed.lot_id, where)],  # type: ignore[union-attr]
        )
        assert not isinstance(decoded, messages.Rejection), decoded
    outbox.close()


async def test_every_copy_carries_sent_at_from_the_devices_own_possibly_skewed_clock(
    identities: dict[str, Identity], platform: Platform, boot: DeviceFactory
) -> None:
    gate, sensor = identities["gate"], identities["sensor"]
    skew = timedelta(days=3650)  # a clock ten years on, as in issue 10
    g = await boot(gate, clock_offset=skew)  # type: ignore[arg-type]
    s = await boot(sensor, sends_sent_at=False)  # type: ignore[arg-type]
    await g.wait_ready()
    await s.wait_ready()
    before = datetime.now(UTC)
    _passage(g)
    s.emit_space_state(occupied=True, battery_pct=81)
    state_topic = f"{P}/lots/T-STREET/spaces/S0001/state"
    await platform.wait_until(
        lambda: bool(platform.seen(_passages_topic(gate))) and bool(platform.seen(state_topic))
    )
    after = datetime.now(UTC)
    topics = Topics(P)
    passage = messages.decode(
        topics.parse(_passages_topic(gate)),  # type: ignore[arg-type]
        platform.seen(_passages_topic(gate))[0],
        registered_device=gate.device_id,
    )
    assert isinstance(passage, messages.Passage)
    assert passage.sent_at is not None
    assert before + skew <= passage.observed_at <= passage.sent_at <= after + skew
    state = messages.decode(
        topics.parse(state_topic),  # type: ignore[arg-type]
        platform.seen(state_topic)[0],
        registered_device=sensor.device_id,
    )
    assert isinstance(state, messages.SpaceState)
    assert state.sent_at is None  # a v1 device
    assert platform.seen(_passages_topic(gate))[0].count(b'"sent_at"') == 1
    assert b'"sent_at"' not in platform.seen(state_topic)[0]
    # the clock is put right (NTP back): the next copy's sent_at follows it, its
    # observed_at stays what the device saw
    await platform.wait_until(lambda: g.stats.published == 1 and not g._inflight)
    g.clock_offset = timedelta(0)
    g.interrupt_network()
    await platform.wait_until(lambda: len(platform.seen(_passages_topic(gate))) == 2)
    copy = messages.decode(
        topics.parse(_passages_topic(gate)),  # type: ignore[arg-type]
        platform.seen(_passages_topic(gate))[1],
        registered_device=gate.device_id,
    )
    assert isinstance(copy, messages.Passage)
    assert copy.observed_at == passage.observed_at
    assert copy.sent_at is not None
    assert after <= copy.sent_at <= datetime.now(UTC)
