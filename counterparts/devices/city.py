"""A fleet of simulated devices across lots, driven by a real occupancy trace.

Kept whole (over 600 lines): one fleet, its trace-driven schedule and its report.

The Birmingham trace (30 car parks, Oct-Dec 2016, a snapshot about every
30 minutes from 08:00 to 16:30) gives each simulated lot a day: a car park's
occupancy fraction, scaled to the lot's capacity, turned into entries and
exits between consecutive snapshots (the net change, plus turnover while the
lot is open). All lots share one trace clock, so the city fills in the
morning and empties in the afternoon together, each lot with its own curve.

The trace decides *which* lot moves and in which direction; the total event
rate is ours (``rate`` events/s), so the trace clock runs as fast as the rate
needs. Gates publish passages with plausible plates, sensors their space.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import csv
import heapq
import itertools
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from counterparts.devices.device import BrokerAddress, Identity, SimulatedDevice
from counterparts.devices.outbox import Outbox
from parking.clock import SHANGHAI, Clock, SystemClock
from parking.devices.messages import PlateColor, Topics
from parking.devices.model import DeviceKind, FleetLot

# A car park shorter than this (two in the trace have 5 and 9 days) would
# leave its lots idle for most of a long run.
MIN_TRACE_DAYS: Final = 30
# Snapshots further apart than this are a night or a gap in the data: only the
# net change happens there, no turnover (we do not know how long it was open).
MAX_OPEN_GAP_S: Final = 2 * 3600
# Cars leaving and arriving beyond the net change, per occupied space and hour.
# UK city-centre car parks turn over roughly every 3-4 hours.
TURNOVER_PER_HOUR: Final = 0.3
# Lots start empty an hour before their first snapshot: the morning fill.
FILL_S: Final = 3600.0

# ------------------------------------------------------------------ the trace


@dataclass(frozen=True, slots=True)
class TraceCleaning:
    """What the trace's dirty rows were, and what we did: clamp, count, go on."""

    rows: int
    above_capacity: int
    below_zero: int
    duplicate_times: int
    unreadable: int
    short_car_parks: int

    def describe(self) -> str:
        return (
            f"{self.rows} rows: {self.above_capacity} above capacity and {self.below_zero} "
            f"below zero clamped, {self.duplicate_times} repeated timestamps and "
            f"{self.unreadable} unreadable rows dropped, {self.short_car_parks} car parks "
            f"with < {MIN_TRACE_DAYS} days left out"
        )


@dataclass(frozen=True, slots=True)
class CarPark:
    code: str
    capacity: int
    #: seconds since the trace's first midnight (the car park's local time)
    times: tuple[float, ...]
    #: occupancy / capacity, clamped to 0..1
    fractions: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Trace:
    car_parks: tuple[CarPark, ...]
    first_day: date
    #: seconds from the first midnight to the end of the last day: the period
    #: after which a long run repeats the trace
    span: float
    cleaning: TraceCleaning

    def label(self, at: float) -> str:
        """Trace time as ``2016-10-05 09:41`` (repeats shown as such)."""
        cycle, offset = divmod(at, self.span)
        day = self.first_day + timedelta(seconds=offset)
        stamp = (
            f"{day.isoformat()} {int(offset % 86400) // 3600:02d}:{int(offset % 3600) // 60:02d}"
        )
        return stamp if cycle == 0 else f"{stamp} (repeat {int(cycle)})"


def _seconds(first: date, text: str) -> float:
    day = date.fromisoformat(text[:10])
    hh, mm, ss = (int(part) for part in text[11:19].split(":"))
    return float((day - first).days * 86400 + hh * 3600 + mm * 60 + ss)


