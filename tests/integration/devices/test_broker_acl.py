"""M7: a device acts only as itself at the broker; wrong and revoked credentials are refused.

The platform side is played by a paho client with the platform's credentials;
devices are played by mosquitto_pub/mosquitto_sub and paho with their own.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from mqttkit import PlatformClient, prefixed_broker
from paho.mqtt.enums import CallbackAPIVersion

from parking.config import Settings
from parking.devices import service
from parking.devices.model import DeviceKind, Provisioned

SMALL_CITY = """
INSERT INTO districts (code, name, kind, latitude, longitude)
VALUES ('ZG', '章贡区', 'district', 25.83, 114.93) ON CONFLICT DO NOTHING;
INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude) VALUES
    ('T-GATED', '测试停车场', 'ZG', 'gated', 50, 25.83, 114.93),
    ('T-OTHER', '另一停车场', 'ZG', 'gated', 30, 25.83, 114.93),
    ('T-STREET', '测试路段', 'ZG', 'on_street', 3, 25.83, 114.93);
INSERT INTO lanes (lot_id, lane_id, direction) VALUES
    ('T-GATED', 'in1', 'in'), ('T-GATED', 'out1', 'out'),
    ('T-OTHER', 'in1', 'in'), ('T-OTHER', 'out1', 'out');
INSERT INTO spaces (lot_id, space_id) VALUES
    ('T-STREET', 'S0001'), ('T-STREET', 'S0002'), ('T-STREET', 'S0003');
"""

# Not the stack's prefix: the gateway tests keep persistent shared sessions on
# `parking/v1/...` in the same broker, and what these tests publish must not
# queue up there. A non-default prefix also exercises its configurability.
P = "acltest/v1"


@pytest.fixture
async def broker(settings: Settings, db_url: str) -> AsyncIterator[service.Broker]:
    """The stack's broker with this module's prefix; the stack's prefix is restored afterwards."""
    async for configured in prefixed_broker(settings, db_url, P):
        yield configured


