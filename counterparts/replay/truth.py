"""What the platform must hold after a replay, from the plan alone.

The platform's documented rules (``docs/protocol.md``, ``contracts/mqtt.md``)
applied to what the devices published, in day order, starting from what the
platform held before the run:

- every event a device sent takes its next seq (``base + 1, base + 2, ...``) and
  is stored once; a malformed payload is a dead letter and nothing else;
- an entry read as a plate opens a session (a session of the same plate open in
  the same lot is superseded: the car came in again without an exit read; one
  open in another lot is superseded by this one: the plate is here now); an
  entry without a plate is held and opens nothing;
- an exit read as a plate closes that plate's open session in the lot, priced
  from its entry to its exit; with none open it is an exit without entry
  (closed, no fee); an exit without a plate is held and closes nothing;
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


@dataclass(frozen=True, slots=True)
class Before:
    """What the platform held before the run, for the run's lots and plates."""

    #: lot -> plate -> session id (open sessions in the run's lots)
    open_in_lots: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: plate -> (lot, session id): open sessions of the run's plates in other lots
    open_elsewhere: Mapping[str, tuple[str, str]] = field(default_factory=dict)
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
    #: entries the platform must have held (no plate read), exits likewise
    held: int = 0
    full: int = 0


def truth(plan: DayPlan, base: Mapping[str, int], before: Before) -> Truth:
    next_seq = {device: base.get(device, 0) for device in plan.devices()}
    first = dict(next_seq)
    lot_of: dict[str, str] = {}
    capacity: dict[str, int] = {}
    policy: dict[str, str] = {}
    sensor_space: dict[str, tuple[str, str]] = {}
    for lot in plan.lots:
        capacity[lot.lot_id] = lot.capacity
        policy[lot.lot_id] = lot.full_policy
        for device in (*lot.gates_in, *lot.gates_out, *lot.sensors.values()):
            lot_of[device] = lot.lot_id
        for space, device in lot.sensors.items():
            sensor_space[device] = (lot.lot_id, space)

    # lot -> plate -> session (None: a session from before the run, by id)
    open_now: dict[str, dict[str, ExpectedSession | str]] = {
        lot.lot_id: dict(before.open_in_lots.get(lot.lot_id, {})) for lot in plan.lots
    }
    where: dict[str, str] = {}
    for lot_id, plates in open_now.items():
        for plate in plates:
            where[plate] = lot_id
    elsewhere = dict(before.open_elsewhere)
    sessions: list[ExpectedSession] = []
    superseded_before: set[str] = set()
    spaces: dict[tuple[str, str], tuple[int, bool]] = {}
    dead: list[tuple[str, int | None, str]] = []
    out = Truth({}, sessions, {}, {}, superseded_before, dead)

    def supersede(old: ExpectedSession | str) -> None:
        if isinstance(old, str):
            superseded_before.add(old)
        else:
            old.status = "superseded"

    for event in plan.events:
        if event.kind is Kind.BAD_RAW:
            dead.append((event.device, None, event.image_ref or ""))
            continue
        next_seq[event.device] += 1
        seq = next_seq[event.device]
        if event.kind is Kind.BAD_IN_SEQUENCE:
            dead.append((event.device, seq, event.image_ref or ""))
        elif event.kind is Kind.SPACE:
            spaces[sensor_space[event.device]] = (seq, bool(event.occupied))
        else:
            _passage(event, seq, lot_of[event.device], capacity, policy, open_now, where,
                     elsewhere, sessions, supersede, out)  # fmt: skip
    out.seqs = {
        device: (first[device] + 1, last)
        for device, last in next_seq.items()
        if last > first[device]
    }
    out.open_at_end = {lot: set(plates) for lot, plates in open_now.items()}
    out.spaces_at_end = {key: bool(v) for key, v in before.spaces.items()}
    out.spaces_at_end.update({key: occupied for key, (_, occupied) in spaces.items()})
    return out


def _passage(
    event: Event,
    seq: int,
    lot_id: str,
    capacity: Mapping[str, int],
    policy: Mapping[str, str],
    open_now: dict[str, dict[str, ExpectedSession | str]],
    where: dict[str, str],
    elsewhere: dict[str, tuple[str, str]],
    sessions: list[ExpectedSession],
    supersede: object,
    out: Truth,
) -> None:
    assert callable(supersede)
    plate = event.plate
    key = (event.device, seq)
    lot_open = open_now[lot_id]
    if plate is None:
        out.held += 1
        return
    if event.direction == "in":
        if plate in lot_open:
            supersede(lot_open.pop(plate))
        elif plate in where and where[plate] != lot_id:
            supersede(open_now[where[plate]].pop(plate))
        elif plate in elsewhere:
            supersede(elsewhere.pop(plate)[1])
        if policy[lot_id] == "hold" and len(lot_open) >= capacity[lot_id]:
            out.full += 1
            return
        session = ExpectedSession(lot_id, plate, key, event.at_ms)
        sessions.append(session)
        lot_open[plate] = session
        where[plate] = lot_id
        return
    current = lot_open.pop(plate, None)
    if current is not None:
        where.pop(plate, None)
        if isinstance(current, str):
            # a stay from before the run ends here: priced by the platform alone
            sessions.append(
                ExpectedSession(
                    lot_id, plate, key, None, event.at_ms, key, "closed", no_entry=False
                )
            )
            sessions[-1].key = ("before:" + current, 0)
            return
        current.exit_ms = event.at_ms
        current.exit_key = key
        current.status = "closed"
        return
    sessions.append(ExpectedSession(lot_id, plate, key, None, event.at_ms, key, "closed", True))