def load_trace(path: Path) -> Trace:
    """Read ``SystemCodeNumber,Capacity,Occupancy,LastUpdated`` rows; dirty rows are clamped."""
    raw: dict[str, dict[str, tuple[int, int]]] = {}
    rows = above = below = duplicates = unreadable = 0
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows += 1
            try:
                code = row["SystemCodeNumber"].strip()
                capacity = int(row["Capacity"])
                occupancy = int(row["Occupancy"])
                stamp = row["LastUpdated"].strip()
                date.fromisoformat(stamp[:10])
            except (KeyError, ValueError, AttributeError):
                unreadable += 1
                continue
            if capacity <= 0 or len(stamp) < 19:
                unreadable += 1
                continue
            if occupancy > capacity:
                above += 1
            elif occupancy < 0:
                below += 1
            series = raw.setdefault(code, {})
            if stamp in series:
                duplicates += 1  # the later row wins
            series[stamp] = (capacity, occupancy)
    if not raw:
        raise ValueError(f"{path}: no usable rows")
    first = min(date.fromisoformat(s[:10]) for series in raw.values() for s in series)
    last = max(date.fromisoformat(s[:10]) for series in raw.values() for s in series)
    parks: list[CarPark] = []
    short = 0
    for code in sorted(raw):
        series = raw[code]
        if len({s[:10] for s in series}) < MIN_TRACE_DAYS:
            short += 1
            continue
        stamps = sorted(series)
        capacity = series[stamps[-1]][0]
        parks.append(
            CarPark(
                code=code,
                capacity=capacity,
                times=tuple(_seconds(first, s) for s in stamps),
                fractions=tuple(min(1.0, max(0.0, series[s][1] / series[s][0])) for s in stamps),
            )
        )
    if not parks:
        raise ValueError(f"{path}: no car park has {MIN_TRACE_DAYS} days of data")
    return Trace(
        car_parks=tuple(parks),
        first_day=first,
        span=float(((last - first).days + 1) * 86400),
        cleaning=TraceCleaning(rows, above, below, duplicates, unreadable, short),
    )


def lot_moves(
    park: CarPark,
    capacity: int,
    *,
    start_at: float,
    span: float,
    rng: random.Random,
    turnover_per_hour: float = TURNOVER_PER_HOUR,
) -> Iterator[tuple[float, int]]:
    """(trace time, +1 entry | -1 exit) of one lot in time order, repeating the trace forever.

    Between consecutive snapshots the lot moves by the scaled net change, and
    ``turnover`` pairs of one exit and one entry while the lot is open.
    """
    first = bisect.bisect_left(park.times, start_at)
    first = min(first, len(park.times) - 1)
    prev_t = park.times[first] - FILL_S
    prev_o = 0
    for cycle in itertools.count():
        offset = cycle * span
        begin = first if cycle == 0 else 0
        moved = False
        for t_raw, fraction in zip(park.times[begin:], park.fractions[begin:], strict=True):
            t = t_raw + offset
            occupancy = round(fraction * capacity)
            net = occupancy - prev_o
            churn = 0
            if t - prev_t <= MAX_OPEN_GAP_S:
                expected = turnover_per_hour * (prev_o + occupancy) / 2 * (t - prev_t) / 3600
                churn = int(expected) + (1 if rng.random() < expected % 1 else 0)
            moves = [1] * (max(net, 0) + churn) + [-1] * (max(-net, 0) + churn)
            rng.shuffle(moves)
            times = sorted(rng.uniform(prev_t, t) for _ in moves)
            yield from zip(times, moves, strict=True)
            moved = moved or bool(moves)
            prev_t, prev_o = t, occupancy
        if not moved:
            return  # a lot too small for this car park's curve ever to move


# ------------------------------------------------------------------ plates

_LETTERS: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O on plates
_DIGITS: Final = "0123456789"
# Where cars parked in Ganzhou come from: mostly 赣B (Ganzhou itself).
_ORIGINS: Final = (
    ("赣B", 78),
    ("赣A", 4),
    ("赣C", 2),
    ("赣D", 1),
    ("赣E", 1),
    ("赣F", 1),
    ("赣G", 1),
    ("赣H", 1),
    ("赣K", 1),
    ("粤A", 2),
    ("粤B", 2),
    ("湘A", 2),
    ("闽D", 2),
    ("浙A", 1),
    ("沪A", 1),
)
NEV_SHARE: Final = 0.15
LARGE_SHARE: Final = 0.05
NO_PLATE_SHARE: Final = 0.02  # 无牌车: new cars, covered plates; they scan the lane QR code
MISSED_READ_SHARE: Final = 0.01
LOW_CONFIDENCE_SHARE: Final = 0.05
MISREAD_SHARE: Final = 0.01


@dataclass(frozen=True, slots=True)
class Vehicle:
    plate: str | None
    color: PlateColor | None


@dataclass(frozen=True, slots=True)
class Read:
    """What the ANPR camera made of a vehicle."""

    plate: str | None
    color: PlateColor | None
    confidence: float | None