class Platform(PlatformClient):
    """The platform's side of the broker: subscribes to everything under the prefix."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, P)


async def _mosquitto(
    binary: str, settings: Settings, user: str, password: str, *args: str
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-h",
        settings.mqtt_host,
        "-p",
        str(settings.mqtt_port),
        "-V",
        "mqttv5",
        "-i",
        user,
        "-u",
        user,
        "-P",
        password,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    side = Platform(settings)
    yield side
    side.stop()


@pytest.fixture
async def devices(
    db: asyncpg.Connection, settings: Settings, broker: service.Broker
) -> AsyncIterator[Callable[..., Provisioned]]:
    """Gates at T-GATED/in1 and T-OTHER/in1 and a sensor at T-STREET/S0001, with unique ids."""
    await db.execute(SMALL_CITY)
    run = uuid.uuid4().hex[:6]
    made = {
        "gate": await service.add_device(
            db, lot_id="T-GATED", lane_id="in1", device_id=f"g{run}-in1", broker=None
        ),
        "other": await service.add_device(
            db, lot_id="T-OTHER", lane_id="in1", device_id=f"o{run}-in1", broker=None
        ),
        "sensor": await service.add_device(
            db, lot_id="T-STREET", space_id="S0001", device_id=f"s{run}-s1", broker=None
        ),
        "sign": await service.add_device(
            db, lot_id="T-GATED", kind=DeviceKind.SIGN, device_id=f"d{run}-sign", broker=None
        ),
    }
    synced = await service.sync_broker(db, broker)
    assert synced.reload_seconds is not None  # returns once the broker enforces the files
    yield made.__getitem__
    # leave no retained messages of this run's devices in the broker's store
    clear = Platform(settings)
    for lot in ("T-GATED", "T-OTHER"):
        clear.publish(f"{P}/lots/{lot}/availability", b"", retain=True)
    for device in made.values():
        for topic in (
            f"{P}/devices/{device.device_id}/watermark",
            f"{P}/devices/{device.device_id}/status",
        ):
            clear.publish(topic, b"", retain=True)
    clear.stop()


async def test_a_device_publishes_only_on_its_own_lane_and_device_topics(
    settings: Settings, platform: Platform, devices: Callable[..., Provisioned]
) -> None:
    gate, other = devices("gate"), devices("other")
    denied = [
        f"{P}/lots/T-OTHER/lanes/in1/passages",  # another lot's lane
        f"{P}/lots/T-GATED/lanes/out1/passages",  # another lane of its own lot
        f"{P}/lots/T-STREET/spaces/S0001/state",  # a sensor's topic
        f"{P}/lots/T-OTHER/lanes/in1/commands",  # forging a command
        f"{P}/devices/{gate.device_id}/watermark",  # forging its own watermark
        f"{P}/devices/{other.device_id}/status",  # another device's status
        f"{P}/lots/T-GATED/availability",
    ]
    for topic in denied:
        await _mosquitto(
            "mosquitto_pub", settings, gate.device_id, gate.password, "-q", "1",
            "-t", topic, "-m", f"forged by {gate.device_id}",
        )  # fmt: skip
    allowed = [
        f"{P}/lots/T-GATED/lanes/in1/passages",
        f"{P}/lots/T-GATED/lanes/in1/commands/ack",
        f"{P}/devices/{gate.device_id}/status",
    ]
    for topic in allowed:
        code, out = await _mosquitto(
            "mosquitto_pub", settings, gate.device_id, gate.password, "-q", "1",
            "-t", topic, "-m", "mine",
        )  # fmt: skip
        assert code == 0, out
        await platform.wait_for(topic, b"mine")
    # the broker handles one client's packets in order and the allowed ones
    # came after the denied ones, so nothing denied is still on its way
    assert [t for t, p, _ in platform.messages if p.startswith(b"forged")] == []


async def test_a_sensor_may_only_report_its_own_space(
    settings: Settings, platform: Platform, devices: Callable[..., Provisioned]
) -> None:
    sensor = devices("sensor")
    for space, payload in (("S0002", b"forged"), ("S0001", b"mine")):
        topic = f"{P}/lots/T-STREET/spaces/{space}/state"
        await _mosquitto(
            "mosquitto_pub", settings, sensor.device_id, sensor.password, "-q", "1",
            "-t", topic, "-m", payload.decode(),
        )  # fmt: skip
    await platform.wait_for(f"{P}/lots/T-STREET/spaces/S0001/state", b"mine")
    assert platform.seen(f"{P}/lots/T-STREET/spaces/S0002/state") == []


async def test_a_device_receives_its_own_watermark_and_commands_and_nobody_elses(
    settings: Settings, platform: Platform, devices: Callable[..., Provisioned]
) -> None:
    gate, other = devices("gate"), devices("other")
    platform.publish(f"{P}/devices/{gate.device_id}/watermark", b'{"seq": 7}', retain=True)
    platform.publish(f"{P}/devices/{other.device_id}/watermark", b'{"seq": 9}', retain=True)
    # Mosquitto grants the SUBSCRIBE but checks read access on every delivery,
    # retained messages included: only the device's own watermark arrives.
    _, out = await _mosquitto(
        "mosquitto_sub", settings, gate.device_id, gate.password, "-q", "1", "-v",
        "-t", f"{P}/devices/{gate.device_id}/watermark",
        "-t", f"{P}/devices/{other.device_id}/watermark",
        "-t", f"{P}/devices/+/watermark",
        "-W", "2",
    )  # fmt: skip
    assert f'{P}/devices/{gate.device_id}/watermark {{"seq": 7}}' in out
    assert '{"seq": 9}' not in out

    received: list[str] = []
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=gate.device_id, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(gate.device_id, gate.password)
    client.on_connect = lambda c, *_: c.subscribe(
        [(f"{P}/lots/T-GATED/lanes/in1/commands", 1), (f"{P}/lots/T-OTHER/lanes/in1/commands", 1)]
    )
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: received.append(m.topic)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        platform.publish(f"{P}/lots/T-OTHER/lanes/in1/commands", b'{"for": "other"}')
        platform.publish(f"{P}/lots/T-GATED/lanes/in1/commands", b'{"for": "me"}')
        deadline = time.monotonic() + 10
        while f"{P}/lots/T-GATED/lanes/in1/commands" not in received:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert received == [f"{P}/lots/T-GATED/lanes/in1/commands"]
    finally:
        client.disconnect()
        client.loop_stop()


async def test_a_sign_reads_its_lots_availability_and_writes_nothing_there(
    settings: Settings, platform: Platform, devices: Callable[..., Provisioned]
) -> None:
    sign = devices("sign")
    platform.publish(f"{P}/lots/T-GATED/availability", b'{"free": 12}', retain=True)
    platform.publish(f"{P}/lots/T-OTHER/availability", b'{"free": 3}', retain=True)
    _, out = await _mosquitto(
        "mosquitto_sub", settings, sign.device_id, sign.password, "-v",
        "-t", f"{P}/lots/+/availability", "-W", "2",
    )  # fmt: skip
    assert '{"free": 12}' in out
    assert '{"free": 3}' not in out
    await _mosquitto(
        "mosquitto_pub", settings, sign.device_id, sign.password, "-q", "1",
        "-t", f"{P}/lots/T-GATED/availability", "-m", "forged",
    )  # fmt: skip
    await _mosquitto(
        "mosquitto_pub", settings, sign.device_id, sign.password, "-q", "1",
        "-t", f"{P}/devices/{sign.device_id}/status", "-m", "mine",
    )  # fmt: skip
    await platform.wait_for(f"{P}/devices/{sign.device_id}/status", b"mine")
    assert b"forged" not in platform.seen(f"{P}/lots/T-GATED/availability")


async def test_a_wrong_secret_is_refused(
    settings: Settings, platform: Platform, devices: Callable[..., Provisioned]
) -> None:
    gate = devices("gate")
    code, out = await _mosquitto(
        "mosquitto_pub", settings, gate.device_id, gate.password + "x", "-q", "1",
        "-t", f"{P}/lots/T-GATED/lanes/in1/passages", "-m", "with a wrong secret",
    )  # fmt: skip
    assert code != 0
    assert "not authori" in out.lower()
    code, out = await _mosquitto(
        "mosquitto_pub", settings, gate.device_id, devices("other").password, "-q", "1",
        "-t", f"{P}/lots/T-GATED/lanes/in1/passages", "-m", "with another device's secret",
    )  # fmt: skip
    assert code != 0
    await asyncio.sleep(0.3)
    assert platform.seen(f"{P}/lots/T-GATED/lanes/in1/passages") == []


async def test_a_revoked_device_is_cut_off_and_refused_without_a_broker_restart(
    db: asyncpg.Connection,
    settings: Settings,
    platform: Platform,
    devices: Callable[..., Provisioned],
    broker: service.Broker,
) -> None:
    gate = devices("gate")
    pid_file = settings.stack_dir / "mosquitto" / "mosquitto.pid"
    broker_pid = pid_file.read_text().strip()
    events: list[str] = []
    connected = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=gate.device_id, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(gate.device_id, gate.password)

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        events.append(f"connack {rc}")
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda _c, _u, _f, rc, _p: events.append(f"disconnect {rc}")
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        assert connected.wait(10)
        assert events == ["connack Success"]
        await service.revoke_device(db, gate.device_id, at=datetime.now(UTC), broker=broker)
        # the live connection is dropped, and paho's automatic reconnects are refused
        deadline = time.monotonic() + 15
        while "connack Not authorized" not in events:
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        assert events[1].startswith("disconnect")
    finally:
        client.disconnect()
        client.loop_stop()
    code, out = await _mosquitto(
        "mosquitto_pub", settings, gate.device_id, gate.password, "-q", "1",
        "-t", f"{P}/lots/T-GATED/lanes/in1/passages", "-m", "after revocation",
    )  # fmt: skip
    assert code != 0
    assert "not authori" in out.lower()
    assert pid_file.read_text().strip() == broker_pid
    assert platform.seen(f"{P}/lots/T-GATED/lanes/in1/passages") == []


async def test_a_revocation_during_another_reload_still_takes_effect(
    city_db: asyncpg.Connection, settings: Settings, tmp_path: Path, broker: service.Broker
) -> None:
    # Mosquitto drops a SIGHUP that arrives while it reloads (~0.5 s for the
    # seeded city): the registry must notice and signal again.
    secrets_file = tmp_path / "device-secrets.json"
    await service.provision_city(city_db, secrets_file=secrets_file, broker=broker)
    secret = service.read_secrets(secrets_file)["gz-demo-01-in1"]
    code, out = await _mosquitto(
        "mosquitto_pub", settings, "gz-demo-01-in1", secret, "-q", "1",
        "-t", f"{P}/lots/GZ-DEMO-01/lanes/in1/passages", "-m", "before",
    )  # fmt: skip
    assert code == 0, out
    for _ in range(3):
        broker.files.reload()  # keep the broker busy reloading the city
    await service.revoke_device(city_db, "gz-demo-01-in1", at=datetime.now(UTC), broker=broker)
    code, out = await _mosquitto(
        "mosquitto_pub", settings, "gz-demo-01-in1", secret, "-q", "1",
        "-t", f"{P}/lots/GZ-DEMO-01/lanes/in1/passages", "-m", "after",
    )  # fmt: skip
    assert code != 0
    assert "not authori" in out.lower()
