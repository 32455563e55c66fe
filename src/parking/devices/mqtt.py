"""The platform's MQTT clients: the only module of the platform that imports paho.

paho runs its network loop in its own thread; what it receives is handed to the
asyncio event loop in batches (``SessionClient.take``), and what the platform
publishes is only enqueued from the loop (``publish`` never blocks on the socket).
Three clients: the gateway's session client (persistent MQTT 5 session, shared
subscriptions, manual acks), the publisher of the API and the persister (commands,
availability), and the registry's canary that waits for the broker to reload.
The device simulators are the devices' side of the contract and have their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = structlog.get_logger("parking.gateway")
_PUBACK = struct.Struct("!BBH")

#: Unacked deliveries the broker may have outstanding to us (MQTT 5 Receive
#: Maximum; Mosquitto's max_inflight_messages is 1000 too). Throughput with
#: manual acks is about window / batch latency: 1000 at ~30 ms is ~30k/s,
#: beyond what one Redis core applies; more only grows the batch a crash redoes.
RECEIVE_MAXIMUM: Final = 1000

#: Our own QoS 1 publishes (commands, watermarks) in flight at once; paho
#: rescans its in-flight list on every PUBACK, so thousands would be slower.
PUBLISH_INFLIGHT: Final = 100
KEEPALIVE_S: Final = 30


@dataclass(frozen=True, slots=True)
class Received:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    #: time.monotonic() when paho handed it over (the lane latency's start)
    arrived: float = 0.0


class SessionClient:
    """The gateway's paho client: persistent MQTT 5 session, shared subscriptions,
    manual acks; messages handed from paho's thread to the event loop in batches."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        subscriptions: list[str],
        loop: asyncio.AbstractEventLoop,
        session_expiry: int,
    ) -> None:
        self._loop = loop
        self._session_expiry = session_expiry
        self._subscriptions = subscriptions
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._inbox: deque[Received] = deque()
        self._waiting = False
        self._arrived = asyncio.Event()
        self._generation = 0
        self.connected = asyncio.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(PUBLISH_INFLIGHT)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # paho's thread ------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt_connect_refused", reason=str(reason))
            return
        with self._lock:
            # Message ids restart per connection: an ack for a message of an
            # earlier connection could ack a different message now. Those are
            # dropped; the broker redelivers them (persistent session).
            self._generation += 1
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        log.info(
            "mqtt_connected",
            session_present=bool(getattr(flags, "session_present", False)),
            generation=self._generation,
        )
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_subscribe(
        self, client: mqtt.Client, _: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("mqtt_subscribe_refused", reasons=refused, topics=self._subscriptions)
        else:
            log.info("mqtt_subscribed", topics=len(self._subscriptions))

    def _on_disconnect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        log.warning("mqtt_disconnected", reason=str(reason))
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: mqtt.Client, _: Any, message: mqtt.MQTTMessage) -> None:
        # message.topic raises on a topic that is not UTF-8; keep it for the dead letter.
        topic = bytes(message._topic).decode("utf-8", "replace")
        with self._lock:
            self._inbox.append(
                Received(
                    self._generation,
                    message.mid,
                    message.qos,
                    topic,
                    bytes(message.payload),
                    time.monotonic(),
                )
            )
            if self._waiting:
                self._waiting = False
                self._loop.call_soon_threadsafe(self._arrived.set)

    # the event loop's side ------------------------------------------------

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        # clean_start=False: paho's default (MQTT_CLEAN_START_FIRST_ONLY) would
        # drop everything the broker queued for us while we were down.
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=KEEPALIVE_S,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    async def take(self, limit: int) -> list[Received]:
        """Everything received so far (at most ``limit``), waiting for at least one."""
        while True:
            with self._lock:
                if self._inbox:
                    n = min(limit, len(self._inbox))
                    return [self._inbox.popleft() for _ in range(n)]
                self._arrived.clear()
                self._waiting = True
            await self._arrived.wait()

    def take_now(self, limit: int) -> list[Received]:
        """What is queued right now (at most ``limit``), without waiting."""
        with self._lock:
            n = min(limit, len(self._inbox))
            return [self._inbox.popleft() for _ in range(n)]

    def ack(self, items: list[Received]) -> int:
        """Acknowledge (PUBACK) the QoS 1 messages of the current connection; count acked."""
        with self._lock:
            generation = self._generation
        mids = [i.mid for i in items if i.qos == 1 and i.generation == generation]
        client = self._client
        out = getattr(client, "_out_packet", None)
        wake = getattr(client, "_sockpairW", None)
        if out is None or wake is None:
            for mid in mids:
                client.ack(mid, 1)
            return len(mids)
        # client.ack() queues one PUBACK and writes to paho's wake-up socket
        # pair per message: a syscall each, ~15 us at 1000 messages a batch.
        # Queue the whole batch the same way paho does (_send_command_with_mid,
        # paho-mqtt 2.x), then wake its network thread once.
        for mid in mids:
            out.append(
                {
                    "command": mqtt.PUBACK,
                    "mid": mid,
                    "qos": 1,
                    "pos": 0,
                    "to_process": 4,
                    "packet": _PUBACK.pack(mqtt.PUBACK, 2, mid),
                    "info": None,
                }
            )
        if mids:
            with contextlib.suppress(BlockingIOError):
                wake.send(b"0")
        return len(mids)

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)


# ------------------------------------------------------------------ publishing


_counter = itertools.count(1)


class Publisher:
    def __init__(self, *, host: str, port: int, username: str, password: str, role: str) -> None:
        # Publishing clients need no persistent session; the id only has to be
        # unique so that two API workers do not kick each other off the broker.
        client_id = f"platform-{role}-{os.getpid()}-{next(_counter)}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._host = host
        self._port = port

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)


# ------------------------------------------------------------------ broker reloads


def canary_accepted(host: str, port: int, username: str, secret: str, within: float) -> bool:
    """Whether the broker at host:port accepts ``username``/``secret`` within ``within``
    seconds (a reloading broker answers nothing until its reload is done)."""
    accepted: list[bool] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{username}-{os.getpid()}-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(username, secret)
    client.on_connect = lambda _c, _u, _f, reason, _p: accepted.append(not reason.is_failure)
    try:
        client.connect(host, port, keepalive=max(10, int(within)))
    except OSError:
        return False
    deadline = time.monotonic() + within
    # A reloading broker answers nothing until the reload is done: waiting
    # for this CONNACK is waiting for the reload.
    while not accepted and time.monotonic() < deadline:
        if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            break
    client.disconnect()
    return bool(accepted) and accepted[0]