class PlateFactory:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._origins = [o for o, _ in _ORIGINS]
        self._weights = [w for _, w in _ORIGINS]

    def vehicle(self) -> Vehicle:
        rng = self._rng
        if rng.random() < NO_PLATE_SHARE:
            return Vehicle(None, None)
        origin = rng.choices(self._origins, self._weights)[0]
        if rng.random() < NEV_SHARE:
            # Small new-energy plates: D (battery) or F (hybrid), then 5 characters.
            tail = rng.choice("DF") + "".join(rng.choice(_DIGITS) for _ in range(5))
            return Vehicle(origin + tail, "green")
        chars = [rng.choice(_DIGITS) for _ in range(5)]
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            chars[rng.randrange(5)] = rng.choice(_LETTERS)
        color: PlateColor = "yellow" if rng.random() < LARGE_SHARE else "blue"
        return Vehicle(origin + "".join(chars), color)

    def read(self, vehicle: Vehicle) -> Read:
        rng = self._rng
        if vehicle.plate is None:
            return Read(None, None, 0.0)
        roll = rng.random()
        if roll < MISSED_READ_SHARE:
            return Read(None, None, 0.0)
        roll -= MISSED_READ_SHARE
        if roll < MISREAD_SHARE:
            chars = list(vehicle.plate)
            at = rng.randrange(2, len(chars))
            chars[at] = rng.choice(_DIGITS + _LETTERS)
            return Read("".join(chars), vehicle.color, round(rng.uniform(0.5, 0.8), 3))
        roll -= MISREAD_SHARE
        if roll < LOW_CONFIDENCE_SHARE:
            return Read(vehicle.plate, vehicle.color, round(rng.uniform(0.6, 0.85), 3))
        return Read(vehicle.plate, vehicle.color, round(rng.uniform(0.9, 0.995), 3))


# ------------------------------------------------------------------ lots


def _take(items: list[int], rng: random.Random) -> int:
    """Remove and return a random element in O(1) (order does not matter)."""
    at = rng.randrange(len(items))
    items[at], items[-1] = items[-1], items[at]
    return items.pop()


@dataclass(slots=True)
class Skipped:
    full: int = 0
    empty: int = 0


class GatedLot:
    def __init__(
        self,
        lot_id: str,
        capacity: int,
        gates_in: list[SimulatedDevice],
        gates_out: list[SimulatedDevice],
        *,
        plates: PlateFactory,
        rng: random.Random,
        clock: Clock,
    ) -> None:
        self.lot_id = lot_id
        self.capacity = capacity
        self._in = gates_in
        self._out = gates_out
        self._plates = plates
        self._rng = rng
        self._clock = clock
        self._inside: list[Vehicle] = []

    @property
    def occupancy(self) -> int:
        return len(self._inside)

    def move(self, direction: int, skipped: Skipped) -> bool:
        rng = self._rng
        if direction > 0:
            if len(self._inside) >= self.capacity:
                skipped.full += 1
                return False
            vehicle = self._plates.vehicle()
            self._inside.append(vehicle)
            gate = rng.choice(self._in)
        else:
            if not self._inside:
                skipped.empty += 1
                return False
            at = rng.randrange(len(self._inside))
            self._inside[at], self._inside[-1] = self._inside[-1], self._inside[at]
            vehicle = self._inside.pop()
            gate = rng.choice(self._out)
        read = self._plates.read(vehicle)
        lane = gate.identity.lane_id
        stamp = self._clock.now().astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")
        gate.emit_passage(
            direction="in" if direction > 0 else "out",
            plate=read.plate,
            plate_color=read.color,
            confidence=read.confidence,
            image_ref=f"{self.lot_id.lower()}/{lane}/{stamp}.jpg",
        )
        return True


class StreetLot:
    def __init__(self, lot_id: str, sensors: list[SimulatedDevice], *, rng: random.Random) -> None:
        self.lot_id = lot_id
        self.capacity = len(sensors)
        self._sensors = sensors
        self._rng = rng
        self._free = list(range(len(sensors)))
        self._taken: list[int] = []
        self._battery = [rng.randint(55, 100) for _ in sensors]

    @property
    def occupancy(self) -> int:
        return len(self._taken)

    def move(self, direction: int, skipped: Skipped) -> bool:
        source, target = (self._free, self._taken) if direction > 0 else (self._taken, self._free)
        if not source:
            if direction > 0:
                skipped.full += 1
            else:
                skipped.empty += 1
            return False
        index = _take(source, self._rng)
        target.append(index)
        if self._rng.random() < 0.002 and self._battery[index] > 5:
            self._battery[index] -= 1
        self._sensors[index].emit_space_state(
            occupied=direction > 0, battery_pct=self._battery[index]
        )
        return True


Lot = GatedLot | StreetLot


# ------------------------------------------------------------------ the fleet


def choose_lots(
    fleet: Sequence[FleetLot],
    *,
    count: int,
    offset: int = 0,
    seed: int,
    only: Sequence[str] = (),
) -> list[FleetLot]:
    """``count`` lots from ``offset`` in a seeded shuffle (the demo lot first), or ``only`` these.

    Processes with the same seed and disjoint offset ranges drive disjoint lots.
    """
    if only:
        wanted = set(only)
        return [lot for lot in fleet if lot.lot.id in wanted]
    order = sorted(fleet, key=lambda lot: lot.lot.id)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda lot: lot.lot.id != "GZ-DEMO-01")
    return order[offset : offset + count]


