"""Lot availability: the gateway publishes the free count, retained, QoS 0, for signs."""

from __future__ import annotations

import json
import queue
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pipekit import DEMO, Pipeline

from parking.devices import service as devices
from parking.devices.model import DeviceKind


def _client(pipe: Pipeline, client_id: str, username: str, password: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    return client


class _Sign:
    """A sign subscribed to its lot's availability; what it receives lands in ``got``."""

    def __init__(self, pipe: Pipeline, device_id: str, password: str, suffix: str) -> None:
        self.got: queue.Queue[tuple[bool, int, Any]] = queue.Queue()
        client = _client(pipe, f"{device_id}-{suffix}", device_id, password)
        client.on_message = self._on_message
        topic = pipe.topics.availability(DEMO)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=0)
        client.connect(pipe.settings.mqtt_host, pipe.settings.mqtt_port)
        client.loop_start()
        self._client = client

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if message.payload:
            self.got.put((bool(message.retain), message.qos, json.loads(message.payload)))

    def wait(self, free: int, within: float = 30.0) -> tuple[bool, int, Any]:
        while True:
            retained, qos, body = self.got.get(timeout=within)
            if body["free"] == free:
                return retained, qos, body

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def test_sign_sees_the_free_count_drop_after_an_entry(pipeline: Pipeline) -> None:
    s = pipeline.settings
    capacity = int(await pipeline.conn.fetchval("SELECT capacity FROM lots WHERE id = $1", DEMO))
    gate = await pipeline.add_gate("in1")
    sign = await devices.add_device(
        pipeline.conn,
        lot_id=DEMO,
        kind=DeviceKind.SIGN,
        device_id=f"{DEMO}-sign-{pipeline.run}".lower(),
        broker=pipeline.broker,
    )
    # The broker keeps retained messages across tests: start from none.
    platform = _client(
        pipeline, f"availability-clear-{pipeline.run}", s.mqtt_username, s.mqtt_password
    )
    platform.connect(s.mqtt_host, s.mqtt_platform_port)
    platform.loop_start()
    platform.publish(pipeline.topics.availability(DEMO), b"", qos=1, retain=True).wait_for_publish(
        10
    )
    platform.disconnect()
    platform.loop_stop()

    pipeline.gateway().start()
    await pipeline.subscribed()
    live = _Sign(pipeline, sign.device_id, sign.password, "live")
    try:
        car = _client(pipeline, gate.device_id, gate.device_id, gate.password)
        car.connect(s.mqtt_host, s.mqtt_port)
        car.loop_start()
        body = {
            "device_id": gate.device_id,
            "seq": 1,
            "observed_at": datetime.now(UTC).isoformat(),
            "direction": "in",
            "plate": "赣B54321",
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": "gz-demo-01/in1/1.jpg",
        }
        car.publish(
            pipeline.topics.passages(DEMO, "in1"),
            json.dumps(body, ensure_ascii=False).encode(),
            qos=1,
        ).wait_for_publish(10)
        car.disconnect()
        car.loop_stop()
        retained, qos, seen = live.wait(capacity - 1)
        assert seen["lot_id"] == DEMO
        assert seen["capacity"] == capacity
        assert qos == 0
        assert not retained  # delivered live
        datetime.fromisoformat(seen["at"])
    finally:
        live.stop()

    # A sign that connects later gets the current count at once: it is retained.
    late = _Sign(pipeline, sign.device_id, sign.password, "late")
    try:
        retained, _qos, seen = late.wait(capacity - 1, within=10)
        assert retained
        assert set(seen) == {"lot_id", "capacity", "free", "at"}
    finally:
        late.stop()
