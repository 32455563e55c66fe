"""The platform's MQTT clients: the only module of the platform that imports paho.

Every client is driven from the asyncio event loop through paho's external-loop
API (``on_socket_*`` callbacks, ``loop_read``/``loop_write``/``loop_misc``), with
no network thread of its own: a message paho reads is appended to the inbox on
the loop's thread, and a publish or an ack is written when the socket is
writable, in the loop's next turn. A paho thread used to wake for every QoS 1
publish and fight the event loop for the GIL (docs/performance.md); now
everything, paho's callbacks included, runs on the loop's thread and needs no
lock. paho's own reconnect (``loop_forever``'s) is not used: ``_LoopDriven``
reconnects with the same backoff.

Three clients: the gateway's session client (persistent MQTT 5 session, shared
subscriptions, manual acks), the publisher of the API and the persister (commands,
watermarks), and the registry's canary that waits for the broker to reload. The
device simulators are the devices' side of the contract and have their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Final, NamedTuple

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

#: How long after a (re)connect, or after the receive window was full and we acked,
#: the broker may still be handing over messages it held for us. Messages that
#: arrive then may have waited in its queue for any time at all.
FLUSH_S: Final = 2.0
#: Packets read per wake-up of the socket's reader. paho's ``loop_read`` reads
#: one packet when nothing of ours is in flight, so a backlog would cost a turn
#: of the event loop (an epoll call and a handle) per message; a burst reads on
#: until the socket is empty. Bounded so that a Redis reply waiting behind a
#: full window (1,000 messages, ~20 us each) waits ~2 ms, not ~20.
READ_BURST: Final = 100
#: Bytes read from the socket at once (see _Client): a few hundred messages.
READ_AHEAD: Final = 65536
#: Reconnect backoff, as paho's own loop had it (``reconnect_delay_set(1, 30)``):
#: the first retry 1 s after a loss, doubling while connects fail.
RECONNECT_MIN_S: Final = 1.0
RECONNECT_MAX_S: Final = 30.0
#: paho's keepalive bookkeeping (``loop_misc``); its own loop did it every second.
MISC_EVERY_S: Final = 1.0
#: paho's TCP connect blocks; it is first tried without blocking (see _connect).
CONNECT_TIMEOUT_S: Final = 5.0
#: How long ``stop`` may block to hand what is queued (acks, commands, the
#: DISCONNECT) to the socket: what is left is redelivered or re-sent anyway.
STOP_FLUSH_S: Final = 2.0


class _Client(mqtt.Client):
    """paho's client, reading ahead: paho reads a packet with three to five recv()
    calls (its type, each byte of its length, its body), and on a backlog of small
    messages those system calls are a good part of its cost. One recv() of up to
    READ_AHEAD bytes serves many packets instead. paho calls ``_sock_recv`` for every
    read (paho-mqtt 2.x); were it renamed, this would simply not be used."""

    _ahead: bytes = b""
    _at: int = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._at >= len(self._ahead):
            # BlockingIOError (nothing to read) and OSError go to paho as before.
            self._ahead = super()._sock_recv(READ_AHEAD)
            self._at = 0
            if not self._ahead:
                return b""  # the connection's end
        start = self._at
        self._at = min(start + bufsize, len(self._ahead))
        return self._ahead[start : self._at]

    def read_ahead(self) -> bool:
        """Whether bytes already read wait here (the socket will not say so)."""
        return self._at < len(self._ahead)

    def forget_read_ahead(self) -> None:
        """A new connection: nothing of the last one's bytes is read any more."""
        self._ahead, self._at = b"", 0