def identities(
    lots: Sequence[FleetLot], secrets: Mapping[str, str]
) -> tuple[list[Identity], list[str]]:
    """The devices of ``lots`` that have a secret, and the ids of those that have none."""
    found: list[Identity] = []
    missing: list[str] = []
    for lot in lots:
        for device in lot.devices:
            password = secrets.get(device.device_id)
            if password is None:
                missing.append(device.device_id)
                continue
            found.append(
                Identity(
                    device_id=device.device_id,
                    password=password,
                    kind=device.kind,
                    lot_id=device.lot_id,
                    lane_id=device.lane_id,
                    space_id=device.space_id,
                )
            )
    return found, missing


@dataclass(slots=True)
class Totals:
    devices: int = 0
    online: int = 0
    events: int = 0
    published: int = 0
    republished: int = 0
    covered: int = 0
    outbox: int = 0
    commands: int = 0
    repeated_commands: int = 0
    acks: int = 0
    refused_publishes: int = 0
    refused_connects: int = 0
    disconnects: int = 0
    bad_messages: int = 0
    errors: int = 0
    skipped_full: int = 0
    skipped_empty: int = 0
    occupancy: int = 0
    capacity: int = 0
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunOptions:
    rate: float
    duration: float | None
    seed: int
    republish_after: float = 60.0
    progress_every: float = 5.0
    connect_rate: float = 500.0
    drain: float = 0.0
    turnover_per_hour: float = TURNOVER_PER_HOUR
    #: device id -> how far its clock is off (contract "Clocks": the platform corrects it)
    clock_offsets: Mapping[str, timedelta] = field(default_factory=dict)


