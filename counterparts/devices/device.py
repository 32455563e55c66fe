"""One simulated gate, sensor or sign: the device side of contracts/mqtt.md, faithfully.

Kept whole (over 600 lines): one device class, driving paho through its external
loop hooks; the hooks and the outbox share the device's state.

A ``SimulatedDevice`` owns one paho client (client id = username = device id,
MQTT 5, clean start: the outbox, not a broker session, is what survives) and
drives it from the asyncio event loop through paho's external-loop hooks
(``on_socket_*`` + ``loop_read/loop_write/loop_misc``) instead of a network
thread per client, so one process can run a few thousand devices. Everything,
paho callbacks included, runs on the loop's thread: no locks.

Delivery, as the contract says:

- every event goes to the persistent outbox first (seq +1, never reused) and is
  published with QoS 1 from there;
- the retained watermark drops covered events from the outbox;
- after every reconnect the outbox is re-published (same seq, same payload);
  events paho had not got a PUBACK for are re-sent by paho itself, the rest
  by us, so nothing is sent twice by one reconnect;
- an event the watermark has not covered ``republish_after`` seconds after its
  PUBACK is published again (60 s in the contract; tests shorten it);
- a gate acks every command on ``.../commands/ack`` and treats a command id it
  has seen (kept in the outbox, so also across reboots) as done: ack again,
  act once.

Clocks (contract v1.1): every copy we publish of an event carries ``sent_at``,
the device clock when that copy left (the outbox keeps the event without it,
so a re-publish has a new ``sent_at`` and the same ``observed_at``); paho's own
retransmission of an unacknowledged packet is the same copy. ``clock_offset``
skews this device's clock (a clock that drifted, reset to 1970 or jumped), and
``sends_sent_at=False`` makes it a v1 device.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, cast

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from counterparts.devices.outbox import Outbox
from parking.clock import SHANGHAI, Clock, SystemClock
from parking.devices.messages import (
    Command,
    CommandAck,
    DeviceStatus,
    Passage,
    PlateColor,
    SpaceState,
    Topics,
    Watermark,
    encode,
)
from parking.devices.model import DeviceKind

log = logging.getLogger("counterparts.devices")
#: paho's own messages; connection resets it logs as errors are counted in DeviceStats
PAHO_LOG: Final = logging.getLogger("counterparts.devices.paho")

FIRMWARE: Final = "changbo-sim-1.0"

#: The contract's re-publish period for events the watermark has not covered.
REPUBLISH_AFTER_S: Final = 60.0

# paho rescans its in-flight list on every PUBACK, so a big in-flight window is
# slower, not faster (bench: 16.7k msg/s at 20, 7.6k at 1000); a device's
# event rate is a few per minute anyway. 50 absorbs a re-publish burst.
MAX_INFLIGHT: Final = 50
# Events handed to paho and not yet PUBACKed. paho's message ids are 16 bit: a
# client with ~65k unacknowledged publishes can never publish again, so a
# device with a huge outbox (platform down for hours) feeds paho in slices.
SEND_WINDOW: Final = 1000
KEEPALIVE_S: Final = 30
# Full-jitter exponential backoff: after a broker restart thousands of devices
# must not reconnect in the same millisecond (each CONNECT costs a PBKDF2 check,
# ~0.1 ms). A 10 s ceiling spreads 10k devices to ~1k CONNECTs/s, well within
# one Mosquitto, and brings a fleet back within ~10 s of the broker.
RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 10.0

_WATERMARK: Final = msgspec.json.Decoder(Watermark)
_COMMAND: Final = msgspec.json.Decoder(Command)
_TIME: Final = msgspec.json.Encoder()
_NO_SENT_AT: Final = b'"sent_at":null'


class _CommandId(msgspec.Struct):
    command_id: str


_COMMAND_ID: Final = msgspec.json.Decoder(_CommandId)

AckResult = Literal["done", "failed"]


@dataclass(frozen=True, slots=True)
class Identity:
    """What a device knows about itself: its credentials and where it is installed."""

    device_id: str
    password: str
    kind: DeviceKind
    lot_id: str
    lane_id: str | None = None
    space_id: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


@dataclass(slots=True)
class DeviceStats:
    events: int = 0
    published: int = 0
    republished: int = 0
    covered: int = 0
    refused_publishes: int = 0
    connects: int = 0
    refused_connects: int = 0
    failed_connects: int = 0
    disconnects: int = 0
    commands: int = 0
    repeated_commands: int = 0
    acks: int = 0
    availability: int = 0
    bad_messages: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Action:
    """What a gate did for a command: the barrier and the lane display."""

    command_id: str
    action: str
    display: str


@dataclass(slots=True)
class _Pending:
    topic: str
    payload: bytes
    #: monotonic time of the last PUBACK, None before the first
    acked_at: float | None = None
    sends: int = 0


@dataclass(slots=True)
class _Lifecycle:
    stopping: bool = False
    connect_task: asyncio.Task[None] | None = None
    tick_task: asyncio.Task[None] | None = None
    attempts: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the broker has answered the CONNECT (CONNACK, either way) or the
    # connection is gone: until then the broker may hold a session with our will.
    answered: asyncio.Event = field(default_factory=asyncio.Event)


class SimulatedDevice:
    def __init__(
        self,
        identity: Identity,
        *,
        broker: BrokerAddress,
        topics: Topics,
        outbox: Outbox,
        clock: Clock | None = None,
        republish_after: float = REPUBLISH_AFTER_S,
        keepalive: int = KEEPALIVE_S,
        firmware: str = FIRMWARE,
        rng: random.Random | None = None,
        clock_offset: timedelta = timedelta(0),
        sends_sent_at: bool = True,
    ) -> None:
        if identity.kind is DeviceKind.GATE and identity.lane_id is None:
            raise ValueError("a gate needs its lane")
        if identity.kind is DeviceKind.SENSOR and identity.space_id is None:
            raise ValueError("a sensor needs its space")
        self.identity = identity
        self.device_id = identity.device_id
        self.stats = DeviceStats()
        #: what the barrier did, newest last
        self.actions: deque[Action] = deque(maxlen=1000)
        #: set while connected and subscribed
        self.ready = asyncio.Event()
        self._broker = broker
        self._topics = topics
        self._outbox = outbox
        self._clock = clock or SystemClock()
        #: how far this device's clock is off (settable: NTP coming back sets it to 0)
        self.clock_offset = clock_offset
        self.sends_sent_at = sends_sent_at
        self._republish_after = republish_after
        self._keepalive = keepalive
        self._firmware = firmware
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._life = _Lifecycle()
        self._pending: dict[int, _Pending] = {}
        self._inflight: dict[int, int] = {}  # paho mid -> seq
        self._handed: set[int] = set()  # seqs paho holds without a PUBACK
        self._queue: deque[int] = deque()
        self._queued: set[int] = set()
        self._timers: list[tuple[float, int]] = []
        self._subscribe_mid: int | None = None
        self.watermark = outbox.watermark(self.device_id)
        self._client = self._make_client()

    # ----------------------------------------------------------- topics

    @property
    def status_topic(self) -> str:
        return self._topics.status(self.device_id)

    @property
    def watermark_topic(self) -> str:
        return self._topics.watermark(self.device_id)

    @property
    def commands_topic(self) -> str | None:
        lane = self.identity.lane_id
        if self.identity.kind is not DeviceKind.GATE or lane is None:
            return None
        return self._topics.commands(self.identity.lot_id, lane)

    def _subscriptions(self) -> list[tuple[str, int]]:
        ident = self.identity
        if ident.kind is DeviceKind.SIGN:
            return [(self._topics.availability(ident.lot_id), 0)]
        subs = [(self.watermark_topic, 1)]
        if self.commands_topic is not None:
            subs.append((self.commands_topic, 1))
        return subs

    # ----------------------------------------------------------- paho wiring

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self.device_id, self.identity.password)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        # An exception in our callbacks must not unwind paho's read loop
        # half-way through a packet; they are logged and counted instead.
        client.suppress_exceptions = True
        client.enable_logger(PAHO_LOG)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        # connect_async only stores the address; every attempt is reconnect().
        client.connect_async(
            self._broker.host, self._broker.port, keepalive=self._keepalive, clean_start=True
        )
        return client

    def _on_socket_open(self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, client.loop_read)

    def _on_socket_close(self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)

    def _on_socket_register_write(self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _on_socket_unregister_write(
        self, client: mqtt.Client, _: Any, sock: mqtt.SocketLike
    ) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the outbox and connect in the background (see ``ready``)."""
        if self._loop is not None:
            raise RuntimeError("a device object starts once; make a new one to reboot")
        self._loop = asyncio.get_running_loop()
        for event in self._outbox.pending(self.device_id):
            self._pending[event.seq] = _Pending(event.topic, event.payload)
        self._life.tick_task = self._loop.create_task(self._tick())
        self._connect_soon(0.0)

    async def wait_ready(self, within: float = 10.0) -> None:
        await asyncio.wait_for(self.ready.wait(), within)

    async def stop(self, grace: float = 5.0) -> None:
        """Shut down gracefully: offline status, DISCONNECT (no Last Will). The outbox stays."""
        self._life.stopping = True
        self._cancel_connect()
        if self._client.socket() is not None and not self._client.is_connected():
            # CONNECT sent, CONNACK not read yet. Dropping the socket now would leave
            # the broker to publish our Last Will (a retained offline status) whenever
            # it notices, maybe after whoever stopped us cleared that topic: let the
            # broker answer first, then leave cleanly like any connected device.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._life.answered.wait(), grace)
        if self._client.is_connected():
            self._publish_status(online=False)
            self._client.disconnect()
            try:
                await asyncio.wait_for(self._life.closed.wait(), grace)
            except TimeoutError:
                log.warning("%s: no clean disconnect within %.0f s", self.device_id, grace)
        self._drop_socket()
        await self._cancel_tick()

    async def crash(self, grace: float = 5.0) -> None:
        """Power cut: the connection dies without DISCONNECT, so the broker sends the Last Will.

        The device stays off; make a new ``SimulatedDevice`` to boot it again.
        """
        self._life.stopping = True
        self._cancel_connect()
        if self._client.socket() is not None:
            self._kill_connection()
            try:
                await asyncio.wait_for(self._life.closed.wait(), grace)
            except TimeoutError:
                self._drop_socket()
        await self._cancel_tick()

    def interrupt_network(self) -> None:
        """A network blip: the connection dies (no DISCONNECT); the device reconnects."""
        self._kill_connection()

    def _kill_connection(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            # shutdown, not close: paho's reader sees EOF and cleans up as for
            # any lost connection; the broker sees a TCP close without DISCONNECT.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _drop_socket(self) -> None:
        sock = self._client.socket()
        if isinstance(sock, socket.socket) and self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            sock.close()

    def _cancel_connect(self) -> None:
        task = self._life.connect_task
        if task is not None and not task.done():
            task.cancel()

    async def _cancel_tick(self) -> None:
        task = self._life.tick_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _connect_soon(self, delay: float) -> None:
        if self._life.stopping or self._loop is None:
            return
        task = self._life.connect_task
        if task is not None and not task.done():
            return
        self._life.connect_task = self._loop.create_task(self._connect(delay))

    def _backoff(self) -> float:
        ceiling = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2.0 ** min(self._life.attempts, 16))
        self._life.attempts += 1
        return self._rng.uniform(RECONNECT_MIN_S / 2, ceiling)

    async def _connect(self, delay: float) -> None:
        while not self._life.stopping:
            if delay > 0:
                await asyncio.sleep(delay)
            self._life.closed.clear()
            self._life.answered.clear()
            self._client.will_set(
                self.status_topic, self._status_payload(online=False), qos=1, retain=True
            )
            try:
                # A blocking TCP connect (paho has no other): instant on the
                # loopback; against a remote broker run fewer devices per process.
                self._client.reconnect()
            except OSError as error:
                self.stats.failed_connects += 1
                log.debug("%s: connect failed: %s", self.device_id, error)
                delay = self._backoff()
                continue
            return

    async def _tick(self) -> None:
        period = max(0.05, min(1.0, self._republish_after / 5))
        while True:
            await asyncio.sleep(period)
            try:
                if self._client.socket() is not None:
                    self._client.loop_misc()
                self._requeue_overdue()
                self._pump()
            except Exception:
                self.stats.errors += 1
                log.exception("%s: tick failed", self.device_id)

    # ----------------------------------------------------------- paho callbacks

    def _on_connect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._life.answered.set()
        if reason.is_failure:
            # Wrong secret or revoked: the broker closes the connection next,
            # and _on_disconnect retries with backoff, as a real device would.
            self.stats.refused_connects += 1
            log.info("%s: connection refused: %s", self.device_id, reason)
            return
        self.stats.connects += 1
        self._life.attempts = 0
        self._publish_status(online=True)
        _, self._subscribe_mid = client.subscribe(self._subscriptions())
        for seq in self._pending:
            if seq not in self._handed:
                self._enqueue(seq)
        self._pump()

    def _on_subscribe(
        self, client: mqtt.Client, _: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        if mid != self._subscribe_mid:
            return
        if any(r.is_failure for r in reasons):
            log.warning("%s: subscription refused: %s", self.device_id, reasons)
        self.ready.set()

    def _on_disconnect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.ready.clear()
        self.stats.disconnects += 1
        self._life.closed.set()
        self._life.answered.set()
        self._connect_soon(self._backoff())

    def _on_publish(
        self, client: mqtt.Client, _: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # a status or a command ack: not kept in the outbox
        self._handed.discard(seq)
        if reason.is_failure:
            self.stats.refused_publishes += 1
        pending = self._pending.get(seq)
        if pending is not None:
            pending.acked_at = time.monotonic()
            heapq.heappush(self._timers, (pending.acked_at + self._republish_after, seq))
        self._pump()

    def _on_message(self, client: mqtt.Client, _: Any, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic == self.watermark_topic:
                self._on_watermark(bytes(message.payload))
            elif message.topic == self.commands_topic:
                self._on_command(bytes(message.payload))
            elif self.identity.kind is DeviceKind.SIGN:
                self.stats.availability += 1
            else:
                self.stats.bad_messages += 1
        except Exception:
            self.stats.errors += 1
            log.exception("%s: handling %s failed", self.device_id, message.topic)

    # ----------------------------------------------------------- the contract

    def _on_watermark(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            mark = _WATERMARK.decode(payload).seq
        except msgspec.DecodeError:
            self.stats.bad_messages += 1
            log.warning("%s: bad watermark %r", self.device_id, payload[:100])
            return
        if mark <= self.watermark:
            return
        self.watermark = mark
        # _pending is in seq order: events are appended with increasing seqs.
        covered: list[int] = []
        for seq in self._pending:
            if seq > mark:
                break
            covered.append(seq)
        for seq in covered:
            del self._pending[seq]
            self._queued.discard(seq)
        self._outbox.cover(self.device_id, mark)
        self.stats.covered += len(covered)

    def _on_command(self, payload: bytes) -> None:
        try:
            command = _COMMAND.decode(payload)
        except msgspec.DecodeError:
            self.stats.bad_messages += 1
            try:
                command_id = _COMMAND_ID.decode(payload).command_id
            except msgspec.DecodeError:
                log.warning("%s: undecodable command %r", self.device_id, payload[:200])
                return
            self._ack(command_id, "failed")
            return
        self.stats.commands += 1
        previous = self._outbox.command_result(self.device_id, command.command_id)
        if previous is not None:
            # The platform re-sends until acked: our ack was lost, not the action.
            self.stats.repeated_commands += 1
            self._ack(command.command_id, cast(AckResult, previous))
            return
        self.actions.append(Action(command.command_id, command.action, command.display))
        self._outbox.record_command(self.device_id, command.command_id, "done")
        self._ack(command.command_id, "done")

    def _ack(self, command_id: str, result: AckResult) -> None:
        lane = self.identity.lane_id
        assert lane is not None
        ack = CommandAck(command_id=command_id, result=result, at=self._now())
        self._client.publish(
            self._topics.command_ack(self.identity.lot_id, lane), encode(ack), qos=1
        )
        self.stats.acks += 1

    def _now(self) -> datetime:
        # Devices report their local wall clock with its offset (+08:00).
        return (self._clock.now() + self.clock_offset).astimezone(SHANGHAI)

    def _stamped(self, payload: bytes) -> bytes:
        """This copy of an outbox event, with ``sent_at`` (v1.1). The outbox holds the
        compact JSON msgspec wrote, ``"sent_at":null`` included, so the value is
        spliced in instead of decoding and re-encoding every copy (inside a JSON
        string a quote is escaped, so the pattern only matches the field itself).
        A v1 device leaves the field out."""
        if _NO_SENT_AT not in payload:
            return payload  # an outbox event written before v1.1
        if not self.sends_sent_at:
            return payload.replace(b"," + _NO_SENT_AT, b"", 1)
        return payload.replace(_NO_SENT_AT, b'"sent_at":%s' % _TIME.encode(self._now()), 1)

    def _status_payload(self, *, online: bool) -> bytes:
        return encode(
            DeviceStatus(
                device_id=self.device_id, online=online, at=self._now(), firmware=self._firmware
            )
        )

    def _publish_status(self, *, online: bool) -> None:
        self._client.publish(
            self.status_topic, self._status_payload(online=online), qos=1, retain=True
        )

    # ----------------------------------------------------------- events

    def emit_passage(
        self,
        *,
        direction: Literal["in", "out"],
        plate: str | None,
        plate_color: PlateColor | None,
        confidence: float | None,
        image_ref: str | None,
    ) -> int:
        """A car passed the gate: keep the passage in the outbox and publish it. Returns its seq."""
        lane = self.identity.lane_id
        if self.identity.kind is not DeviceKind.GATE or lane is None:
            raise TypeError(f"{self.device_id} is not a gate")

        def build(seq: int) -> bytes:
            return encode(
                Passage(
                    device_id=self.device_id,
                    seq=seq,
                    observed_at=self._now(),
                    direction=direction,
                    plate=plate,
                    plate_color=plate_color,
                    confidence=confidence,
                    image_ref=image_ref,
                )
            )

        return self._emit(self._topics.passages(self.identity.lot_id, lane), build)

    def emit_space_state(self, *, occupied: bool, battery_pct: int | None) -> int:
        """The sensor's space changed: keep the state in the outbox and publish it."""
        space = self.identity.space_id
        if self.identity.kind is not DeviceKind.SENSOR or space is None:
            raise TypeError(f"{self.device_id} is not a sensor")

        def build(seq: int) -> bytes:
            return encode(
                SpaceState(
                    device_id=self.device_id,
                    seq=seq,
                    observed_at=self._now(),
                    occupied=occupied,
                    battery_pct=battery_pct,
                )
            )

        return self._emit(self._topics.space_state(self.identity.lot_id, space), build)

    def _emit(self, topic: str, build: Callable[[int], bytes]) -> int:
        event = self._outbox.append(self.device_id, topic, build)
        self._pending[event.seq] = _Pending(event.topic, event.payload)
        self.stats.events += 1
        self._enqueue(event.seq)
        self._pump()
        return event.seq

    # ----------------------------------------------------------- sending

    @property
    def outbox_size(self) -> int:
        """Events not yet covered by the watermark."""
        return len(self._pending)

    def pending_seqs(self) -> list[int]:
        return list(self._pending)

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def _enqueue(self, seq: int) -> None:
        if seq not in self._queued:
            self._queued.add(seq)
            self._queue.append(seq)

    def _requeue_overdue(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, seq = heapq.heappop(self._timers)
            pending = self._pending.get(seq)
            if pending is None or seq in self._handed or pending.acked_at is None:
                continue  # covered meanwhile, or in flight again (a new timer follows its PUBACK)
            if pending.acked_at + self._republish_after > now:
                continue  # superseded by a later timer of the same event
            self._enqueue(seq)

    def _pump(self) -> None:
        if not self._client.is_connected():
            return
        while self._queue and len(self._inflight) < SEND_WINDOW:
            seq = self._queue.popleft()
            self._queued.discard(seq)
            pending = self._pending.get(seq)
            if pending is None or seq in self._handed:
                continue
            info = self._client.publish(pending.topic, self._stamped(pending.payload), qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._enqueue(seq)
                break
            self._inflight[info.mid] = seq
            self._handed.add(seq)
            if pending.sends == 0:
                self.stats.published += 1
            else:
                self.stats.republished += 1
            pending.sends += 1
