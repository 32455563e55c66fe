"""A day of the city, made from a seed: stays, reads, sensor changes, faults, drivers.

Deterministic: the same seed, day, window and starting state give the same plan,
byte for byte. Each lot draws from its own random stream (seed and lot id), so a
lot's day does not change with the other lots chosen.

How a lot's day is made:

1. **Occupancy curve.** A car park of the Birmingham trace and one of its days
   give the daytime shape (08:00-16:30, a snapshot every ~30 minutes); the night
   level comes from the lot kind (gated lots keep residents' cars overnight,
   streets empty). The curve is clamped below ``peak_fill`` and scaled to the lot.
2. **Cars.** Minute by minute the lot follows the curve: cars arrive and leave
   for the net change, and pairs leave and arrive for turnover, at a rate chosen
   so that a day has ``turnover_per_space`` stays per space. Which car leaves is
   drawn at random among those parked at least five minutes, so stays are short
   and long as in life.
3. **Reads.** Each passage is read by the lane's camera: most reads are right,
   some low-confidence, a few missed (no plate) or misread (another valid plate),
   a few cars have no plate at all. Every read that leaves a session open in the
   platform's eyes (a misread entry, a missed exit) counts against the lot, and
   arrivals stop short of filling the lot as the platform sees it, so that no
   entry is refused as full whatever order the deliveries take.
4. **The night before.** The lot's day starts twelve hours before the window;
   cars still parked when the window opens have their entries published first
   (observed before the window: a backlog), the rest of the warm-up is dropped.

Then for the city: regular drivers (accounts; half with contactless) take some
of the stays, the rest get fresh plates; faults are drawn (duplicates, events held
back behind the next one, device outages with a backlog, malformed payloads).
"""

from __future__ import annotations

import bisect
import hashlib
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Final

from counterparts.devices.city import Trace
from counterparts.replay import faults
from counterparts.replay.model import (
    NIGHT_FILL,
    SHARES,
    Driver,
    Event,
    Fault,
    Kind,
    LotDevices,
    Outage,
    Partition,
    Payer,
    Stay,
)
from counterparts.replay.plates import Plates, camera_read
from parking.clock import SHANGHAI
from parking.devices.messages import Topics
from parking.devices.model import DeviceKind, FleetLot

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
#: the lot's day starts this long before the window (cars parked overnight)
WARM_UP_MS: Final = 12 * HOUR_MS
#: a car stays at least this long (a turn in the lot, a drop-off)
MIN_STAY_MS: Final = 3 * MINUTE_MS
#: a regular driver's car is away at least this long between two stays
BETWEEN_STAYS_MS: Final = 15 * MINUTE_MS
#: regular drivers (accounts, mandates) of a whole city
MAX_DRIVERS: Final = 1500


@dataclass(frozen=True, slots=True)
class PlanOptions:
    seed: int
    day: date
    start: time = time(0)
    hours: float = 24.0
    #: open sessions each lot already holds (cars a previous run left): headroom
    occupied_before: Mapping[str, int] = field(default_factory=dict)
    #: device processes the events are split over (lots stay whole)
    partitions: int = 1
    topic_prefix: str = "parking/v1"
    #: faults (duplicates, events held back, outages, flaps, malformed payloads) times this
    fault_scale: float = 1.0

    @property
    def window(self) -> tuple[int, int]:
        start = datetime.combine(self.day, self.start, SHANGHAI)
        begin = int(start.timestamp() * 1000)
        return begin, begin + int(self.hours * HOUR_MS)


@dataclass(slots=True)
class DayPlan:
    options: PlanOptions
    lots: list[LotDevices]
    events: list[Event]
    outages: list[Outage]
    stays: list[Stay]
    drivers: list[Driver]
    #: lots left out and why
    left_out: dict[str, str]
    #: per-device count of events that take a seq (passages, states, in-sequence bad)
    seq_events: dict[str, int]

    @property
    def window(self) -> tuple[int, int]:
        return self.options.window

    def devices(self) -> list[str]:
        out: list[str] = []
        for lot in self.lots:
            out.extend(lot.gates_in)
            out.extend(lot.gates_out)
            out.extend(lot.sensors.values())
        return out

    def partitions(self) -> list[Partition]:
        """The events split over ``options.partitions`` processes, whole lots each,
        balanced by event count."""
        count = max(1, self.options.partitions)
        owner: dict[str, int] = {}
        loads = [0] * count
        lot_events: dict[str, int] = {}
        device_lot: dict[str, str] = {}
        for lot in self.lots:
            for device in (*lot.gates_in, *lot.gates_out, *lot.sensors.values()):
                device_lot[device] = lot.lot_id
        for event in self.events:
            lot_id = device_lot[event.device]
            lot_events[lot_id] = lot_events.get(lot_id, 0) + 1
        for lot in sorted(self.lots, key=lambda x: (-lot_events.get(x.lot_id, 0), x.lot_id)):
            index = loads.index(min(loads))
            owner[lot.lot_id] = index
            loads[index] += lot_events.get(lot.lot_id, 0) + 1
        parts = [Partition(index=i, devices=[], events=[], outages=[]) for i in range(count)]
        for device, lot_id in device_lot.items():
            parts[owner[lot_id]].devices.append(device)
        for event in self.events:
            parts[owner[device_lot[event.device]]].events.append(event)
        for outage in self.outages:
            parts[owner[device_lot[outage.device]]].outages.append(outage)
        return [p for p in parts if p.devices]