class CityRunner:
    """Runs the devices of some lots with a total event rate, shaped by the trace."""

    def __init__(
        self,
        lots: Sequence[FleetLot],
        secrets: Mapping[str, str],
        *,
        broker: BrokerAddress,
        topics: Topics,
        outbox: Outbox,
        trace: Trace,
        options: RunOptions,
        progress: Callable[[str], None],
        clock: Clock | None = None,
    ) -> None:
        self._options = options
        self._progress = progress
        self._trace = trace
        self._clock = clock or SystemClock()
        rng = random.Random(options.seed)
        self._rng = rng
        ids, self.without_secret = identities(lots, secrets)
        self.devices = [
            SimulatedDevice(
                ident,
                broker=broker,
                topics=topics,
                outbox=outbox,
                clock=self._clock,
                republish_after=options.republish_after,
                rng=random.Random(rng.random()),
                clock_offset=options.clock_offsets.get(ident.device_id, timedelta(0)),
            )
            for ident in ids
        ]
        by_id = {d.device_id: d for d in self.devices}
        plates = PlateFactory(rng)
        # One trace clock for the whole city: a random morning of the trace.
        day = rng.randrange(int(trace.span // 86400))
        self.start_at = day * 86400 + 7 * 3600.0
        self.clock_at = self.start_at
        self.lots: list[Lot] = []
        self._skipped = Skipped()
        self._heap: list[tuple[float, int, int]] = []
        self._moves: list[Iterator[tuple[float, int]]] = []
        for lot in lots:
            model = self._model(lot, by_id, plates, rng)
            if model is None or model.capacity == 0:
                continue
            park = rng.choice(trace.car_parks)
            moves = lot_moves(
                park,
                model.capacity,
                start_at=self.start_at,
                span=trace.span,
                rng=random.Random(rng.random()),
                turnover_per_hour=options.turnover_per_hour,
            )
            self.lots.append(model)
            self._moves.append(moves)
            first_move = next(moves, None)
            if first_move is not None:
                heapq.heappush(self._heap, (first_move[0], len(self._moves) - 1, first_move[1]))

    def _model(
        self,
        lot: FleetLot,
        by_id: Mapping[str, SimulatedDevice],
        plates: PlateFactory,
        rng: random.Random,
    ) -> Lot | None:
        mine = [by_id[d.device_id] for d in lot.devices if d.device_id in by_id]
        if lot.lot.kind == "gated":
            directions = {d.device_id: d.direction for d in lot.devices}
            gates = [d for d in mine if d.identity.kind is DeviceKind.GATE]
            gates_in = [g for g in gates if directions.get(g.device_id) == "in"]
            gates_out = [g for g in gates if directions.get(g.device_id) == "out"]
            if not gates_in or not gates_out:
                return None
            return GatedLot(
                lot.lot.id,
                lot.lot.capacity,
                gates_in,
                gates_out,
                plates=plates,
                rng=rng,
                clock=self._clock,
            )
        sensors = [d for d in mine if d.identity.kind is DeviceKind.SENSOR]
        return StreetLot(lot.lot.id, sensors, rng=rng) if sensors else None

    # ------------------------------------------------------------- stepping

    def step(self) -> bool:
        """Emit the city's next event, skipping impossible moves. False when no lot can move."""
        for _ in range(64):
            if not self._heap:
                return False
            at, index, direction = heapq.heappop(self._heap)
            upcoming = next(self._moves[index], None)
            if upcoming is not None:
                heapq.heappush(self._heap, (upcoming[0], index, upcoming[1]))
            self.clock_at = at
            if self.lots[index].move(direction, self._skipped):
                return True
        return True

    # ------------------------------------------------------------- running

    def totals(self) -> Totals:
        out = Totals(devices=len(self.devices))
        for device in self.devices:
            s = device.stats
            out.online += 1 if device.ready.is_set() else 0
            out.events += s.events
            out.published += s.published
            out.republished += s.republished
            out.covered += s.covered
            out.outbox += device.outbox_size
            out.commands += s.commands
            out.repeated_commands += s.repeated_commands
            out.acks += s.acks
            out.refused_publishes += s.refused_publishes
            out.refused_connects += s.refused_connects
            out.disconnects += s.disconnects
            out.bad_messages += s.bad_messages
            out.errors += s.errors
        out.skipped_full = self._skipped.full
        out.skipped_empty = self._skipped.empty
        out.occupancy = sum(lot.occupancy for lot in self.lots)
        out.capacity = sum(lot.capacity for lot in self.lots)
        return out

    def _line(self, started: float, last: Totals | None, now_totals: Totals, dt: float) -> str:
        rate = (now_totals.events - (last.events if last else 0)) / dt if dt > 0 else 0.0
        t = now_totals
        return (
            f"[simulate {time.monotonic() - started:6.1f}s]"
            f" trace {self._trace.label(self.clock_at)}"
            f" | online {t.online}/{t.devices} | events {t.events} ({rate:.0f}/s)"
            f" | published {t.published} republished {t.republished}"
            f" | acked by watermark {t.covered} | outbox {t.outbox}"
            f" | occupancy {t.occupancy}/{t.capacity}"
            f" | commands {t.commands} acks {t.acks}"
            f" | disconnects {t.disconnects}"
            f" | refused {t.refused_connects} conn {t.refused_publishes} pub"
        )

    async def run(self) -> Totals:
        opts = self._options
        started = time.monotonic()
        self._progress(
            f"[simulate] {len(self.devices)} devices in {len(self.lots)} lots, "
            f"{len(self.without_secret)} without a secret skipped; trace: "
            f"{self._trace.cleaning.describe()}; starting at {self._trace.label(self.start_at)}"
        )
        batch = max(1, int(opts.connect_rate / 10))
        for i, device in enumerate(self.devices, start=1):
            await device.start()
            if i % batch == 0:
                await asyncio.sleep(0.1)
        reporter = asyncio.create_task(self._report(started))
        try:
            await self._generate(started)
            await self._drain()
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            final = self.totals()
            self._progress(self._line(started, None, final, time.monotonic() - started))
            await asyncio.gather(*(d.stop() for d in self.devices))
        final.extra["trace_start"] = self._trace.label(self.start_at)
        final.extra["trace_end"] = self._trace.label(self.clock_at)
        final.extra["without_secret"] = len(self.without_secret)
        return final

    async def _generate(self, started: float) -> None:
        opts = self._options
        tick = 0.02
        budget = 0.0
        last = time.monotonic()
        while opts.duration is None or time.monotonic() - started < opts.duration:
            await asyncio.sleep(tick)
            now = time.monotonic()
            budget += opts.rate * (now - last)
            last = now
            for _ in range(int(budget)):
                if not self.step():
                    return
            budget -= int(budget)

    async def _drain(self) -> None:
        deadline = time.monotonic() + self._options.drain
        while time.monotonic() < deadline:
            if not any(d.outbox_size for d in self.devices):
                return
            await asyncio.sleep(0.2)

    async def _report(self, started: float) -> None:
        last: Totals | None = None
        last_at = started
        while True:
            await asyncio.sleep(self._options.progress_every)
            now = time.monotonic()
            current = self.totals()
            self._progress(self._line(started, last, current, now - last_at))
            last, last_at = current, now
