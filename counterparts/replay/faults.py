"""Faults of the replayed day: outages with their backlog, malformed payloads, duplicate
copies and events held back behind the next one.

Each is drawn from the plan's city-wide random stream, ``scale`` times the shares
of ``model.SHARES``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from counterparts.replay.model import SHARES, Event, Fault, Kind, LotDevices, Outage
from parking.devices.messages import Topics

if TYPE_CHECKING:
    from counterparts.replay.plan import Car

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
#: cars that entered through a gate while it was off the network leave at least
#: this long after it is back, so its backlog is delivered before their exits
OUTAGE_MARGIN_MS: Final = 60 * MINUTE_MS


def _share(name: str) -> float:
    return SHARES[name]


def outages(
    lots: Sequence[LotDevices],
    cars_by_lot: Mapping[str, list[Car]],
    rng: random.Random,
    *,
    begin_ms: int,
    end_ms: int,
    scale: float,
) -> list[Outage]:
    """Entry gates and sensors that drop off the network for a while. A car that
    entered through such a gate leaves at least OUTAGE_MARGIN_MS after the gate is
    back (or enters through another gate), so no exit overtakes its entry."""
    share = _share("outage_devices") * scale
    outages: list[Outage] = []
    span = end_ms - begin_ms
    for lot in lots:
        candidates = lot.gates_in if lot.kind == "gated" else list(lot.sensors.values())
        for device in candidates:
            if rng.random() >= share or span < HOUR_MS:
                continue
            length = rng.randrange(5 * MINUTE_MS, min(40 * MINUTE_MS, span // 3))
            start = begin_ms + rng.randrange(span - length)
            outage = Outage(device, start, start + length)
            if lot.kind == "gated" and not _reroute(lot, cars_by_lot[lot.lot_id], outage):
                continue
            outages.append(outage)
    return outages


def _reroute(lot: LotDevices, cars: list[Car], outage: Outage) -> bool:
    """Send cars whose exit would overtake the gate's backlog through another entry gate."""
    others = [g for g in lot.gates_in if g != outage.device]
    moved: list[Car] = []
    for car in cars:
        if car.gate_in != outage.device or not outage.start_ms <= car.entry_ms < outage.end_ms:
            continue
        if car.exit_ms is None or car.exit_ms >= outage.end_ms + OUTAGE_MARGIN_MS:
            continue
        if not others:
            for undo in moved:
                undo.gate_in = outage.device
            return False
        car.gate_in = others[car.entry_ms % len(others)]
        moved.append(car)
    return True


def bad_input(
    lots: Sequence[LotDevices],
    rng: random.Random,
    topics: Topics,
    *,
    begin_ms: int,
    end_ms: int,
    scale: float,
) -> list[Event]:
    """Malformed payloads published by real devices on their own topics, each marked
    so the checker can find it among the dead letters."""
    rate = _share("bad_input_per_10k") * scale
    devices: list[tuple[LotDevices, str]] = [
        (lot, d) for lot in lots for d in (*lot.gates_in, *lot.gates_out)
    ] or [(lot, d) for lot in lots for d in lot.sensors.values()]
    if not devices:
        return []
    hours = (end_ms - begin_ms) / HOUR_MS
    # rate per 10,000 device-hours... of a busy city: ~180 a day for 9,000 devices
    count = max(3, int(rate * sum(len(x.sensors) + len(x.gates_in) for x in lots) * hours / 2400))
    out: list[Event] = []
    for n in range(count):
        lot, device = devices[rng.randrange(len(devices))]
        place = lot.places[device]
        topic = (
            topics.passages(lot.lot_id, place)
            if device in lot.gates_in or device in lot.gates_out
            else topics.space_state(lot.lot_id, place)
        )
        at = begin_ms + rng.randrange(max(1, end_ms - begin_ms))
        # fixed width: no marker is the beginning of another
        mark = f"replay-bad-{n:05d}."
        shape = n % 6
        kind = Kind.BAD_RAW
        if shape == 0:
            payload = (
                b'{"device_id": "'
                + device.encode()
                + b'", "seq": 1, "note": "'
                + mark.encode()
                + b'",}'
            )
        elif shape == 1:
            payload = b'{"device_id": "\xff' + mark.encode() + b'", "seq": 1}'
        elif shape == 2:
            payload = f'{{"device_id": "{device}", "seq": "{mark}"}}'.encode()
        elif shape == 3:
            # another device's name in the payload: never trusted, never its seq
            payload = (
                '{"device_id": "gz-nobody", "seq": 7, '
                '"observed_at": "2026-01-01T00:00:00+08:00", "direction": "in", "plate": null, '
                f'"plate_color": null, "confidence": 0.0, "image_ref": "{mark}"}}'
            ).encode()
        elif shape == 4:
            payload = (b"\x00\x01" + mark.encode()) * 3
        else:
            # A firmware bug: a real event of the device with a field the contract does
            # not have. It takes the device's next seq and is dead-lettered with it.
            kind = Kind.BAD_IN_SEQUENCE
            payload = (
                f'{{"device_id": "{device}", "seq": {{seq}}, "observed_at": "{{at}}", '
                f'"firmware_note": "{mark}"}}'
            ).encode()
        out.append(Event(at, device, kind, payload=payload, topic=topic, image_ref=mark))
    return out


def copies_and_order(
    events: list[Event], rng: random.Random, *, begin_ms: int, scale: float
) -> list[Event]:
    """Duplicate copies and events held back behind the device's next one (in the window)."""
    duplicate, hold = _share("duplicate") * scale, _share("hold_back") * scale
    out: list[Event] = []
    for event in events:
        if event.kind in (Kind.PASSAGE, Kind.SPACE) and event.at_ms >= begin_ms:
            fault = event.fault
            roll = rng.random()
            if roll < duplicate:
                fault |= Fault.DUPLICATE
            elif roll < duplicate + hold:
                fault |= Fault.HOLD_BACK
            if fault != event.fault:
                event = msgspec.structs.replace(event, fault=fault)
        out.append(event)
    return out