# ------------------------------------------------------------------ randomness


def _stream(seed: int, *names: object) -> random.Random:
    """An independent random stream per (seed, names): stable whatever else is planned."""
    digest = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ------------------------------------------------------------------ curves


def _trace_day(trace: Trace, rng: random.Random) -> list[tuple[float, float]]:
    """(hour of day, fill) of one car park on one trace day with enough snapshots."""
    for _ in range(50):
        park = rng.choice(trace.car_parks)
        days = sorted({int(t // 86400) for t in park.times})
        day = rng.choice(days)
        points = [
            ((t - day * 86400) / 3600, f)
            for t, f in zip(park.times, park.fractions, strict=True)
            if day * 86400 <= t < (day + 1) * 86400
        ]
        if len(points) >= 8:
            return points
    return [(8.0, 0.5), (12.0, 0.8), (16.5, 0.6)]


def occupancy_curve(trace: Trace, rng: random.Random, *, kind: str) -> list[tuple[float, float]]:
    """(hour of day, fill 0..1) points of a lot's day; linear between points."""
    low, high = NIGHT_FILL["gated" if kind == "gated" else "on_street"]
    night = rng.uniform(low, high)
    peak = SHARES["peak_fill"]
    day = _trace_day(trace, rng)
    first_h, first = day[0]
    last_h, last = day[-1]
    points = [(0.0, night), (5.5, night), (max(6.0, first_h - 1.5), (night + first) / 2)]
    points += [(h, f) for h, f in day]
    points += [(min(23.0, last_h + 2.5), (last + night) / 2 + 0.05), (23.0, night), (24.0, night)]
    points.sort()
    return [(h, min(peak, max(0.0, f))) for h, f in points]


def _fill_at(curve: list[tuple[float, float]], hour: float) -> float:
    hours = [h for h, _ in curve]
    i = bisect.bisect_right(hours, hour)
    if i == 0:
        return curve[0][1]
    if i >= len(curve):
        return curve[-1][1]
    (h0, f0), (h1, f1) = curve[i - 1], curve[i]
    return f0 if h1 == h0 else f0 + (f1 - f0) * (hour - h0) / (h1 - h0)


# ------------------------------------------------------------------ one lot


@dataclass(slots=True)
class Car:
    """A car's visit to one lot, while the lot's day is made."""

    entry_ms: int
    exit_ms: int | None = None
    gate_in: str = ""
    gate_out: str = ""
    space: str = ""
    plated: bool = True
    #: "ok" | "low" | "missed" | "misread"
    read_in: str = "ok"
    read_out: str = "ok"
    double_read: bool = False
    #: "ordinary" | "nev_small" | "nev_large"
    vehicle: str = "ordinary"
    plate: str | None = None
    driver: int | None = None


def _read_kind(rng: random.Random) -> str:
    roll = rng.random()
    for name, share in (("missed", "missed_read"), ("misread", "misread"),
                        ("low", "low_confidence")):  # fmt: skip
        value = SHARES[share]
        if roll < value:
            return name
        roll -= value
    return "ok"


def _opens(car: Car) -> bool:
    """Does the entry open a session in the platform (a plate was read)?"""
    return car.plated and car.read_in != "missed"


def _closes(car: Car) -> bool:
    """Does the exit close the session the entry opened?"""
    return _opens(car) and car.read_in in ("ok", "low") and car.read_out in ("ok", "low")


def _lot_cars(
    lot: LotDevices,
    curve: list[tuple[float, float]],
    rng: random.Random,
    *,
    begin_ms: int,
    end_ms: int,
    headroom: int,
) -> list[Car]:
    """Minute-by-minute cars of one lot over [begin_ms - warm-up, end_ms)."""
    capacity = lot.capacity
    # Sessions the platform sees open may not reach capacity: a margin for the
    # order in which deliveries arrive, and what a previous run left.
    platform_limit = capacity - headroom - max(2, capacity // 30)
    day0 = datetime.fromtimestamp(begin_ms / 1000, SHANGHAI).replace(hour=0, minute=0, second=0)
    midnight_ms = int(day0.timestamp() * 1000)
    start = begin_ms - WARM_UP_MS
    minutes = (end_ms - start) // MINUTE_MS

    def target(at_ms: int) -> int:
        hour = ((at_ms - midnight_ms) / HOUR_MS) % 24
        return round(_fill_at(curve, hour) * capacity)

    # Turnover: pairs of one exit and one arrival per occupied space-minute, so
    # that a day has turnover_per_space stays per space beyond the net change.
    up = 0
    area = 0.0
    prev = target(start)
    for m in range(24 * 60):
        now = target(start + m * MINUTE_MS)
        up += max(0, now - prev)
        area += now
        prev = now
    turnover = SHARES["turnover_per_space"]
    hazard = max(0.0, (turnover * capacity - up) / area) if area else 0.0

    parked: list[Car] = []
    cars: list[Car] = []
    platform_open = 0
    nev_small, nev_large = SHARES["new_energy_small"], SHARES["new_energy_large"]
    unplated, double = SHARES["unplated_vehicles"], SHARES["double_read"]
    spaces_free = sorted(lot.sensors)
    for m in range(minutes):
        t0 = start + m * MINUTE_MS
        expected = hazard * len(parked)
        churn = int(expected) + (1 if rng.random() < expected % 1 else 0)
        gap = target(t0) - len(parked)
        leaving = churn + max(0, -gap)
        arriving = churn + max(0, gap)
        for _ in range(min(leaving, len(parked))):
            # A random car among those parked long enough (a few tries: nearly all are).
            for _ in range(6):
                at = rng.randrange(len(parked))
                if t0 - parked[at].entry_ms >= MIN_STAY_MS:
                    break
            else:
                continue
            car = parked[at]
            parked[at] = parked[-1]
            parked.pop()
            car.exit_ms = t0 + rng.randrange(MINUTE_MS)
            if _closes(car):
                platform_open -= 1
            if lot.kind == "gated":
                car.gate_out = rng.choice(lot.gates_out)
            else:
                spaces_free.append(car.space)
        for _ in range(arriving):
            if len(parked) >= capacity:
                break
            car = Car(entry_ms=t0 + rng.randrange(MINUTE_MS))
            if lot.kind == "gated":
                car.plated = rng.random() >= unplated
                car.read_in, car.read_out = _read_kind(rng), _read_kind(rng)
                car.double_read = car.plated and car.read_in == "ok" and rng.random() < double
                roll = rng.random()
                car.vehicle = (
                    "nev_small" if roll < nev_small
                    else "nev_large" if roll < nev_small + nev_large
                    else "ordinary"
                )  # fmt: skip
                # What the platform will hold open for this car until it leaves,
                # and for ever after when its exit is not matched.
                if _opens(car) and platform_open + 1 > platform_limit:
                    break
                if _opens(car):
                    platform_open += 1
                car.gate_in = rng.choice(lot.gates_in)
            else:
                if not spaces_free:
                    break
                at = rng.randrange(len(spaces_free))
                spaces_free[at], spaces_free[-1] = spaces_free[-1], spaces_free[at]
                car.space = spaces_free.pop()
            parked.append(car)
            cars.append(car)
    # Keep what the window sees: stays still on at its start, and those during it.
    return [c for c in cars if c.entry_ms < end_ms and (c.exit_ms is None or c.exit_ms >= begin_ms)]


# ------------------------------------------------------------------ the city


def lot_devices(fleet: Sequence[FleetLot], secrets: Mapping[str, str]) -> tuple[
    list[LotDevices], dict[str, str]
]:  # fmt: skip
    """The lots whose devices can all log in, and why the others are left out."""
    out: list[LotDevices] = []
    left_out: dict[str, str] = {}
    for fleet_lot in sorted(fleet, key=lambda f: f.lot.id):
        lot = fleet_lot.lot
        devices = [d for d in fleet_lot.devices if d.kind is not DeviceKind.SIGN]
        missing = [d.device_id for d in devices if d.device_id not in secrets]
        if missing:
            left_out[lot.id] = f"{len(missing)} devices without a secret"
            continue
        gates_in = sorted(d.device_id for d in devices if d.kind is DeviceKind.GATE
                          and d.direction == "in")  # fmt: skip
        gates_out = sorted(d.device_id for d in devices if d.kind is DeviceKind.GATE
                           and d.direction == "out")  # fmt: skip
        sensors = {d.space_id: d.device_id for d in devices
                   if d.kind is DeviceKind.SENSOR and d.space_id}  # fmt: skip
        places = {d.device_id: (d.lane_id or d.space_id or "") for d in devices}
        if lot.kind == "gated" and (not gates_in or not gates_out):
            left_out[lot.id] = "a gated lot without both an entry and an exit gate"
            continue
        if lot.kind != "gated" and not sensors:
            left_out[lot.id] = "an on-street lot without sensors"
            continue
        capacity = lot.capacity if lot.kind == "gated" else len(sensors)
        out.append(
            LotDevices(
                lot.id, lot.kind, capacity, lot.full_policy, gates_in, gates_out, sensors, places
            )
        )
    return out, left_out


def _share(name: str) -> float:
    return SHARES[name]


def plan_day(
    lots: Sequence[LotDevices], trace: Trace, options: PlanOptions, *, left_out: Mapping[str, str]
) -> DayPlan:
    """The day of ``lots``: every event each device will publish, in day order."""
    begin_ms, end_ms = options.window
    topics = Topics(options.topic_prefix)
    cars_by_lot: dict[str, list[Car]] = {}
    for lot in lots:
        rng = _stream(options.seed, options.day.isoformat(), "lot", lot.lot_id)
        curve = occupancy_curve(trace, rng, kind=lot.kind)
        cars_by_lot[lot.lot_id] = _lot_cars(
            lot, curve, rng, begin_ms=begin_ms, end_ms=end_ms,
            headroom=options.occupied_before.get(lot.lot_id, 0),
        )  # fmt: skip
    rng = _stream(options.seed, options.day.isoformat(), "city")
    plates = Plates(rng)
    scale = options.fault_scale
    outages = faults.outages(lots, cars_by_lot, rng, begin_ms=begin_ms, end_ms=end_ms, scale=scale)
    drivers = _assign_plates(lots, cars_by_lot, plates, rng)
    events: list[tuple[int, int, Event]] = []
    stays: list[Stay] = []
    order = 0
    never, regular_pay = _share("never_pay"), drivers
    for lot in lots:
        lot_rng = _stream(options.seed, options.day.isoformat(), "reads", lot.lot_id)
        for car in cars_by_lot[lot.lot_id]:
            for event in _car_events(lot, car, plates, lot_rng, end_ms=end_ms, scale=scale):
                events.append((event.at_ms, order, event))
                order += 1
            if lot.kind == "gated":
                stays.append(_stay(lot, car, lot_rng, regular_pay, never, end_ms=end_ms))
    for event in faults.bad_input(lots, rng, topics, begin_ms=begin_ms, end_ms=end_ms, scale=scale):
        events.append((event.at_ms, order, event))
        order += 1
    events.sort(key=lambda item: (item[0], item[1]))
    ordered = [e for _, _, e in events]
    ordered = faults.copies_and_order(ordered, rng, begin_ms=begin_ms, scale=scale)
    seq_events: dict[str, int] = {}
    for event in ordered:
        if event.kind is not Kind.BAD_RAW:
            seq_events[event.device] = seq_events.get(event.device, 0) + 1
    return DayPlan(options, list(lots), ordered, outages, stays, drivers, dict(left_out),
                   seq_events)  # fmt: skip


def _stay(
    lot: LotDevices,
    car: Car,
    rng: random.Random,
    drivers: list[Driver],
    never: float,
    *,
    end_ms: int,
) -> Stay:
    exit_ms = car.exit_ms if car.exit_ms is not None and car.exit_ms < end_ms else None
    if car.driver is not None and drivers[car.driver].contactless:
        payer = Payer.CONTACTLESS
    elif rng.random() < never:
        payer = Payer.NEVER
    else:
        payer = Payer.APP
    pay_ms = None
    if payer is Payer.APP and exit_ms is not None and car.plate is not None:
        # Most pay within the hour, some in the evening, a few days later (after the
        # replay: their bills stay open).
        delay = int(rng.lognormvariate(2.8, 1.2) * MINUTE_MS)
        pay_ms = exit_ms + max(MINUTE_MS, delay)
        if pay_ms >= end_ms:
            pay_ms = None
    return Stay(lot.lot_id, car.plate, car.entry_ms, exit_ms, payer, pay_ms, car.driver)


def _assign_plates(
    lots: Sequence[LotDevices],
    cars_by_lot: Mapping[str, list[Car]],
    plates: Plates,
    rng: random.Random,
) -> list[Driver]:
    """Regular drivers take some stays (one car, never in two lots at once); the
    other plated cars get fresh plates."""
    gated = sorted(
        (car.entry_ms, lot.lot_id, i, car)
        for lot in lots
        if lot.kind == "gated"
        for i, car in enumerate(cars_by_lot[lot.lot_id])
        if car.plated
    )
    share = _share("regular_driver")
    # A regular parks about three times a day; the pool is kept to what the
    # drivers' side can sign up over HTTP before the day starts.
    pool = max(4, min(MAX_DRIVERS, int(len(gated) * share / 3)))
    contactless = _share("contactless_driver")
    drivers = [
        Driver(
            index=i,
            phone=f"139{rng.randrange(10**8):08d}",
            plate=plates.new("nev_small" if rng.random() < 0.15 else "ordinary"),
            contactless=rng.random() < contactless,
        )
        for i in range(pool)
    ]
    # A phone is one account: no two drivers share one.
    phones = set()
    for i, d in enumerate(drivers):
        phone = d.phone
        while phone in phones:
            phone = f"139{rng.randrange(10**8):08d}"
        phones.add(phone)
        drivers[i] = Driver(index=d.index, phone=phone, plate=d.plate, contactless=d.contactless)
    free_at = [0] * pool  # day ms from which the driver's car is free; -1: parked for good
    for _, _, _, car in gated:
        if rng.random() < share and car.read_in in ("ok", "low") and not car.double_read:
            for _ in range(4):
                who = rng.randrange(pool)
                if 0 <= free_at[who] <= car.entry_ms:
                    car.driver = who
                    car.plate = drivers[who].plate
                    car.vehicle = "nev_small" if car.plate[2] in "DF" else "ordinary"
                    free_at[who] = -1 if car.exit_ms is None else car.exit_ms + BETWEEN_STAYS_MS
                    break
        if car.plate is None:
            car.plate = plates.new(car.vehicle)
    return drivers


def _car_events(
    lot: LotDevices,
    car: Car,
    plates: Plates,
    rng: random.Random,
    *,
    end_ms: int,
    scale: float,
) -> list[Event]:
    out: list[Event] = []
    if lot.kind != "gated":
        sensor = lot.sensors[car.space]
        battery = 40 + zlib.crc32(car.space.encode()) % 60
        out.append(Event(car.entry_ms, sensor, Kind.SPACE, occupied=True, battery=battery))
        flap = _share("flap") * scale
        exit_ms = car.exit_ms
        if rng.random() < flap and (exit_ms is None or exit_ms - car.entry_ms > 3 * MINUTE_MS):
            # A flapping sensor: free and occupied again within a minute, car still there.
            t = car.entry_ms + rng.randrange(20_000, 60_000)
            out.append(Event(t, sensor, Kind.SPACE, occupied=False, battery=battery))
            out.append(Event(t + rng.randrange(3_000, 20_000), sensor, Kind.SPACE,
                             occupied=True, battery=battery))  # fmt: skip
        if exit_ms is not None and exit_ms < end_ms:
            out.append(Event(exit_ms, sensor, Kind.SPACE, occupied=False, battery=battery))
        return out
    plate_in, color_in, conf_in = camera_read(car.plate, car.read_in, plates, rng)
    stamp = datetime.fromtimestamp(car.entry_ms / 1000, SHANGHAI).strftime("%Y%m%d%H%M%S")
    image = f"{lot.lot_id.lower()}/{lot.places[car.gate_in]}/{stamp}.jpg"
    out.append(Event(car.entry_ms, car.gate_in, Kind.PASSAGE, direction="in", plate=plate_in,
                     color=color_in, confidence=conf_in, image_ref=image))  # fmt: skip
    if car.double_read:
        out.append(Event(car.entry_ms + rng.randrange(1_000, 4_000), car.gate_in, Kind.PASSAGE,
                         direction="in", plate=plate_in, color=color_in, confidence=conf_in,
                         image_ref=image, fault=Fault.DOUBLE_READ))  # fmt: skip
    if car.exit_ms is not None and car.exit_ms < end_ms:
        plate_out, color_out, conf_out = camera_read(car.plate, car.read_out, plates, rng)
        stamp = datetime.fromtimestamp(car.exit_ms / 1000, SHANGHAI).strftime("%Y%m%d%H%M%S")
        image = f"{lot.lot_id.lower()}/{lot.places[car.gate_out]}/{stamp}.jpg"
        out.append(Event(car.exit_ms, car.gate_out, Kind.PASSAGE, direction="out",
                         plate=plate_out, color=color_out, confidence=conf_out,
                         image_ref=image))  # fmt: skip
    return out
