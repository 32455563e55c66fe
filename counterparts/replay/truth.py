"""What the platform must hold after a replay, from the plan alone.

The platform's documented rules (``docs/protocol.md``, ``contracts/mqtt.md``,
the occupancy core's key schema) applied to what the devices published, in day
order, starting from what the platform held before the run:

- every event a device sent takes its next seq (``base + 1, base + 2, ...``) and
  is stored once; a malformed payload is a dead letter and nothing else;
- an entry read as a plate opens a session; a session of the same plate open in
  the same lot is superseded (the car came in again without an exit read); an
  entry without a plate is held and opens nothing;
- one open session per plate city-wide, decided by time: the plate's index keeps
  the latest entry or exit time it saw (its mark); an entry later than the mark
  takes the index, and the session it held in another lot is superseded
  (``plate_elsewhere``); an entry earlier than the mark loses at once
  (``older_entry``): an exit or entry seen later proves the car was elsewhere;
- an exit read as a plate closes that plate's open session in the lot, priced
  from its entry to its exit, and moves the mark to the exit; with none open it
  is an exit without entry (closed, no fee); an exit without a plate is held;
  (day order, not arrival order: an entry whose gate's outbox held it until after
  the exit is a late entry, which the platform stitches to that exit, so the stay
  is the same as if it had come in time: docs/protocol.md)
- a space's state is its sensor's latest reading by seq.

Fees are not computed here: ``check`` prices the closed sessions with ``fees``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from counterparts.replay.model import Event, Kind
from counterparts.replay.plan import DayPlan


@dataclass(slots=True)
class ExpectedSession:
    lot: str
    plate: str
    #: (device, seq) of the entry, or of the exit for an exit without entry
    key: tuple[str, int]
    entry_ms: int | None
    exit_ms: int | None = None
    exit_key: tuple[str, int] | None = None
    #: open | closed | superseded
    status: str = "open"
    no_entry: bool = False


#: an open session: one of the run's, or one from before the run (its id)
Held = ExpectedSession | str


@dataclass(frozen=True, slots=True)
class Before:
    """What the platform held before the run, for the run's lots and plates."""

    #: lot -> plate -> session id (open sessions in the run's lots)
    open_in_lots: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: plate -> (lot, session id) the plate index holds, and plate -> its mark (ms)
    index: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    marks: Mapping[str, int] = field(default_factory=dict)
    #: (lot, space) -> occupied
    spaces: Mapping[tuple[str, str], bool] = field(default_factory=dict)


@dataclass(slots=True)
class Truth:
    #: device -> seqs the run sent (first, last), both inclusive
    seqs: dict[str, tuple[int, int]]
    sessions: list[ExpectedSession]
    #: lot -> plates with an open session at the end (the run's and those from before)
    open_at_end: dict[str, set[str]]
    #: (lot, space) -> occupied at the end, for the run's on-street lots
    spaces_at_end: dict[tuple[str, str], bool]
    #: session ids from before the run that the run's entries superseded
    superseded_before: set[str]
    #: (device, seq or None, marker) of every malformed payload injected
    dead_letters: list[tuple[str, int | None, str]]
    #: passages without a plate (held), entries refused as full, entries that lost
    #: the plate to a later one (older_entry)
    held: int = 0
    full: int = 0
    older: int = 0


