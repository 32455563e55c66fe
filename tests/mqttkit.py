"""The platform's side of the broker in tests of the device side (registry ACLs, simulators).

Importable from any test module (pytest puts tests/ on sys.path for its conftest).
Each module uses its own topic prefix, so what it publishes never queues up in
the gateway tests' persistent shared sessions on the stack's prefix.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from parking.config import Settings
from parking.devices import service
from parking.devices.messages import Topics
from parking.stack import service as stack_service


async def prefixed_broker(
    settings: Settings, db_url: str, prefix: str
) -> AsyncIterator[service.Broker]:
    """The stack's broker with ``prefix``; the stack's own prefix is restored afterwards."""
    yield replace(stack_service.mosquitto_broker(settings), topics=Topics(prefix))
    # Later tests (and `parking run`) need the platform user on the stack's prefix.
    conn = await asyncpg.connect(db_url)
    try:
        await service.sync_broker(conn, stack_service.mosquitto_broker(settings))
    finally:
        await conn.close()


class PlatformClient:
    """Subscribes to everything under the prefix as the platform user; records what it sees."""

    def __init__(self, settings: Settings, prefix: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-platform-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.mqtt_host, settings.mqtt_platform_port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _: mqtt.Client, __: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def seen(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    async def wait_for(self, topic: str, payload: bytes, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while payload not in self.seen(topic):
            assert time.monotonic() < deadline, f"{payload!r} never arrived on {topic}"
            await asyncio.sleep(0.02)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
