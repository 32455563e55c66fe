"""The platform's own MQTT connection for publishing (commands, availability).

paho runs its network loop in its own thread; ``publish`` only enqueues, so
calling it from the event loop never blocks on the socket.
"""

from __future__ import annotations

import itertools
import os

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

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
