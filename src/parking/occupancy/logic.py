"""Pure logic of the occupancy core.

* `DeviceSeqs`: the reference model of the per-device dedup and gap detection
  the Lua library implements (a property test drives both with the same events).
* `plate_flags`: a plate shard's answer turned into `PlateFlags`.
* `plan`: applied-events stream entries -> the rows the persister writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec

from parking.ids import ulid
from parking.occupancy.keys import tag_of_events
from parking.occupancy.model import (
    AckRecord,
    AnomalyKind,
    OpenSession,
    PassageRecord,
    PassWindow,
    PlateFlags,
    SpaceRecord,
    StatusRecord,
)
from parking.sessions.model import SessionChange, SessionStatus


def session_id_for(device_id: str, seq: int, observed_at: datetime) -> str:
    """The id of the session an event would open: a ULID of the event's time whose random
    part is a hash of (device, seq). The same event always names the same session, so a
    batch retried after a crash cannot open it under a second id."""
    digest = hashlib.blake2b(f"{device_id}:{seq}".encode(), digest_size=10).digest()
    return f"s-{ulid(observed_at, digest)}"


def to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def month_of(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


# ------------------------------------------------------------ dedup model


@dataclass
class DeviceSeqs:
    """Which seqs of one device were applied; mirrors ``mark_applied`` in the Lua library."""

    hw: int = 0
    max: int = 0
    above: set[int] = field(default_factory=set)

    def seen(self, seq: int) -> bool:
        return seq <= self.hw or seq in self.above

    def apply(self, seq: int) -> tuple[int, int] | None:
        """Record ``seq`` (not seen before); return the gap it revealed, if any."""
        gap = None
        if seq == self.hw + 1:
            self.hw = seq
            while self.hw + 1 in self.above:
                self.above.remove(self.hw + 1)
                self.hw += 1
        else:
            self.above.add(seq)
        if seq > self.max:
            if seq > self.max + 1 and seq - 1 > self.hw:
                gap = (max(self.max, self.hw) + 1, seq - 1)
            self.max = seq
        return gap


# ------------------------------------------------------------ plate flags


def plate_flags(pairs: Mapping[str, str]) -> PlateFlags:
    """Flags of a plate from its plate-shard hash (other fields are ignored)."""
    blacklisted = pairs.get("bl") or None
    arrears = pairs.get("arrears")
    passes: dict[str, PassWindow] = {}
    for name, value in pairs.items():
        if not name.startswith("pass:"):
            continue
        try:
            start, until, pass_id = value.split("|")
            passes[name[5:]] = PassWindow(pass_id, from_ms(int(start)), from_ms(int(until)))
        except ValueError:
            continue
    return PlateFlags(
        blacklisted=blacklisted,
        arrears_since=from_ms(int(arrears)) if arrears and arrears.isdigit() else None,
        passes=passes,
    )


def flag_pairs(flags: PlateFlags) -> list[tuple[str, str]]:
    """The plate-shard fields that store ``flags`` (inverse of `plate_flags`)."""
    pairs: list[tuple[str, str]] = []
    if flags.blacklisted:
        pairs.append(("bl", flags.blacklisted[:200]))
    if flags.arrears_since is not None:
        pairs.append(("arrears", str(to_ms(flags.arrears_since))))
    for scope, window in sorted(flags.passes.items()):
        pairs.append(
            (
                f"pass:{scope}",
                f"{to_ms(window.valid_from)}|{to_ms(window.valid_until)}|{window.pass_id}",
            )
        )
    return pairs


# ------------------------------------------------------------ persister plan


@dataclass(frozen=True, slots=True)
class StreamEntry:
    stream: str
    entry_id: str
    fields: Mapping[bytes, bytes]

    @property
    def source(self) -> str:
        return f"{self.stream}/{self.entry_id}"

    def get(self, name: str) -> str:
        return self.fields.get(name.encode(), b"").decode("utf-8")

    def raw(self, name: str) -> bytes:
        return self.fields.get(name.encode(), b"")


@dataclass
class WritePlan:
    """Rows for one persister transaction. Rows keyed by (device, seq) are written only
    for pairs that `device_events` did not hold yet."""

    device_events: list[tuple[str, int, str, datetime | None, datetime]] = field(
        default_factory=list
    )
    passages: list[tuple[object, ...]] = field(default_factory=list)
    space_events: list[tuple[object, ...]] = field(default_factory=list)
    space_states: list[tuple[object, ...]] = field(default_factory=list)
    sessions: list[SessionChange] = field(default_factory=list)
    anomalies: list[tuple[object, ...]] = field(default_factory=list)
    dead_letters: list[tuple[object, ...]] = field(default_factory=list)
    #: devices whose offline anomaly an online status resolves
    back_online: list[str] = field(default_factory=list)
    #: device -> hash tag of its lot shard, for every device with a stored event
    #: (their watermarks may move)
    devices: dict[str, str] = field(default_factory=dict)
    months: set[datetime] = field(default_factory=set)
    #: entries that could not be understood: (entry, why); left pending, then dead-lettered
    poison: list[tuple[StreamEntry, str]] = field(default_factory=list)


_passage_decoder: Final = msgspec.json.Decoder(PassageRecord)
_space_decoder: Final = msgspec.json.Decoder(SpaceRecord)
_status_decoder: Final = msgspec.json.Decoder(StatusRecord)
_ack_decoder: Final = msgspec.json.Decoder(AckRecord)

_SESSION_FLAGS: Final = frozenset({AnomalyKind.LOW_CONFIDENCE, AnomalyKind.PRICING_FAILED})


def _anomaly(
    plan: WritePlan,
    *,
    anomaly_id: str,
    kind: str,
    at: datetime,
    lot_id: str | None = None,
    device_id: str | None = None,
    plate: str | None = None,
    session_id: str | None = None,
    image_ref: str | None = None,
    details: Mapping[str, object] | None = None,
) -> None:
    plan.anomalies.append(
        (
            anomaly_id,
            kind,
            lot_id,
            device_id,
            plate,
            session_id,
            image_ref,
            json.dumps(details or {}, ensure_ascii=False, default=str),
            at,
        )
    )


def _plan_passage(plan: WritePlan, entry: StreamEntry) -> None:
    rec = _passage_decoder.decode(entry.raw("ev"))
    outcome = entry.get("o")
    sid = entry.get("sid") or None
    superseded = entry.get("sup") or None
    received = rec.received_at
    plan.devices[rec.device_id] = tag_of_events(entry.stream)
    plan.months.add(month_of(received))
    plan.device_events.append((rec.device_id, rec.seq, "passage", rec.observed_at, received))
    session_id = sid or (rec.session_candidate if outcome == "no_entry" else None)
    plan.passages.append(
        (
            rec.device_id,
            rec.seq,
            received,
            rec.observed_at,
            rec.lot_id,
            rec.lane_id,
            rec.direction,
            rec.plate,
            rec.plate_raw,
            rec.plate_color,
            rec.confidence,
            rec.image_ref,
            outcome,
            "full" if outcome == "full" else rec.hold_reason,
            session_id,
        )
    )
    op = f"{rec.device_id}:{rec.seq}"
    flags = tuple(sorted(set(rec.anomalies) & _SESSION_FLAGS))
    for kind in rec.anomalies:
        _anomaly(
            plan,
            anomaly_id=f"{kind}:{op}",
            kind=kind,
            at=received,
            lot_id=rec.lot_id,
            device_id=rec.device_id,
            plate=rec.plate or rec.plate_raw,
            session_id=session_id,
            image_ref=rec.image_ref,
            details={"direction": rec.direction, "confidence": rec.confidence},
        )
    if outcome == "opened" and sid is not None:
        plan.sessions.append(
            SessionChange(
                id=sid,
                lot_id=rec.lot_id,
                status=SessionStatus.OPEN,
                plate=rec.plate,
                plate_raw=rec.plate_raw,
                entry_at=rec.observed_at,
                entry_device_id=rec.device_id,
                entry_seq=rec.seq,
                flags=flags,
            )
        )
        if superseded is not None:
            old = OpenSession.parse(entry.get("cur"))
            plan.sessions.append(
                SessionChange(
                    id=superseded,
                    lot_id=rec.lot_id,
                    status=SessionStatus.SUPERSEDED,
                    plate=rec.plate,
                    entry_at=from_ms(old.entry_ms),
                    entry_device_id=old.device_id,
                    entry_seq=old.seq,
                    superseded_by=sid,
                    flags=(AnomalyKind.REENTRY_SAME_LOT,),
                )
            )
            _anomaly(
                plan,
                anomaly_id=f"{AnomalyKind.REENTRY_SAME_LOT}:{superseded}",
                kind=AnomalyKind.REENTRY_SAME_LOT,
                at=received,
                lot_id=rec.lot_id,
                device_id=rec.device_id,
                plate=rec.plate,
                session_id=superseded,
                image_ref=rec.image_ref,
                details={"superseded_by": sid},
            )
    elif outcome == "closed" and sid is not None:
        priced = rec.priced
        old = OpenSession.parse(entry.get("cur"))
        if priced is None or priced.session_id != sid:
            raise ValueError(f"closed session {sid} without its price")
        plan.sessions.append(
            SessionChange(
                id=sid,
                lot_id=rec.lot_id,
                status=SessionStatus.CLOSED,
                plate=rec.plate,
                entry_at=from_ms(old.entry_ms),
                entry_device_id=old.device_id,
                entry_seq=old.seq,
                exit_at=rec.observed_at,
                exit_device_id=rec.device_id,
                exit_seq=rec.seq,
                vehicle_class=priced.vehicle_class,
                fee_fen=priced.fee_fen,
                tariff_id=priced.tariff_id,
                tariff_version=priced.tariff_version,
                pricing_reason=priced.reason,
                quote=priced.quote_json,
                flags=flags,
            )
        )
        if priced.error is not None:
            _anomaly(
                plan,
                anomaly_id=f"{AnomalyKind.PRICING_FAILED}:{sid}",
                kind=AnomalyKind.PRICING_FAILED,
                at=received,
                lot_id=rec.lot_id,
                device_id=rec.device_id,
                plate=rec.plate,
                session_id=sid,
                details={"error": priced.error},
            )
    elif outcome == "no_entry" and session_id is not None:
        plan.sessions.append(
            SessionChange(
                id=session_id,
                lot_id=rec.lot_id,
                status=SessionStatus.CLOSED,
                plate=rec.plate,
                plate_raw=rec.plate_raw,
                exit_at=rec.observed_at,
                exit_device_id=rec.device_id,
                exit_seq=rec.seq,
                fee_fen=rec.no_entry_fee_fen,
                pricing_reason="no_entry",
                flags=(*flags, AnomalyKind.EXIT_WITHOUT_ENTRY),
            )
        )
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.EXIT_WITHOUT_ENTRY}:{op}",
            kind=AnomalyKind.EXIT_WITHOUT_ENTRY,
            at=received,
            lot_id=rec.lot_id,
            device_id=rec.device_id,
            plate=rec.plate,
            session_id=session_id,
            image_ref=rec.image_ref,
            details={"fee_fen": rec.no_entry_fee_fen, "policy": "flat fee, flagged for review"},
        )


def _plan_space(plan: WritePlan, entry: StreamEntry) -> None:
    rec = _space_decoder.decode(entry.raw("ev"))
    received = rec.received_at
    plan.devices[rec.device_id] = tag_of_events(entry.stream)
    plan.months.add(month_of(received))
    plan.device_events.append((rec.device_id, rec.seq, "space_state", rec.observed_at, received))
    plan.space_events.append(
        (
            rec.device_id,
            rec.seq,
            received,
            rec.observed_at,
            rec.lot_id,
            rec.space_id,
            rec.occupied,
            rec.battery_pct,
        )
    )
    if entry.get("o") == "applied":
        plan.space_states.append(
            (
                rec.lot_id,
                rec.space_id,
                rec.occupied,
                rec.device_id,
                rec.seq,
                rec.observed_at,
                received,
            )
        )
    if entry.get("fl") == "1":
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.SENSOR_FLAPPING}:{rec.device_id}:{rec.seq}",
            kind=AnomalyKind.SENSOR_FLAPPING,
            at=received,
            lot_id=rec.lot_id,
            device_id=rec.device_id,
            details={"space_id": rec.space_id},
        )


def _received(entry: StreamEntry) -> datetime:
    return from_ms(int(entry.get("r")))


def _plan_other(plan: WritePlan, entry: StreamEntry) -> None:
    kind = entry.get("k")
    at = _received(entry)
    if kind == "gap":
        device, start, end = entry.get("d"), int(entry.get("f")), int(entry.get("t"))
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.SEQ_GAP}:{device}:{start}",
            kind=AnomalyKind.SEQ_GAP,
            at=at,
            device_id=device,
            details={"from": start, "to": end},
        )
    elif kind == "supersede":
        sid, by, lot_id, plate = (
            entry.get("sid"),
            entry.get("by"),
            entry.get("lot"),
            entry.get("plate"),
        )
        why = entry.get("why")
        old = OpenSession.parse(entry.get("cur"))
        plan.sessions.append(
            SessionChange(
                id=sid,
                lot_id=lot_id,
                status=SessionStatus.SUPERSEDED,
                plate=plate,
                entry_at=from_ms(old.entry_ms),
                entry_device_id=old.device_id,
                entry_seq=old.seq,
                superseded_by=by,
                flags=(why,),
            )
        )
        _anomaly(
            plan,
            anomaly_id=f"{why}:{sid}",
            kind=why,
            at=at,
            lot_id=lot_id,
            plate=plate,
            session_id=sid,
            details={"superseded_by": by, "by_lot": entry.get("byl")},
        )
    elif kind == "dead":
        sender = entry.get("d") or None
        seq = int(entry.get("s")) if entry.get("s") else None
        plan.dead_letters.append(
            (entry.source, at, entry.get("topic"), sender, seq, entry.get("why"), entry.raw("p"))
        )
        if sender is not None and seq is not None:
            plan.devices[sender] = tag_of_events(entry.stream)
            plan.device_events.append((sender, seq, "dead_letter", None, at))
    elif kind == "status":
        status = _status_decoder.decode(entry.raw("ev"))
        if status.online:
            plan.back_online.append(status.device_id)
        else:
            _anomaly(
                plan,
                anomaly_id=f"{AnomalyKind.DEVICE_OFFLINE}:{status.device_id}:{to_ms(status.at)}",
                kind=AnomalyKind.DEVICE_OFFLINE,
                at=at,
                lot_id=status.lot_id,
                device_id=status.device_id,
                details={"reported_at": status.at.isoformat(), "firmware": status.firmware},
            )
    elif kind == "silent":
        device = entry.get("d")
        last = from_ms(int(float(entry.get("last"))))
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.DEVICE_SILENT}:{device}:{entry.get('r')}",
            kind=AnomalyKind.DEVICE_SILENT,
            at=at,
            device_id=device,
            details={"last_heard": last.isoformat()},
        )
    elif kind == "ack":
        ack = _ack_decoder.decode(entry.raw("ev"))
        if ack.result == "failed":
            _anomaly(
                plan,
                anomaly_id=f"{AnomalyKind.COMMAND_FAILED}:{ack.command_id}",
                kind=AnomalyKind.COMMAND_FAILED,
                at=at,
                lot_id=ack.lot_id,
                details={"command_id": ack.command_id, "lane_id": ack.lane_id},
            )
    elif kind == "cmd_expired":
        command_id = entry.get("id")
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.COMMAND_EXPIRED}:{command_id}",
            kind=AnomalyKind.COMMAND_EXPIRED,
            at=at,
            details={"command_id": command_id, "topic": entry.get("topic")},
        )
    else:
        raise ValueError(f"unknown entry kind {kind!r}")


def plan(entries: Sequence[StreamEntry]) -> WritePlan:
    """The rows that record ``entries``. An entry that cannot be understood goes to
    ``poison`` (the rest is planned normally)."""
    result = WritePlan()
    for entry in entries:
        size = (
            len(result.device_events),
            len(result.passages),
            len(result.space_events),
            len(result.space_states),
            len(result.sessions),
            len(result.anomalies),
            len(result.dead_letters),
        )
        try:
            kind = entry.get("k")
            if kind == "passage":
                _plan_passage(result, entry)
            elif kind == "space":
                _plan_space(result, entry)
            else:
                _plan_other(result, entry)
        except (ValueError, KeyError, msgspec.DecodeError, UnicodeDecodeError) as error:
            # Undo the half-planned entry so a poison entry writes nothing.
            del result.device_events[size[0] :]
            del result.passages[size[1] :]
            del result.space_events[size[2] :]
            del result.space_states[size[3] :]
            del result.sessions[size[4] :]
            del result.anomalies[size[5] :]
            del result.dead_letters[size[6] :]
            result.poison.append((entry, f"{type(error).__name__}: {error}"))
    return result