class _LoopDriven:
    """One paho client driven from the asyncio event loop: a reader on its socket, a
    writer while paho has something to write, ``loop_misc`` every second, connect and
    reconnect with backoff. Subclasses set the client's other callbacks and hear of
    connections through ``_opened``, ``_connected`` and ``_disconnected``."""

    def __init__(self, client: _Client, *, host: str, port: int, name: str) -> None:
        self._client = client
        self._host = host
        self._port = port
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False
        self._delay: float | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._ticking: asyncio.Task[None] | None = None
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        # paho 2.x internals that read a burst per wake-up (see _read); without
        # them one loop_read() per wake-up still works, only slower.
        self._packet_read = getattr(client, "_packet_read", None)
        self._rc_handle = getattr(client, "_loop_rc_handle", None)

    # hooks ------------------------------------------------------------------

    def _opened(self) -> None:
        """A new connection's socket is open (its CONNECT not sent yet)."""

    def _connected(self, flags: Any) -> None:
        """The broker accepted the connection (CONNACK)."""

    def _disconnected(self, reason: Any) -> None:
        """The connection is gone; a reconnect is scheduled unless stopping."""

    # the socket on the loop -------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._client.forget_read_ahead()
        self._loop.add_reader(sock, self._read)
        self._opened()

    def _on_socket_close(self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _on_socket_register_write(self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _on_socket_unregister_write(
        self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike
    ) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _read(self) -> None:
        client = self._client
        read, handle = self._packet_read, self._rc_handle
        if read is None or handle is None:
            client.loop_read()
        else:
            # What loop_read() does for each packet, until nothing is left to read.
            for _ in range(READ_BURST):
                if client.socket() is None:
                    return
                rc = read()
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    return
                if rc > 0:
                    handle(rc)
                    return
        if client.read_ahead() and self._loop is not None:
            # Read from the socket already, so it will not wake the reader again.
            self._loop.call_soon(self._read)

    # connecting -------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            raise RuntimeError(f"MQTT client {self._name} started twice")
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._ticking = loop.create_task(self._tick())
        self._connect_soon(0.0)

    def _backoff(self) -> float:
        self._delay = RECONNECT_MIN_S if self._delay is None else self._delay * 2
        self._delay = min(self._delay, RECONNECT_MAX_S)
        return self._delay

    def _connect_soon(self, delay: float) -> None:
        if self._stopping or self._loop is None:
            return
        if self._connecting is not None and not self._connecting.done():
            return
        self._connecting = self._loop.create_task(self._connect(delay))

    async def _connect(self, delay: float) -> None:
        while not self._stopping:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                # paho's reconnect() uses a blocking connect(): a broker host that
                # drops packets would stall the loop (and the API's requests with
                # it) for the whole timeout. Tried without blocking first, paho's
                # own connect right after is answered at once.
                _, probe = await asyncio.wait_for(
                    asyncio.open_connection(self._host, self._port), CONNECT_TIMEOUT_S
                )
                probe.close()
                self._client.reconnect()
            except (OSError, TimeoutError) as error:
                delay = self._backoff()
                log.warning(
                    "mqtt_connect_failed", client=self._name, error=str(error), retry_in=delay
                )
                continue
            return

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(MISC_EVERY_S)
            try:
                self._client.loop_misc()
            except Exception as error:  # keepalives go on, whatever one tick met
                log.warning("mqtt_tick_failed", client=self._name, error=repr(error))

    def _on_connect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            # The broker closes the connection next; _on_disconnect retries.
            log.warning("mqtt_connect_refused", client=self._name, reason=str(reason))
            return
        self._delay = None
        self._connected(flags)

    def _on_disconnect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._disconnected(reason)
        # A DISCONNECT from the broker is followed by the socket's end: two calls.
        if not self._stopping and (self._connecting is None or self._connecting.done()):
            self._connect_soon(self._backoff())

    def _stop(self) -> None:
        """Disconnect, writing what is queued first (blocking for STOP_FLUSH_S at most);
        then the socket is closed and nothing of this client runs any more."""
        self._stopping = True
        for task in (self._connecting, self._ticking):
            if task is not None:
                task.cancel()
        client = self._client
        sock = client.socket()
        if client.is_connected() and isinstance(sock, socket.socket):
            client.disconnect()
            sock.settimeout(STOP_FLUSH_S)
            client.loop_write()  # once the DISCONNECT is out, paho closes the socket
        sock = client.socket()
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            with contextlib.suppress(OSError):
                sock.close()


class Received(NamedTuple):
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    #: time.monotonic() when paho handed it over (the lane latency's start)
    arrived: float = 0.0
    #: whether it may have waited in the broker's queue for us: it arrived while the
    #: receive window was full or just after a (re)connect or a full window's ack.
    #: Otherwise the broker had nothing queued for us (MQTT 5: it sends as soon as
    #: the window has room), so its delay is the network's and the device's own,
    #: and ``sent_at - received_at`` measures the device's clock (contracts/mqtt.md
    #: "Clocks"); a queue's wait would read as a clock running behind.
    held: bool = False


class SessionClient(_LoopDriven):
    """The gateway's paho client: persistent MQTT 5 session, shared subscriptions,
    manual acks; what arrives is taken by the gateway in batches."""

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
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(username, password)
        client.max_inflight_messages_set(PUBLISH_INFLIGHT)
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        super().__init__(client, host=host, port=port, name=client_id)
        self._event_loop = loop
        self._session_expiry = session_expiry
        self._subscriptions = subscriptions
        self._inbox: deque[Received] = deque()
        self._arrived = asyncio.Event()
        self._generation = 0
        #: QoS 1 deliveries of this connection not acked yet (the broker sends no
        #: more than RECEIVE_MAXIMUM of them), whether that limit was reached, and
        #: until when (monotonic) arrivals may be messages the broker held for us
        self._unacked = 0
        self._window_full = False
        self._held_until = 0.0
        self.connected = asyncio.Event()

    # paho's callbacks (on the loop's thread) --------------------------------

    def _opened(self) -> None:
        # Message ids restart per connection: an ack for a message of an earlier
        # connection could ack a different message now. Those are dropped; the
        # broker redelivers them (persistent session).
        self._generation += 1
        self._unacked = 0
        self._window_full = False
        # what the persistent session queued while we were away comes now
        self._held_until = time.monotonic() + FLUSH_S

    def _connected(self, flags: Any) -> None:
        self._client.subscribe([(topic, 1) for topic in self._subscriptions])
        log.info(
            "mqtt_connected",
            session_present=bool(getattr(flags, "session_present", False)),
            generation=self._generation,
        )
        self.connected.set()

    def _disconnected(self, reason: Any) -> None:
        log.warning("mqtt_disconnected", reason=str(reason))
        self.connected.clear()

    def _on_subscribe(
        self, client: mqtt.Client, _: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("mqtt_subscribe_refused", reasons=refused, topics=self._subscriptions)
        else:
            log.info("mqtt_subscribed", topics=len(self._subscriptions))

    def _on_message(self, client: mqtt.Client, _: Any, message: mqtt.MQTTMessage) -> None:
        # message.topic raises on a topic that is not UTF-8; keep it for the dead letter.
        arrived = time.monotonic()
        if message.qos == 1:
            self._unacked += 1
            if self._unacked >= RECEIVE_MAXIMUM:
                self._window_full = True
        self._inbox.append(
            Received(
                self._generation,
                message.mid,
                message.qos,
                bytes(message._topic).decode("utf-8", "replace"),
                bytes(message.payload),
                arrived,
                self._window_full or arrived <= self._held_until,
            )
        )
        self._arrived.set()

    # the gateway's side ------------------------------------------------------

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
        self._start(self._event_loop)

    def stop(self) -> None:
        self._stop()

    async def take(self, limit: int) -> list[Received]:
        """Everything received so far (at most ``limit``), waiting for at least one."""
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        return self.take_now(limit)

    def take_now(self, limit: int) -> list[Received]:
        """What is queued right now (at most ``limit``), without waiting."""
        inbox = self._inbox
        return [inbox.popleft() for _ in range(min(limit, len(inbox)))]

    def ack(self, items: list[Received]) -> int:
        """Acknowledge (PUBACK) the QoS 1 messages of the current connection; count acked.

        The whole batch's PUBACKs leave in one write, now."""
        client = self._client
        generation = self._generation
        mids = [i.mid for i in items if i.qos == 1 and i.generation == generation]
        if not mids or client.socket() is None:
            return 0
        self._unacked = max(0, self._unacked - len(mids))
        if self._window_full:
            # the broker may have queued for us while the window was full: what it
            # sends on these acks may have waited
            self._window_full = False
            self._held_until = time.monotonic() + FLUSH_S
        out = getattr(client, "_out_packet", None)
        if out is None:
            for mid in mids:
                client.ack(mid, 1)
        else:
            # client.ack() queues one PUBACK per message, each a send() of its own
            # (~1,000 system calls a batch). Queued the way paho queues one
            # (_packet_queue, paho-mqtt 2.x), as one packet of all of them.
            packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids)
            out.append(
                {
                    "command": mqtt.PUBACK,
                    "mid": 0,
                    "qos": 0,
                    "pos": 0,
                    "to_process": len(packet),
                    "packet": packet,
                    "info": None,
                }
            )
        client.loop_write()
        return len(mids)

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)


# ------------------------------------------------------------------ publishing


_counter = itertools.count(1)


class Publisher(_LoopDriven):
    """Publishes for the API and the persister (commands, watermarks), from the event
    loop ``start`` runs on. Every worker process has its own."""

    def __init__(self, *, host: str, port: int, username: str, password: str, role: str) -> None:
        # Publishing clients need no persistent session; the id only has to be
        # unique so that two API workers do not kick each other off the broker.
        client_id = f"platform-{role}-{os.getpid()}-{next(_counter)}"
        # MQTT 3.1.1: a publisher uses nothing of version 5 (no properties, no shared
        # subscription), and paho decodes a v5 PUBACK into a reason code and a
        # Properties object, a fifth of what a scan's QoS 1 command cost in paho.
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
        )
        client.username_pw_set(username, password)
        super().__init__(client, host=host, port=port, name=client_id)

    def start(self) -> None:
        """Connect in the background, driven by the running event loop (called from it)."""
        self._client.connect_async(self._host, self._port, keepalive=KEEPALIVE_S)
        self._start(asyncio.get_running_loop())

    def stop(self) -> None:
        self._stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue ``payload``; it is written in the loop's next turn (QoS 1: and again
        after a reconnect until the broker acknowledges it)."""
        if threading.get_ident() != self._loop_thread and self._loop is not None:
            # paho's state belongs to the loop's thread (a handler run in a worker
            # thread, say): hand the publish over.
            self._loop.call_soon_threadsafe(self._publish, topic, payload, qos, retain)
            return
        self._publish(topic, payload, qos, retain)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
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
