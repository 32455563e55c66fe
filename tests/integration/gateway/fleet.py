"""A small device fleet for the delivery tests: the device side of contracts/mqtt.md.

Each device keeps every event in an outbox until the platform's retained
watermark covers it, re-publishes the outbox after every reconnect and when
the watermark has not covered an event within ``republish_after`` (the
contract's 60 s, shortened for tests). Events get ``seq`` 1, 2, 3, ... per device.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from parking.config import Settings
from parking.devices.messages import Topics

T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)

#: ``make chaos`` runs the fault tests under city load (``CHAOS_LOAD=city``): every
#: fleet has this many times the devices, and sends this many times the events at
#: this many times the rate. ``make test`` runs them at the CI size (1).
LOAD_SCALE = 4 if os.environ.get("CHAOS_LOAD") == "city" else 1


@dataclass
class _Pending:
    topic: str
    payload: bytes
    sent_at: float


@dataclass
class OutboxDevice:
    device_id: str
    password: str
    topic: str
    settings: Settings
    republish_after: float = 3.0
    seq: int = 0
    watermark: int = 0
    outbox: dict[int, _Pending] = field(default_factory=dict)
    republished: int = 0
    #: outbox entries re-published because the device reconnected
    reconnect_resends: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: Any = None

    def start(self) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=mqtt.MQTTv5
        )
        client.username_pw_set(self.device_id, self.password)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=10)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        topics = Topics(self.settings.topic_prefix)
        client.subscribe(topics.watermark(self.device_id), qos=1)
        # Re-publish everything the watermark does not cover yet.
        with self._lock:
            pending = sorted(self.outbox.items())
        for _seq, item in pending:
            client.publish(item.topic, item.payload, qos=1)
            item.sent_at = time.monotonic()
        self.reconnect_resends += len(pending)

    def _on_message(self, client: mqtt.Client, _: Any, message: mqtt.MQTTMessage) -> None:
        try:
            seq = int(json.loads(message.payload)["seq"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self.watermark = max(self.watermark, seq)
            for done in [s for s in self.outbox if s <= self.watermark]:
                del self.outbox[done]

    def send(self, body: dict[str, Any]) -> int:
        with self._lock:
            self.seq += 1
            seq = self.seq
            payload = json.dumps(
                {"device_id": self.device_id, "seq": seq, **body}, ensure_ascii=False
            ).encode()
            self.outbox[seq] = _Pending(self.topic, payload, time.monotonic())
        self._client.publish(self.topic, payload, qos=1)
        return seq

    def stale(self) -> list[_Pending]:
        """Events the watermark has not covered within ``republish_after`` (marked re-sent)."""
        now = time.monotonic()
        with self._lock:
            found = [
                p for _, p in sorted(self.outbox.items()) if now - p.sent_at > self.republish_after
            ]
            for item in found:
                item.sent_at = now
        self.republished += len(found)
        return found

    def publish(self, item: _Pending) -> None:
        self._client.publish(item.topic, item.payload, qos=1)

    def republish_stale(self) -> int:
        found = self.stale()
        for item in found:
            self.publish(item)
        return len(found)

    @property
    def unconfirmed(self) -> int:
        with self._lock:
            return len(self.outbox)


class Fleet:
    """Gates and sensors driving a mixed load: entries, exits and space changes."""

    def __init__(self, devices: Iterable[OutboxDevice]) -> None:
        self.devices = list(devices)
        self._tick = 0
        self._parked: dict[str, list[str]] = {}
        self._random = random.Random(20261127)

    def start(self) -> None:
        for device in self.devices:
            device.start()

    def stop(self) -> None:
        for device in self.devices:
            device.stop()

    def event(self, device: OutboxDevice) -> dict[str, Any]:
        self._tick += 1
        at = (T0 + timedelta(seconds=self._tick)).isoformat()
        if "/spaces/" in device.topic:
            return {"observed_at": at, "occupied": self._tick % 3 != 0, "battery_pct": 77}
        direction = "in" if device.topic.split("/")[-2].startswith("in") else "out"
        lot = device.topic.split("/")[-4]
        parked = self._parked.setdefault(lot, [])
        if direction == "out" and parked:
            plate = parked.pop(0)
        else:
            plate = f"赣B{self._tick % 100000:05d}"
            if direction == "in":
                parked.append(plate)
        return {
            "observed_at": at,
            "direction": direction,
            "plate": plate,
            "plate_color": "blue",
            "confidence": 0.95,
            "image_ref": f"{device.device_id}/{self._tick}.jpg",
        }

    def send(self, total: int, *, rate: float | None = None) -> None:
        """Send ``total`` events round-robin over the fleet (optionally paced); both
        times `LOAD_SCALE`."""
        total *= LOAD_SCALE
        rate = rate * LOAD_SCALE if rate is not None else None
        started = time.monotonic()
        for n in range(total):
            device = self.devices[n % len(self.devices)]
            device.send(self.event(device))
            if rate is not None:
                ahead = (n + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def republish_stale(self) -> int:
        """Every device re-publishes what is overdue; devices are independent, so the
        broker sees their re-sends interleaved in no particular order."""
        work = [(d, item) for d in self.devices for item in d.stale()]
        self._random.shuffle(work)
        for device, item in work:
            device.publish(item)
        return len(work)

    @property
    def sent(self) -> dict[str, int]:
        return {d.device_id: d.seq for d in self.devices}

    @property
    def unconfirmed(self) -> int:
        return sum(d.unconfirmed for d in self.devices)
