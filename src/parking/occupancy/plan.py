"""The persister's plan, pure: applied-events stream entries in, the rows of one
transaction out (``plan``); an entry it cannot understand goes to ``poison`` and
writes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

import msgspec

from parking.occupancy.keys import tag_of_events
from parking.occupancy.logic import from_ms, month_of, to_ms
from parking.occupancy.model import (
    AckRecord,
    AnomalyKind,
    GoneExit,
    OpenSession,
    PassageRecord,
    PassageWire,
    PricedExit,
    SpaceRecord,
    SpaceWire,
    StatusRecord,
)
from parking.occupancy.writeplan import StreamEntry, WritePlan
from parking.sessions.model import SessionChange, SessionStatus

__all__ = ["StreamEntry", "WritePlan", "plan", "went_back"]


_passage_wire: Final = msgspec.json.Decoder(PassageWire)
_space_wire: Final = msgspec.json.Decoder(SpaceWire)
#: JSON objects: what a gateway wrote before the records became arrays, still in the
#: streams during an upgrade
_passage_json: Final = msgspec.json.Decoder(PassageRecord)
_space_json: Final = msgspec.json.Decoder(SpaceRecord)


def _passage_record(raw: bytes) -> PassageRecord:
    return _passage_json.decode(raw) if raw[:1] == b"{" else _passage_wire.decode(raw)


def _space_record(raw: bytes) -> SpaceRecord:
    return _space_json.decode(raw) if raw[:1] == b"{" else _space_wire.decode(raw)


_status_decoder: Final = msgspec.json.Decoder(StatusRecord)
_ack_decoder: Final = msgspec.json.Decoder(AckRecord)

_SESSION_FLAGS: Final = frozenset(
    {AnomalyKind.LOW_CONFIDENCE, AnomalyKind.PRICING_FAILED, AnomalyKind.FEE_REVIEW}
)


def _clock(
    plan: WritePlan,
    *,
    device_id: str,
    seq: int,
    lot_id: str,
    observed_at: datetime,
    event_at: datetime,
    received: datetime,
    offset_ms: int | None,
    skew: str | None,
) -> None:
    """Note the device's clock at this event; a skewed one opens the device's
    ``device_clock_skew`` anomaly (one open per device: the table's unique index
    drops the others), a right one lets the persister resolve it."""
    plan.clocks[device_id] = (offset_ms, skew is not None, received)
    plan.device_lots[device_id] = lot_id
    if skew is None:
        return
    _anomaly(
        plan,
        anomaly_id=f"{AnomalyKind.DEVICE_CLOCK_SKEW}:{device_id}:{seq}",
        kind=AnomalyKind.DEVICE_CLOCK_SKEW,
        at=received,
        lot_id=lot_id,
        device_id=device_id,
        details={
            "offset_ms": offset_ms,
            "rule": (
                "observed_at - median offset (sent_at - received_at)"
                if skew == "offset"
                else "no sent_at and observed after it arrived: taken as received_at"
            ),
            "seq": seq,
            "observed_at": observed_at.isoformat(),
            "corrected_to": event_at.isoformat(),
            "received_at": received.isoformat(),
        },
    )


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


def _entered(rec: PassageRecord, sid: str, at: datetime, **fact: object) -> SessionChange:
    """A fact about session ``sid`` whose entry is this passage (``fact``: the rest)."""
    return SessionChange(
        id=sid,
        lot_id=rec.lot_id,
        plate=rec.plate,
        plate_raw=rec.plate_raw,
        entry_at=at,
        entry_device_id=rec.device_id,
        entry_seq=rec.seq,
        **fact,  # type: ignore[arg-type]
    )


def _priced(priced: PricedExit) -> dict[str, object]:
    """The fee fields of a session priced by the gateway."""
    return {
        "vehicle_class": priced.vehicle_class,
        "fee_fen": priced.fee_fen,
        "tariff_id": priced.tariff_id,
        "tariff_version": priced.tariff_version,
        "pricing_reason": priced.reason,
        "quote": priced.quote_json,
    }


def _pricing_failed(
    plan: WritePlan, rec: PassageRecord, sid: str, received: datetime, error: str
) -> None:
    _anomaly(
        plan,
        anomaly_id=f"{AnomalyKind.PRICING_FAILED}:{sid}",
        kind=AnomalyKind.PRICING_FAILED,
        at=received,
        lot_id=rec.lot_id,
        device_id=rec.device_id,
        plate=rec.plate,
        session_id=sid,
        details={"error": error},
    )


def _plan_passage(plan: WritePlan, entry: StreamEntry) -> None:
    rec = _passage_record(entry.raw("ev"))
    outcome = entry.get("o")
    sid = entry.get("sid") or None
    superseded = entry.get("sup") or None
    received = rec.received_at
    at = rec.at
    plan.devices[rec.device_id] = tag_of_events(entry.stream)
    plan.months.add(month_of(received))
    plan.device_events.append(
        (
            rec.device_id,
            rec.seq,
            "passage",
            rec.observed_at,
            received,
            at,
            rec.sent_at,
            rec.clock_offset_ms,
        )
    )
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
            at,
            rec.sent_at,
            rec.clock_offset_ms,
        )
    )
    op = f"{rec.device_id}:{rec.seq}"
    flags = tuple(sorted(set(rec.anomalies) & _SESSION_FLAGS))
    for kind in rec.anomalies:
        details: dict[str, object] = {"direction": rec.direction, "confidence": rec.confidence}
        if kind == AnomalyKind.FEE_REVIEW and rec.priced is not None:
            details |= {
                "review": rec.review,
                "fee_fen": rec.priced.fee_fen,
                "entry_at": rec.priced.entry_at.isoformat(),
                "exit_at": at.isoformat(),
            }
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
            details=details,
        )
    if outcome == "opened" and sid is not None:
        plan.sessions.append(_entered(rec, sid, at, status=SessionStatus.OPEN, flags=flags))
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
                exit_at=at,
                exit_device_id=rec.device_id,
                exit_seq=rec.seq,
                flags=flags,
                **_priced(priced),  # type: ignore[arg-type]
            )
        )
        if priced.error is not None:
            _pricing_failed(plan, rec, sid, received, priced.error)
    elif outcome == "older_entry" and sid is not None and superseded is not None:
        # An earlier read of the plate delivered after the later entry: superseded by it.
        plan.sessions.append(
            _entered(
                rec,
                sid,
                at,
                status=SessionStatus.SUPERSEDED,
                superseded_by=superseded,
                flags=(*flags, "older_entry"),
            )
        )
    elif outcome == "late_entry" and sid is not None:
        priced = rec.priced
        gone = GoneExit.parse(entry.get("cur"))
        if priced is None or priced.session_id != sid or gone.session_id != sid:
            raise ValueError(f"late entry of {sid} without its price or its exit")
        plan.late_entries.append(
            _entered(
                rec,
                sid,
                at,
                status=SessionStatus.CLOSED,
                exit_at=from_ms(gone.exit_ms),
                exit_device_id=gone.device_id,
                exit_seq=gone.seq,
                flags=(*flags, "late_entry"),
                **_priced(priced),
            )
        )
        if priced.error is not None:
            _pricing_failed(plan, rec, sid, received, priced.error)
    elif outcome == "no_entry" and session_id is not None:
        plan.sessions.append(
            SessionChange(
                id=session_id,
                lot_id=rec.lot_id,
                status=SessionStatus.CLOSED,
                plate=rec.plate,
                plate_raw=rec.plate_raw,
                exit_at=at,
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
    _clock(
        plan,
        device_id=rec.device_id,
        seq=rec.seq,
        lot_id=rec.lot_id,
        observed_at=rec.observed_at,
        event_at=at,
        received=received,
        offset_ms=rec.clock_offset_ms,
        skew=rec.clock_skew,
    )


def _plan_space(plan: WritePlan, entry: StreamEntry) -> None:
    rec = _space_record(entry.raw("ev"))
    received = rec.received_at
    at = rec.at
    plan.devices[rec.device_id] = tag_of_events(entry.stream)
    plan.months.add(month_of(received))
    plan.device_events.append(
        (
            rec.device_id,
            rec.seq,
            "space_state",
            rec.observed_at,
            received,
            at,
            rec.sent_at,
            rec.clock_offset_ms,
        )
    )
    _clock(
        plan,
        device_id=rec.device_id,
        seq=rec.seq,
        lot_id=rec.lot_id,
        observed_at=rec.observed_at,
        event_at=at,
        received=received,
        offset_ms=rec.clock_offset_ms,
        skew=rec.clock_skew,
    )
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
            at,
            rec.sent_at,
            rec.clock_offset_ms,
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
                at,
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


def went_back(
    rows: Sequence[Mapping[str, object]], device_lots: Mapping[str, str]
) -> list[tuple[object, ...]]:
    """``clock_went_back`` anomalies for stored events observed before the same device's
    previous event by seq (rows: ``device_id``, ``seq``, ``observed_at``, ``prev_seq``,
    ``prev_observed_at``, ``received_at``)."""
    plan = WritePlan()
    for row in rows:
        device, seq, received = str(row["device_id"]), row["seq"], row["received_at"]
        assert isinstance(received, datetime)
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.CLOCK_WENT_BACK}:{device}:{seq}",
            kind=AnomalyKind.CLOCK_WENT_BACK,
            at=received,
            lot_id=device_lots.get(device),
            device_id=device,
            details={
                "seq": seq,
                "observed_at": row["observed_at"],
                "previous_seq": row["prev_seq"],
                "previous_observed_at": row["prev_observed_at"],
            },
        )
    return plan.anomalies


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
        sid, by, lot_id, plate = (entry.get(name) for name in ("sid", "by", "lot", "plate"))
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
            plan.device_events.append((sender, seq, "dead_letter", None, at, None, None, None))
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
        # The gate never acked it: past its TTL, its passage stale, or out of re-sends
        # (``why``; entries of an older core have none: TTL).
        command_id = entry.get("id")
        _anomaly(
            plan,
            anomaly_id=f"{AnomalyKind.COMMAND_EXPIRED}:{command_id}",
            kind=AnomalyKind.COMMAND_EXPIRED,
            at=at,
            details={
                "command_id": command_id,
                "topic": entry.get("topic"),
                "why": entry.get("why") or "expired",
            },
        )
    elif kind == "cmd_superseded":
        # A newer passage of the lane has its own command: nothing went wrong, nothing
        # to review (the newer command is recorded if it goes unanswered in turn).
        pass
    else:
        raise ValueError(f"unknown entry kind {kind!r}")


def plan(entries: Sequence[StreamEntry]) -> WritePlan:
    """The rows that record ``entries``. An entry that cannot be understood goes to
    ``poison`` (the rest is planned normally)."""
    result = WritePlan()
    rows: tuple[list, ...] = (  # type: ignore[type-arg]
        result.device_events,
        result.passages,
        result.space_events,
        result.space_states,
        result.sessions,
        result.late_entries,
        result.anomalies,
        result.dead_letters,
    )
    for entry in entries:
        size = [len(r) for r in rows]
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
            for r, n in zip(rows, size, strict=True):
                del r[n:]
            result.poison.append((entry, f"{type(error).__name__}: {error}"))
    return result
