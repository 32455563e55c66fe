"""The devices' side of a replay: several processes, each an event loop of MQTT clients.

One process per ~2,500 devices (``processes``): the whole city's 9,144 devices
at 1,000 events/s in one Python process leave its event loop no slack for
keepalives and watermarks, and the generator's collapse is then taken for the
platform's (issue 17). Each process drives whole lots, so a lot's entries and
exits leave from one loop in day order.

Each device is a ``counterparts.devices.device.SimulatedDevice`` (paho driven
from the loop through its external-loop hooks, its own credentials, client id =
username, the persistent outbox, re-publish after reconnects and when the
watermark is late), with what a replay adds: events observed at the replayed
day's times (``observed_at``; ``sent_at`` stays the real clock, so the platform
sees a device with a right clock delivering a backlog), faults (a copy published
twice, an event held back behind the next one, a malformed payload, an outage
with its backlog) and the end-to-end lag of every event (first publish to the
watermark that covers it).

Parent and processes talk over a pipe: ``ready`` once connected, ``go`` with the
start time, ``stats`` every second, ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import msgspec
from msgspec import field

from counterparts.devices.device import (
    _WATERMARK,
    PAHO_LOG,
    BrokerAddress,
    Identity,
    SimulatedDevice,
    _Pending,
)
from counterparts.devices.outbox import Outbox
from counterparts.replay.model import Event, Fault, Kind, Partition
from parking.clock import SHANGHAI
from parking.devices.messages import Passage, SpaceState, Topics, encode
from parking.devices.model import DeviceKind

log = logging.getLogger("counterparts.replay")

#: devices per process: beyond a few thousand paho clients one loop falls behind
DEVICES_PER_PROCESS: Final = 2500
#: connects per second per process (each costs the broker a PBKDF2 check)
CONNECT_RATE: Final = 600.0
#: how often a process reports (seconds)
REPORT_EVERY_S: Final = 1.0
#: the loop yields after this many emitted events, so MQTT traffic keeps flowing
EMIT_SLICE: Final = 200


class DeviceSpec(msgspec.Struct, array_like=True, frozen=True):
    device_id: str
    password: str
    kind: str
    lot_id: str
    lane_id: str | None
    space_id: str | None
    #: the highest seq the platform already has of this device; ours start above
    base_seq: int


class WorkerSpec(msgspec.Struct, frozen=True):
    index: int
    host: str
    port: int
    topic_prefix: str
    speedup: float
    begin_ms: int
    republish_after: float
    outbox: str
    devices: list[DeviceSpec]
    partition: Partition


class Counts(msgspec.Struct, kw_only=True):
    """The devices' side's counters, per process and summed."""

    devices: int = 0
    online: int = 0
    connects: int = 0
    disconnects: int = 0
    failed_connects: int = 0
    refused_connects: int = 0
    emitted: int = 0
    to_emit: int = 0
    published: int = 0
    republished: int = 0
    duplicates: int = 0
    bad_published: int = 0
    covered: int = 0
    outbox: int = 0
    offline: int = 0
    commands: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    #: day time reached (ms): a process's, the slowest process's in a sum
    day_ms: int = 0
    done: bool = False


class WorkerStats(Counts, kw_only=True):
    index: int
    #: lags (s) of events covered since the last report: day events / backlog
    lags: list[float] = field(default_factory=list)
    backlog_lags: list[float] = field(default_factory=list)


class FleetTotals(Counts, kw_only=True):
    processes: int = 0


_SUMMED: Final = tuple(name for name in Counts.__struct_fields__ if name not in ("day_ms", "done"))


_ISO: Final = msgspec.json.Encoder()


def _day_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(SHANGHAI)


class ReplayDevice(SimulatedDevice):
    """A SimulatedDevice that publishes the replayed day's events, faults included."""

    def __init__(self, identity: Identity, **kwargs: Any) -> None:
        super().__init__(identity, **kwargs)
        self._offline = False
        #: seq -> (monotonic time of its first publish, counts for the day's lag)
        self._sent: dict[int, tuple[float, bool]] = {}
        self._held: list[int] = []
        self.lags: list[float] = []
        self.backlog_lags: list[float] = []
        self.duplicates = 0
        self.bad_published = 0
        #: malformed payloads waiting for a connection
        self._raw: list[tuple[str, bytes]] = []

    # -------------------------------------------------------------- outages

    def go_offline(self) -> None:
        """Off the network: the connection drops (the broker sends the Last Will) and no
        reconnect is tried until ``come_back``; events go on into the outbox."""
        self._offline = True
        self._kill_connection()

    def come_back(self) -> None:
        self._offline = False
        self._connect_soon(0.0)

    def _connect_soon(self, delay: float) -> None:
        if self._offline:
            return
        super()._connect_soon(delay)

    # -------------------------------------------------------------- events

    def emit(self, event: Event, *, day_event: bool) -> int:
        """Keep the event in the outbox (the next seq) and publish it, unless held back."""
        observed = _day_time(event.at_ms)
        topic = event.topic or ""
        build: Callable[[int], bytes]
        if event.kind is Kind.PASSAGE:
            lane = self.identity.lane_id
            assert lane is not None
            topic = self._topics.passages(self.identity.lot_id, lane)
            direction = "in" if event.direction == "in" else "out"

            def build(seq: int) -> bytes:
                return encode(
                    Passage(
                        device_id=self.device_id, seq=seq, observed_at=observed,
                        direction=direction, plate=event.plate, plate_color=event.color,  # type: ignore[arg-type]
                        confidence=event.confidence, image_ref=event.image_ref,
                    )
                )  # fmt: skip
        elif event.kind is Kind.SPACE:
            space = self.identity.space_id
            assert space is not None
            topic = self._topics.space_state(self.identity.lot_id, space)
            occupied = bool(event.occupied)

            def build(seq: int) -> bytes:
                return encode(
                    SpaceState(
                        device_id=self.device_id, seq=seq, observed_at=observed,
                        occupied=occupied, battery_pct=event.battery,
                    )
                )  # fmt: skip
        elif event.kind is Kind.BAD_IN_SEQUENCE:
            template = event.payload or b""
            stamp = _ISO.encode(observed).strip(b'"')

            def build(seq: int) -> bytes:
                return template.replace(b"{seq}", str(seq).encode()).replace(b"{at}", stamp)
        else:
            raise ValueError(f"{event.kind!r} takes no seq")
        stored = self._outbox.append(self.device_id, topic, build)
        self._pending[stored.seq] = _Pending(stored.topic, stored.payload)
        self.stats.events += 1
        self._sent[stored.seq] = (time.monotonic(), day_event and not self._offline)
        if event.fault & Fault.HOLD_BACK:
            self._held.append(stored.seq)
            return stored.seq
        self._enqueue(stored.seq)
        for seq in self._held:
            self._enqueue(seq)  # after the next one: out of order by seq
        self._held.clear()
        self._pump()
        if event.fault & Fault.DUPLICATE and self._loop is not None:
            self._loop.call_later(random.uniform(0.2, 2.0), self._publish_copy, stored.seq)
        return stored.seq

    def flush_held(self) -> None:
        for seq in self._held:
            self._enqueue(seq)
        self._held.clear()
        self._pump()

    def _publish_copy(self, seq: int) -> None:
        """A second copy of an event (same seq, same payload), outside paho's tracking."""
        pending = self._pending.get(seq)
        if pending is None or not self._client.is_connected():
            return
        self._client.publish(pending.topic, self._stamped(pending.payload), qos=1)
        self.duplicates += 1

    def publish_raw(self, topic: str, payload: bytes) -> None:
        """A malformed payload, once, with the device's own connection (as soon as it has one)."""
        self._raw.append((topic, payload))
        self._flush_raw()

    def _flush_raw(self) -> None:
        if not self._client.is_connected():
            return
        for topic, payload in self._raw:
            self._client.publish(topic, payload, qos=1)
            self.bad_published += 1
        self._raw.clear()

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        super()._on_connect(client, userdata, flags, reason, properties)
        if not reason.is_failure:
            self._flush_raw()

    def _on_watermark(self, payload: bytes) -> None:
        try:
            mark = _WATERMARK.decode(payload).seq if payload else 0
        except msgspec.DecodeError:
            mark = 0
        if mark > self.watermark:
            now = time.monotonic()
            for seq in [s for s in self._sent if s <= mark]:
                sent, day = self._sent.pop(seq)
                (self.lags if day else self.backlog_lags).append(now - sent)
        super()._on_watermark(payload)


