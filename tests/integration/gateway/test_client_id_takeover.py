"""MQTT identities cannot be stolen: a device that connects with a gateway's client
id gets nothing, neither the gateway's deliveries nor its connection."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pipekit import DEMO, Pipeline, eventually, mosquitto

from parking.config import mqtt_identity


class _Client:
    """A paho client that records its connect result, its messages and its disconnects."""

    def __init__(
        self, client_id: str, username: str, password: str, subscribe: tuple[str, ...] = ()
    ) -> None:
        self._subscribe = subscribe
        self.connected = threading.Event()
        self.refused: list[str] = []
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects: list[str] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(str(rc))

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            self.refused.append(str(rc))
        elif self._subscribe:
            _c.subscribe([(topic, 1) for topic in self._subscribe])
        self.connected.set()

    def connect(self, host: str, port: int, *, resume: bool = False) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect(host, port, clean_start=not resume, properties=properties)
        self.client.loop_start()
        assert self.connected.wait(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_a_device_with_a_gateways_client_id_gets_nothing(pipeline: Pipeline) -> None:
    s = pipeline.settings
    gate = await pipeline.add_gate("in1")
    thief_device = await pipeline.add_gate("out1")
    gateway = pipeline.gateway("gateway-1").start()
    await pipeline.subscribed("gateway-1")
    log_file = mosquitto(s).root / "mosquitto.log"
    broker_log_before = log_file.read_text(errors="replace")

    # The console watches the entry lane's commands on the platform listener.
    watcher = _Client(
        f"takeover-watch-{pipeline.run}",
        s.mqtt_username,
        s.mqtt_password,
        subscribe=(pipeline.topics.commands(DEMO, "in1"),),
    )
    watcher.connect(s.mqtt_host, s.mqtt_platform_port)

    # The thief resumes "gateway-1" on the device listener and joins the share
    # group by the name the gateways are started with.
    thief = _Client(
        "gateway-1",
        thief_device.device_id,
        thief_device.password,
        subscribe=tuple(f"$share/gateways/{f}" for f in pipeline.topics.subscriptions(None)),
    )
    thief.connect(s.mqtt_host, s.mqtt_port, resume=True)
    assert thief.refused == []
    # ... and tries the platform listener, where no device account exists.
    intruder = _Client("gateway-1", thief_device.device_id, thief_device.password)
    try:
        intruder.connect(s.mqtt_host, s.mqtt_platform_port, resume=True)
        assert intruder.refused, "a device account logged in on the platform listener"
    finally:
        intruder.stop()

    camera = _Client(gate.device_id, gate.device_id, gate.password)
    camera.connect(s.mqtt_host, s.mqtt_port)
    try:
        # While the thief is connected, and after it left its session (and its
        # share-group subscription) behind: every passage reaches the gateway.
        for seq in (1, 2, 3, 4, 5, 6):
            if seq == 4:
                thief.stop()
            passage = {
                "device_id": gate.device_id,
                "seq": seq,
                "observed_at": datetime.now(UTC).isoformat(),
                "direction": "in",
                "plate": f"赣B7777{seq}",
                "plate_color": "blue",
                "confidence": 0.97,
                "image_ref": f"gz-demo-01/in1/{seq}.jpg",
            }
            camera.client.publish(
                pipeline.topics.passages(DEMO, "in1"),
                json.dumps(passage, ensure_ascii=False).encode(),
                qos=1,
            ).wait_for_publish(10)

            async def answered(seq: int = seq) -> bool:
                plate = f"赣B7777{seq}".encode()
                return any(plate in p for _, p in watcher.messages)

            await eventually(answered, within=15, what=f"the gateway's answer to passage {seq}")
        await asyncio.sleep(1.0)
    finally:
        camera.stop()
        thief.stop()
        watcher.stop()
        # Leave no session of the thief on the shared test broker.
        cleaner = _Client("gateway-1", thief_device.device_id, thief_device.password)
        cleaner.client.connect(s.mqtt_host, s.mqtt_port, clean_start=True)
        cleaner.client.disconnect()

    # ... was never disconnected, and the thief received nothing of it.
    assert gateway.alive()
    assert gateway.log().count("mqtt_subscribed") == 1
    assert "mqtt_disconnected" not in gateway.log()
    assert thief.messages == []
    new_broker_log = log_file.read_text(errors="replace")[len(broker_log_before) :]
    assert "gateway-1 already connected" not in new_broker_log
    # The broker knew the thief by its own name, whatever id it asked for.
    assert f"as {thief_device.device_id} " in new_broker_log


def test_each_platform_process_has_its_own_broker_user(pipeline: Pipeline) -> None:
    s = pipeline.settings
    names = {mqtt_identity(s, p)[0] for p in ("gateway", "persister", "api")}
    assert len(names) == 3
    assert s.mqtt_username not in names
    platform_passwords = mosquitto(s).platform_password_file.read_text()
    device_passwords = mosquitto(s).password_file.read_text()
    for name in names:
        assert f"\n{name}:" in f"\n{platform_passwords}"
        assert f"\n{name}:" not in f"\n{device_passwords}"
    passwords = {mqtt_identity(s, p)[1] for p in ("gateway", "persister", "api")}
    assert len(passwords) == 3
    assert s.mqtt_password not in passwords