class _City:
    """The open sessions by lot and the plate index, as the rules move them."""

    def __init__(self, plan: DayPlan, before: Before, out: Truth) -> None:
        self.capacity = {lot.lot_id: lot.capacity for lot in plan.lots}
        self.policy = {lot.lot_id: lot.full_policy for lot in plan.lots}
        self.open: dict[str, dict[str, Held]] = {
            lot.lot_id: dict(before.open_in_lots.get(lot.lot_id, {})) for lot in plan.lots
        }
        self.index: dict[str, tuple[str, Held]] = dict(before.index)
        self.marks: dict[str, int] = dict(before.marks)
        self.out = out

    def _supersede(self, held: Held) -> None:
        if isinstance(held, str):
            self.out.superseded_before.add(held)
        else:
            held.status = "superseded"

    def _same(self, a: Held, b: Held) -> bool:
        return a is b or (isinstance(a, str) and isinstance(b, str) and a == b)

    def entry(self, lot_id: str, plate: str, key: tuple[str, int], at: int) -> None:
        lot_open = self.open[lot_id]
        if plate in lot_open:
            self._supersede(lot_open.pop(plate))
        if self.policy[lot_id] == "hold" and len(lot_open) >= self.capacity[lot_id]:
            self.out.full += 1
            return
        session = ExpectedSession(lot_id, plate, key, at)
        self.out.sessions.append(session)
        lot_open[plate] = session
        if at < self.marks.get(plate, 0):
            session.status = "superseded"
            del lot_open[plate]
            self.out.older += 1
            return
        holder = self.index.get(plate)
        if holder is not None:
            held_lot, held = holder
            if held_lot != lot_id:
                other = self.open.get(held_lot, {})
                if plate in other and self._same(other[plate], held):
                    del other[plate]
                self._supersede(held)
        self.index[plate] = (lot_id, session)
        self.marks[plate] = at

    def exit(self, lot_id: str, plate: str, key: tuple[str, int], at: int) -> None:
        current = self.open[lot_id].pop(plate, None)
        if current is None:
            self.out.sessions.append(
                ExpectedSession(lot_id, plate, key, None, at, key, "closed", no_entry=True)
            )
            return
        holder = self.index.get(plate)
        if holder is not None and self._same(holder[1], current):
            del self.index[plate]
        self.marks[plate] = max(self.marks.get(plate, 0), at)
        if isinstance(current, str):
            # a stay from before the run ends here: priced by the platform alone
            self.out.sessions.append(
                ExpectedSession(lot_id, plate, (f"before:{current}", 0), None, at, key, "closed")
            )
            return
        current.exit_ms = at
        current.exit_key = key
        current.status = "closed"


def truth(plan: DayPlan, base: Mapping[str, int], before: Before) -> Truth:
    next_seq = {device: base.get(device, 0) for device in plan.devices()}
    first = dict(next_seq)
    lot_of: dict[str, str] = {}
    sensor_space: dict[str, tuple[str, str]] = {}
    for lot in plan.lots:
        for device in (*lot.gates_in, *lot.gates_out, *lot.sensors.values()):
            lot_of[device] = lot.lot_id
        for space, device in lot.sensors.items():
            sensor_space[device] = (lot.lot_id, space)
    out = Truth({}, [], {}, {}, set(), [])
    city = _City(plan, before, out)
    spaces: dict[tuple[str, str], bool] = {}
    for event in plan.events:
        if event.kind is Kind.BAD_RAW:
            out.dead_letters.append((event.device, None, event.image_ref or ""))
            continue
        next_seq[event.device] += 1
        seq = next_seq[event.device]
        if event.kind is Kind.BAD_IN_SEQUENCE:
            out.dead_letters.append((event.device, seq, event.image_ref or ""))
        elif event.kind is Kind.SPACE:
            spaces[sensor_space[event.device]] = bool(event.occupied)
        else:
            _passage(city, event, seq, lot_of[event.device])
    out.seqs = {
        device: (first[device] + 1, last)
        for device, last in next_seq.items()
        if last > first[device]
    }
    out.open_at_end = {lot: set(plates) for lot, plates in city.open.items()}
    out.spaces_at_end = {key: bool(v) for key, v in before.spaces.items()}
    out.spaces_at_end.update(spaces)
    return out


def _passage(city: _City, event: Event, seq: int, lot_id: str) -> None:
    if event.plate is None:
        city.out.held += 1
    elif event.direction == "in":
        city.entry(lot_id, event.plate, (event.device, seq), event.at_ms)
    else:
        city.exit(lot_id, event.plate, (event.device, seq), event.at_ms)