@dataclass
class _Clock:
    t0: float
    begin_ms: int
    speedup: float

    def day_ms(self) -> int:
        return self.begin_ms + int((time.time() - self.t0) * 1000 * self.speedup)

    def wall(self, day_ms: int) -> float:
        return self.t0 + (day_ms - self.begin_ms) / 1000 / self.speedup


class Worker:
    """One process's devices and their share of the day."""

    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.outbox = Outbox(Path(spec.outbox))
        topics = Topics(spec.topic_prefix)
        broker = BrokerAddress(spec.host, spec.port)
        rng = random.Random(spec.index)
        self.devices: dict[str, ReplayDevice] = {}
        for d in spec.devices:
            if d.base_seq > 0:
                self.outbox.cover(d.device_id, d.base_seq)
            ident = Identity(
                device_id=d.device_id, password=d.password, kind=DeviceKind(d.kind),
                lot_id=d.lot_id, lane_id=d.lane_id, space_id=d.space_id,
            )  # fmt: skip
            self.devices[d.device_id] = ReplayDevice(
                ident, broker=broker, topics=topics, outbox=self.outbox,
                republish_after=spec.republish_after, rng=random.Random(rng.random()),
            )  # fmt: skip
        self.stats = WorkerStats(index=spec.index, devices=len(self.devices))
        self.clock: _Clock | None = None
        self.stopping = asyncio.Event()
        #: set when the parent said go (or stop)
        self.told = asyncio.Event()
        self.cpu0 = self._cpu()
        self.errors = 0

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_parent)
        batch = max(1, int(CONNECT_RATE / 10))
        for i, device in enumerate(self.devices.values(), start=1):
            await device.start()
            if i % batch == 0:
                await asyncio.sleep(0.1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(d.ready.wait() for d in self.devices.values())), 120
            )
        # The broker sends each device its retained watermark after the subscription:
        # one above what the platform's database has (a database restored or reset
        # while the broker kept its retained messages) moves the device's seq past it,
        # as the contract says. The parent learns where each device starts.
        await asyncio.sleep(1.0)
        starts = {d: self.outbox.last_seq(d) for d in self.devices}
        self._send(("ready", sum(d.ready.is_set() for d in self.devices.values()), starts))
        await self.told.wait()
        reporter = loop.create_task(self._report())
        try:
            if self.clock is not None:
                await self._play(self.clock)
            self.stats.done = True
            await self.stopping.wait()
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            self._send(("stats", self._snapshot()))
            await asyncio.gather(*(d.stop(grace=2.0) for d in self.devices.values()))
            self.outbox.close()

    def _on_parent(self) -> None:
        while self.conn.poll():
            try:
                message = self.conn.recv()
            except EOFError:
                self.stopping.set()
                self.told.set()
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
                return
            if message[0] == "go":
                self.clock = _Clock(t0=message[1], begin_ms=self.spec.begin_ms,
                                    speedup=self.spec.speedup)  # fmt: skip
                self.told.set()
            elif message[0] == "stop":
                self.stopping.set()
                self.told.set()

    def _send(self, message: object) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(message)

    async def _play(self, clock: _Clock) -> None:
        events = self.spec.partition.events
        self.stats.to_emit = len(events)
        # (day ms, 0 = back / 1 = off, device), in day order
        switches = sorted(
            [(o.start_ms, 1, o.device) for o in self.spec.partition.outages]
            + [(o.end_ms, 0, o.device) for o in self.spec.partition.outages]
        )
        begin = self.spec.begin_ms
        i = s = 0
        while i < len(events) or s < len(switches):
            if self.stopping.is_set():
                return
            now = clock.day_ms()
            self.stats.day_ms = now
            while s < len(switches) and switches[s][0] <= now:
                _, off, device_id = switches[s]
                device = self.devices[device_id]
                if off:
                    device.go_offline()
                    self.stats.offline += 1
                else:
                    device.come_back()
                    self.stats.offline -= 1
                s += 1
            emitted = 0
            while i < len(events) and events[i].at_ms <= now and emitted < EMIT_SLICE:
                event = events[i]
                device = self.devices[event.device]
                try:
                    if event.kind is Kind.BAD_RAW:
                        device.publish_raw(event.topic or "", event.payload or b"")
                    else:
                        device.emit(event, day_event=event.at_ms >= begin)
                except Exception:
                    self.errors += 1
                    log.exception("%s: emitting failed", event.device)
                i += 1
                emitted += 1
            self.stats.emitted = i
            if emitted >= EMIT_SLICE:
                await asyncio.sleep(0)
                continue
            upcoming = [clock.wall(events[i].at_ms)] if i < len(events) else []
            if s < len(switches):
                upcoming.append(clock.wall(switches[s][0]))
            wait = min(upcoming, default=time.time() + 0.05) - time.time()
            await asyncio.sleep(min(0.05, max(0.002, wait)))
        for device in self.devices.values():
            device.flush_held()

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            self._send(("stats", self._snapshot()))

    def _snapshot(self) -> WorkerStats:
        st = self.stats
        st.online = st.connects = st.disconnects = st.failed_connects = 0
        st.refused_connects = st.published = st.republished = st.covered = 0
        st.outbox = st.duplicates = st.bad_published = st.commands = 0
        st.errors = self.errors
        lags: list[float] = []
        backlog: list[float] = []
        for d in self.devices.values():
            ds = d.stats
            st.online += d.ready.is_set()
            st.connects += ds.connects
            st.disconnects += ds.disconnects
            st.failed_connects += ds.failed_connects
            st.refused_connects += ds.refused_connects
            st.published += ds.published
            st.republished += ds.republished
            st.covered += ds.covered
            st.outbox += d.outbox_size
            st.duplicates += d.duplicates
            st.bad_published += d.bad_published
            st.commands += ds.commands
            st.errors += ds.errors
            if d.lags:
                lags.extend(d.lags)
                d.lags.clear()
            if d.backlog_lags:
                backlog.extend(d.backlog_lags)
                d.backlog_lags.clear()
        st.lags, st.backlog_lags = lags, backlog
        st.cpu_s = self._cpu() - self.cpu0
        return msgspec.structs.replace(st)


