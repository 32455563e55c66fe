"""A gate as locust sees it: one device connection that keeps the device contract and
reports what it waits for as requests, named like HTTP requests in locust's tables.

- ``mqtt: passage in`` / ``mqtt: passage out``: publish to the broker's PUBACK (QoS 1);
- ``mqtt: entry -> command`` / ``mqtt: exit -> command``: publish to the lane's
  command (the barrier opens, or holds), acknowledged on ``commands/ack``;
- ``mqtt: event -> watermark``: publish to the retained watermark that covers it
  (the event is in PostgreSQL).

The contract's device side: client id = username = the device id (its own
secret), every event kept until its watermark, the outbox published again after
a reconnect and when the watermark is 60 s late, seqs continuing above what the
platform has. paho's network loop runs in a greenlet (locust patches threads).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import scenario
from locust.env import Environment
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from parking.clock import SHANGHAI

REQUEST_TYPE = "MQTT"


def iso(at: datetime) -> str:
    return at.astimezone(SHANGHAI).isoformat(timespec="milliseconds")


@dataclass
class _Pending:
    topic: str
    body: dict[str, Any]
    first_at: float
    last_at: float


class GateClient:
    def __init__(
        self,
        env: Environment,
        *,
        device_id: str,
        password: str,
        lot_id: str,
        lane_id: str,
        seq: int,
        host: str,
        port: int,
        prefix: str,
    ) -> None:
        self.env = env
        self.device_id = device_id
        self.lot_id = lot_id
        self.lane_id = lane_id
        self.seq = seq
        self.topic = f"{prefix}/lots/{lot_id}/lanes/{lane_id}/passages"
        self._commands_topic = f"{prefix}/lots/{lot_id}/lanes/{lane_id}/commands"
        self._ack_topic = f"{self._commands_topic}/ack"
        self._watermark_topic = f"{prefix}/devices/{device_id}/watermark"
        self._lock = threading.Lock()
        self.pending: dict[int, _Pending] = {}
        self._inflight: dict[int, tuple[str, float, int]] = {}
        #: plate -> (waiting since, event set when its command came, the command)
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self.connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id,
                             protocol=mqtt.MQTTv5)  # fmt: skip
        client.username_pw_set(device_id, password)
        client.max_inflight_messages_set(50)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        self._client = client

    # ------------------------------------------------------------ reporting

    def _fire(
        self, name: str, started: float, error: Exception | None = None, size: int = 0
    ) -> None:
        self.env.events.request.fire(
            request_type=REQUEST_TYPE, name=name, response_time=(time.time() - started) * 1000,
            response_length=size, exception=error, context={"device": self.device_id},
        )  # fmt: skip

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._fire("mqtt: connect", time.time(), RuntimeError(f"refused: {reason}"))
            return
        client.subscribe([(self._watermark_topic, 1), (self._commands_topic, 1)])
        self.connected.set()
        with self._lock:
            again = sorted(self.pending.items())
        for seq, item in again:
            self._send(seq, item, "mqtt: re-published")

    def _on_disconnect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, _: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            sent = self._inflight.pop(mid, None)
        if sent is None:
            return
        name, started, size = sent
        error = RuntimeError(f"PUBACK {reason}") if reason.is_failure else None
        self._fire(name, started, error, size)

    def _on_message(self, client: mqtt.Client, _: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._watermark_topic and message.payload:
            mark = int(json.loads(message.payload)["seq"])
            with self._lock:
                covered = [(s, p) for s, p in self.pending.items() if s <= mark]
                for seq, _p in covered:
                    del self.pending[seq]
            for _seq, item in covered:
                self._fire("mqtt: event -> watermark", item.first_at)
        elif message.topic == self._commands_topic:
            command = json.loads(message.payload)
            ack = {"command_id": command["command_id"], "result": "done",
                   "at": iso(datetime.now(UTC))}  # fmt: skip
            client.publish(self._ack_topic, json.dumps(ack), qos=1)
            waiting = self._waiting.get(command.get("plate") or "")
            if waiting is not None:
                waiting[1].append(command)
                waiting[0].set()

    # ------------------------------------------------------------ the device

    def _send(self, seq: int, item: _Pending, name: str) -> None:
        body = {**item.body, "sent_at": iso(datetime.now(UTC))}
        payload = json.dumps(body, ensure_ascii=False).encode()
        item.last_at = time.time()
        info = self._client.publish(item.topic, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._fire(name, time.time(), RuntimeError(f"publish {info.rc}"))
            return
        with self._lock:
            self._inflight[info.mid] = (name, time.time(), len(payload))

    def passage(
        self, direction: str, plate: str, *, observed_at: datetime, wait_command: bool
    ) -> dict[str, Any] | None:
        """Publish a passage (kept until its watermark); with ``wait_command``, wait for
        the lane's command and report how long it took."""
        self.seq += 1
        body = {
            "device_id": self.device_id, "seq": self.seq, "observed_at": iso(observed_at),
            "direction": direction, "plate": plate, "plate_color": "blue", "confidence": 0.96,
            "image_ref": f"load/{self.device_id}/{self.seq}.jpg",
        }  # fmt: skip
        now = time.time()
        item = _Pending(self.topic, body, now, now)
        signal: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        if wait_command:
            self._waiting[plate] = signal
        with self._lock:
            self.pending[self.seq] = item
        self._send(self.seq, item, f"mqtt: passage {direction}")
        if not wait_command:
            return None
        name = "mqtt: entry -> command" if direction == "in" else "mqtt: exit -> command"
        try:
            if not signal[0].wait(scenario.COMMAND_WITHIN_S):
                self._fire(name, now, TimeoutError(f"no command in {scenario.COMMAND_WITHIN_S} s"))
                return None
            self._fire(name, now)
            return signal[1][0]
        finally:
            self._waiting.pop(plate, None)

    def republish_late(self) -> None:
        """The contract: an event the watermark has not covered for 60 s goes out again."""
        limit = time.time() - scenario.REPUBLISH_AFTER_S
        with self._lock:
            late = [(s, p) for s, p in self.pending.items() if p.last_at < limit]
        for seq, item in late:
            self._send(seq, item, "mqtt: re-published")

    def overdue(self) -> int:
        """Events the watermark has not covered within WATERMARK_WITHIN_S."""
        limit = time.time() - scenario.WATERMARK_WITHIN_S
        with self._lock:
            return sum(1 for p in self.pending.values() if p.first_at < limit)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def earlier(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)