def worker_main(spec_path: str, conn: Connection) -> None:
    """A device process: read its spec, connect its devices, play its share of the day."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.basicConfig(level=logging.WARNING, format="[replay devices] %(levelname)s %(message)s")
    PAHO_LOG.setLevel(logging.CRITICAL)
    spec = msgspec.msgpack.decode(Path(spec_path).read_bytes(), type=WorkerSpec)
    worker = Worker(spec, conn)
    asyncio.run(worker.run())


# ------------------------------------------------------------------ the parent's side


class Fleet:
    """Starts the device processes and gathers what they report."""

    def __init__(self, specs: list[WorkerSpec], run_dir: Path) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self.latest: dict[int, WorkerStats] = {}
        self.lags: list[float] = []
        self.backlog_lags: list[float] = []
        for spec in specs:
            path = run_dir / f"devices-{spec.index}.msgpack"
            path.write_bytes(msgspec.msgpack.encode(spec))
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=worker_main, args=(str(path), child), name=f"replay-devices-{spec.index}"
            )
            self._procs.append(proc)
            self._conns.append(parent)

    def start(self) -> None:
        for proc in self._procs:
            proc.start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    async def wait_ready(self, within: float = 300.0) -> tuple[int, dict[str, int]]:
        """Wait until every process has connected its devices; returns how many are online
        and the seq each device's next event comes after."""
        online = 0
        starts: dict[str, int] = {}
        waiting = set(range(len(self._conns)))
        deadline = time.monotonic() + within
        while waiting:
            for i in list(waiting):
                conn = self._conns[i]
                while conn.poll():
                    message = conn.recv()
                    if message[0] == "ready":
                        online += int(message[1])
                        starts.update(message[2])
                        waiting.discard(i)
                    elif message[0] == "stats":
                        self._take(message[1])
                if not self._procs[i].is_alive():
                    raise RuntimeError(f"device process {i} died while connecting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} device processes not ready in {within:.0f} s")
            await asyncio.sleep(0.1)
        return online, starts

    def go(self, t0: float) -> None:
        for conn in self._conns:
            conn.send(("go", t0))

    def poll(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(EOFError, OSError):
                while conn.poll():
                    message = conn.recv()
                    if message[0] == "stats":
                        self._take(message[1])

    def _take(self, stats: WorkerStats) -> None:
        self.lags.extend(stats.lags)
        self.backlog_lags.extend(stats.backlog_lags)
        self.latest[stats.index] = stats

    def totals(self) -> FleetTotals:
        out = FleetTotals(processes=len(self._procs))
        for st in self.latest.values():
            for name in _SUMMED:
                setattr(out, name, getattr(out, name) + getattr(st, name))
        if self.latest:
            out.day_ms = min(st.day_ms for st in self.latest.values())
            out.done = len(self.latest) == len(self._procs) and all(
                st.done for st in self.latest.values()
            )
        return out

    async def stop(self, within: float = 30.0) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("stop",))
        deadline = time.monotonic() + within
        while any(p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            self.poll()
            await asyncio.sleep(0.1)
        self.poll()
        for proc in self._procs:
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid or 0, signal.SIGKILL)
            proc.join(timeout=5)
