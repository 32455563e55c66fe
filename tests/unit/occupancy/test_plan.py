"""The persister's plan (occupancy.plan.plan), pure: stream entries in, the rows of one
transaction out; an entry it cannot understand goes to ``poison`` and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from parking.occupancy import logic
from parking.occupancy import plan as planning
from parking.occupancy.model import (
    AckRecord,
    AnomalyKind,
    PassageRecord,
    PassageWire,
    PricedExit,
    SpaceRecord,
    SpaceWire,
    StatusRecord,
)
from parking.occupancy.plan import StreamEntry
from parking.sessions.model import SessionStatus

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
STREAM = "{o3}:events"
LOT = "GZ-DEMO-01"


def stream_entry(entry_id: str, **fields: str | bytes) -> StreamEntry:
    return StreamEntry(
        STREAM,
        entry_id,
        {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()},
    )


def passage(seq: int, direction: str = "in", **overrides: object) -> PassageRecord:
    base: dict[str, object] = {
        "device_id": "gate-1",
        "seq": seq,
        "lot_id": LOT,
        "lane_id": "IN-1" if direction == "in" else "OUT-1",
        "direction": direction,
        "plate": "赣B12345",
        "plate_raw": "赣B12345",
        "plate_color": "blue",
        "confidence": 0.95,
        "image_ref": f"img-{seq}",
        "observed_at": NOW,
        "received_at": NOW + timedelta(milliseconds=40),
        "mode": "open" if direction == "in" else "exit",
    }
    base.update(overrides)
    return PassageRecord(**base)  # type: ignore[arg-type]


def wire(record: PassageRecord) -> bytes:
    """The record as the gateway writes it to the stream (a JSON array)."""
    return msgspec.json.encode(PassageWire(**msgspec.structs.asdict(record)))


def passage_entry(
    entry_id: str, record: PassageRecord, outcome: str, *, ev: bytes | None = None, **fields: str
) -> StreamEntry:
    return stream_entry(
        entry_id, k="passage", ev=wire(record) if ev is None else ev, o=outcome, **fields
    )


def open_value(sid: str, entry_at: datetime, device: str = "gate-1", seq: int = 1) -> str:
    return f"{sid}|{logic.to_ms(entry_at)}|{device}|{seq}"


def ms(at: datetime) -> str:
    return str(logic.to_ms(at))


# ----------------------------------------------------------------- passages


def test_an_opened_entry_plans_its_event_its_passage_and_an_open_session() -> None:
    rec = passage(1)
    result = planning.plan([passage_entry("1-0", rec, "opened", sid="S1")])
    assert result.poison == []
    assert result.device_events == [("gate-1", 1, "passage", NOW, rec.received_at, NOW, None, None)]
    (row,) = result.passages
    assert row[0:2] == ("gate-1", 1)
    assert row[12:15] == ("opened", None, "S1")
    (session,) = result.sessions
    assert session.id == "S1"
    assert session.status == SessionStatus.OPEN
    assert session.entry_at == NOW
    assert (session.entry_device_id, session.entry_seq) == ("gate-1", 1)
    assert result.anomalies == []
    assert result.devices == {"gate-1": "{o3}"}
    assert result.device_lots == {"gate-1": LOT}
    assert result.months == {datetime(2026, 12, 1, tzinfo=UTC)}


def test_a_reentry_supersedes_the_old_session_and_opens_an_anomaly_for_it() -> None:
    old_entry = NOW - timedelta(hours=2)
    entry = passage_entry(
        "2-0", passage(2), "opened", sid="S2", sup="S1", cur=open_value("S1", old_entry)
    )
    result = planning.plan([entry])
    opened, superseded = result.sessions
    assert (opened.id, opened.status) == ("S2", SessionStatus.OPEN)
    assert superseded.id == "S1"
    assert superseded.status == SessionStatus.SUPERSEDED
    assert superseded.superseded_by == "S2"
    assert superseded.entry_at == old_entry
    assert superseded.flags == (AnomalyKind.REENTRY_SAME_LOT,)
    (anomaly,) = result.anomalies
    assert anomaly[0] == f"{AnomalyKind.REENTRY_SAME_LOT}:S1"
    assert anomaly[5] == "S1"


def priced(sid: str, **overrides: object) -> PricedExit:
    base: dict[str, object] = {
        "session_id": sid,
        "entry_at": NOW - timedelta(hours=1),
        "fee_fen": 300,
        "tariff_id": "T-1",
        "tariff_version": 2,
        "vehicle_class": 1,
        "reason": "tariff",
    }
    base.update(overrides)
    return PricedExit(**base)  # type: ignore[arg-type]


def test_a_closed_exit_plans_the_closed_session_with_its_price() -> None:
    entry_at = NOW - timedelta(hours=1)
    rec = passage(7, "out", priced=priced("S1"))
    result = planning.plan(
        [passage_entry("7-0", rec, "closed", sid="S1", cur=open_value("S1", entry_at, seq=3))]
    )
    assert result.poison == []
    (session,) = result.sessions
    assert session.status == SessionStatus.CLOSED
    assert (session.entry_at, session.exit_at) == (entry_at, NOW)
    assert (session.entry_seq, session.exit_seq) == (3, 7)
    assert (session.fee_fen, session.tariff_id, session.tariff_version) == (300, "T-1", 2)
    assert session.quote is None
    assert result.anomalies == []


def test_a_close_whose_pricing_failed_is_recorded_with_a_pricing_anomaly() -> None:
    rec = passage(7, "out", priced=priced("S1", fee_fen=0, error="no tariff for class 5"))
    result = planning.plan(
        [passage_entry("7-0", rec, "closed", sid="S1", cur=open_value("S1", NOW))]
    )
    (anomaly,) = result.anomalies
    assert anomaly[:2] == (f"{AnomalyKind.PRICING_FAILED}:S1", AnomalyKind.PRICING_FAILED)
    assert msgspec.json.decode(anomaly[7]) == {"error": "no tariff for class 5"}


def test_a_close_without_its_price_is_poison_and_writes_nothing() -> None:
    good = passage_entry("1-0", passage(1), "opened", sid="S9")
    bad = passage_entry("2-0", passage(2, "out"), "closed", sid="S1", cur=open_value("S1", NOW))
    result = planning.plan([good, bad])
    assert [e for e, _ in result.poison] == [bad]
    assert "without its price" in result.poison[0][1]
    # the good entry is planned whole, nothing of the bad one is
    assert [s.id for s in result.sessions] == ["S9"]
    assert [row[1] for row in result.passages] == [1]
    assert [row[1] for row in result.device_events] == [1]


def test_an_exit_without_entry_closes_a_new_session_at_the_lots_flat_fee_and_flags_it() -> None:
    rec = passage(
        4,
        "out",
        session_candidate="N1",
        no_entry_fee_fen=0,
        confidence=0.5,
        anomalies=(AnomalyKind.LOW_CONFIDENCE,),
    )
    result = planning.plan([passage_entry("4-0", rec, "no_entry")])
    (session,) = result.sessions
    assert (session.id, session.status, session.fee_fen) == ("N1", SessionStatus.CLOSED, 0)
    assert session.pricing_reason == "no_entry"
    assert session.flags == (AnomalyKind.LOW_CONFIDENCE, AnomalyKind.EXIT_WITHOUT_ENTRY)
    assert result.passages[0][14] == "N1"
    kinds = sorted(a[1] for a in result.anomalies)
    assert kinds == [AnomalyKind.EXIT_WITHOUT_ENTRY, AnomalyKind.LOW_CONFIDENCE]


def test_a_held_entry_records_the_passage_and_its_reason_but_no_session() -> None:
    rec = passage(5, mode="hold", hold_reason="arrears")
    result = planning.plan([passage_entry("5-0", rec, "held")])
    assert result.sessions == []
    assert result.passages[0][12:14] == ("held", "arrears")
    full = planning.plan([passage_entry("6-0", passage(6, hold_reason=None), "full")])
    assert full.passages[0][12:14] == ("full", "full")


def test_a_fee_review_anomaly_carries_the_stay_and_the_fee() -> None:
    entry_at = NOW - timedelta(days=8)
    rec = passage(
        8,
        "out",
        priced=priced("S1", entry_at=entry_at, fee_fen=40_000),
        anomalies=(AnomalyKind.FEE_REVIEW,),
        review="stay",
    )
    result = planning.plan(
        [passage_entry("8-0", rec, "closed", sid="S1", cur=open_value("S1", entry_at))]
    )
    (anomaly,) = result.anomalies
    assert anomaly[1] == AnomalyKind.FEE_REVIEW
    details = msgspec.json.decode(anomaly[7])
    assert details["review"] == "stay"
    assert details["fee_fen"] == 40_000
    assert result.sessions[0].flags == (AnomalyKind.FEE_REVIEW,)


def test_a_corrected_clock_uses_the_event_time_and_opens_a_skew_anomaly() -> None:
    corrected = NOW + timedelta(minutes=10)
    rec = passage(
        9,
        observed_at=NOW,
        event_at=corrected,
        sent_at=NOW,
        clock_offset_ms=-600_000,
        clock_skew="offset",
    )
    result = planning.plan([passage_entry("9-0", rec, "opened", sid="S3")])
    assert result.sessions[0].entry_at == corrected
    assert result.device_events[0][3:] == (NOW, rec.received_at, corrected, NOW, -600_000)
    (anomaly,) = result.anomalies
    assert anomaly[0] == f"{AnomalyKind.DEVICE_CLOCK_SKEW}:gate-1:9"
    assert result.clocks["gate-1"] == (-600_000, True, rec.received_at)


# ------------------------------------------------------------------- spaces


def space(seq: int, occupied: bool, *, as_json: bool = False) -> bytes:
    record = SpaceWire(
        device_id="sensor-1",
        seq=seq,
        lot_id=LOT,
        space_id="A-001",
        occupied=occupied,
        battery_pct=80,
        observed_at=NOW,
        received_at=NOW,
    )
    if as_json:  # a JSON object, as a gateway wrote it before the records became arrays
        return msgspec.json.encode(SpaceRecord(**msgspec.structs.asdict(record)))
    return msgspec.json.encode(record)


def test_an_applied_space_event_moves_the_space_state_and_a_stale_one_does_not() -> None:
    result = planning.plan(
        [
            stream_entry("1-0", k="space", ev=space(1, True), o="applied"),
            stream_entry("2-0", k="space", ev=space(2, False), o="stale"),
        ]
    )
    assert [row[1] for row in result.space_events] == [1, 2]
    assert result.space_states == [(LOT, "A-001", True, "sensor-1", 1, NOW, NOW)]
    assert result.anomalies == []


def test_a_flapping_sensor_is_flagged() -> None:
    result = planning.plan([stream_entry("1-0", k="space", ev=space(1, True), o="applied", fl="1")])
    (anomaly,) = result.anomalies
    assert anomaly[:2] == (f"{AnomalyKind.SENSOR_FLAPPING}:sensor-1:1", AnomalyKind.SENSOR_FLAPPING)


def test_records_written_as_json_objects_by_an_older_gateway_plan_the_same() -> None:
    rec = passage(1)
    entries = [
        passage_entry("1-0", rec, "opened", sid="S1"),
        stream_entry("2-0", k="space", ev=space(1, True), o="applied"),
    ]
    older = [
        passage_entry("1-0", rec, "opened", sid="S1", ev=msgspec.json.encode(rec)),
        stream_entry("2-0", k="space", ev=space(1, True, as_json=True), o="applied"),
    ]
    assert entries[0].raw("ev") != older[0].raw("ev")
    assert entries[0].raw("ev")[:1] == b"["
    assert len(entries[0].raw("ev")) < len(older[0].raw("ev")) * 0.6
    now, before = planning.plan(entries), planning.plan(older)
    assert (now.device_events, now.passages, now.sessions, now.space_states) == (
        before.device_events,
        before.passages,
        before.sessions,
        before.space_states,
    )
    assert len(now.passages) == len(now.sessions) == len(now.space_states) == 1
    assert now.poison == before.poison == []


# -------------------------------------------------------------------- other


def test_a_sequence_gap_is_an_anomaly_of_the_device() -> None:
    result = planning.plan([stream_entry("1-0", k="gap", d="gate-1", f="5", t="9", r=ms(NOW))])
    (anomaly,) = result.anomalies
    assert anomaly[:4] == (f"{AnomalyKind.SEQ_GAP}:gate-1:5", AnomalyKind.SEQ_GAP, None, "gate-1")
    assert msgspec.json.decode(anomaly[7]) == {"from": 5, "to": 9}
    assert anomaly[8] == NOW


def test_a_supersede_from_another_lot_closes_the_old_session_as_superseded() -> None:
    entry_at = NOW - timedelta(hours=3)
    result = planning.plan(
        [
            stream_entry(
                "1-0",
                k="supersede",
                sid="S1",
                by="S2",
                lot=LOT,
                plate="赣B12345",
                why=AnomalyKind.PLATE_ELSEWHERE,
                byl="GZ-OTHER-02",
                cur=open_value("S1", entry_at),
                r=ms(NOW),
            )
        ]
    )
    (session,) = result.sessions
    assert (session.status, session.superseded_by) == (SessionStatus.SUPERSEDED, "S2")
    assert session.flags == (AnomalyKind.PLATE_ELSEWHERE,)
    (anomaly,) = result.anomalies
    assert msgspec.json.decode(anomaly[7]) == {"superseded_by": "S2", "by_lot": "GZ-OTHER-02"}


def test_a_dead_letter_is_kept_with_its_payload_and_counts_its_sequence_number() -> None:
    result = planning.plan(
        [
            stream_entry(
                "1-0",
                k="dead",
                d="gate-1",
                s="4",
                topic="t/x",
                why="bad json",
                p=b"\xff{",
                r=ms(NOW),
            ),
            stream_entry(
                "2-0", k="dead", d="", s="", topic="t/y", why="no sender", p=b"", r=ms(NOW)
            ),
        ]
    )
    assert result.dead_letters == [
        (f"{STREAM}/1-0", NOW, "t/x", "gate-1", 4, "bad json", b"\xff{"),
        (f"{STREAM}/2-0", NOW, "t/y", None, None, "no sender", b""),
    ]
    assert result.device_events == [("gate-1", 4, "dead_letter", None, NOW, None, None, None)]


def status(online: bool) -> bytes:
    return msgspec.json.encode(
        StatusRecord(
            device_id="gate-1", lot_id=LOT, online=online, at=NOW, firmware="1.2", received_at=NOW
        )
    )


def test_an_offline_status_opens_an_anomaly_and_an_online_one_resolves_it() -> None:
    offline = planning.plan([stream_entry("1-0", k="status", ev=status(False), r=ms(NOW))])
    assert offline.anomalies[0][1] == AnomalyKind.DEVICE_OFFLINE
    assert offline.back_online == []
    online = planning.plan([stream_entry("1-0", k="status", ev=status(True), r=ms(NOW))])
    assert online.anomalies == []
    assert online.back_online == ["gate-1"]


def test_silent_devices_failed_and_unanswered_commands_are_anomalies_superseded_ones_not() -> None:
    ack = msgspec.json.encode(
        AckRecord(
            command_id="C1", lot_id=LOT, lane_id="IN-1", result="failed", at=NOW, received_at=NOW
        )
    )
    done = msgspec.json.encode(
        AckRecord(command_id="C2", lot_id=LOT, lane_id="IN-1", result="ok", at=NOW, received_at=NOW)
    )
    result = planning.plan(
        [
            stream_entry(
                "1-0", k="silent", d="gate-1", last=ms(NOW - timedelta(minutes=5)), r=ms(NOW)
            ),
            stream_entry("2-0", k="ack", ev=ack, r=ms(NOW)),
            stream_entry("3-0", k="ack", ev=done, r=ms(NOW)),
            stream_entry("4-0", k="cmd_expired", id="C3", topic="t/cmd", r=ms(NOW)),
            stream_entry("5-0", k="cmd_superseded", id="C4", by="C5", r=ms(NOW)),
            stream_entry("6-0", k="cmd_expired", id="C5", topic="t/cmd", r=ms(NOW), why="stale"),
        ]
    )
    assert [a[1] for a in result.anomalies] == [
        AnomalyKind.DEVICE_SILENT,
        AnomalyKind.COMMAND_FAILED,
        AnomalyKind.COMMAND_EXPIRED,
        AnomalyKind.COMMAND_EXPIRED,
    ]
    assert [msgspec.json.decode(a[7])["why"] for a in result.anomalies[2:]] == ["expired", "stale"]
    assert result.poison == []


def test_an_unknown_kind_or_a_broken_record_is_poison_and_the_rest_is_planned() -> None:
    unknown = stream_entry("1-0", k="teleport", r=ms(NOW))
    broken = stream_entry("2-0", k="passage", ev=b"{not json", o="opened", sid="S1")
    no_time = stream_entry("3-0", k="gap", d="gate-1", f="1", t="2")
    good = passage_entry("4-0", passage(4), "opened", sid="S4")
    result = planning.plan([unknown, broken, no_time, good])
    assert [e.entry_id for e, _ in result.poison] == ["1-0", "2-0", "3-0"]
    assert "unknown entry kind" in result.poison[0][1]
    assert [s.id for s in result.sessions] == ["S4"]
    assert result.anomalies == []
    assert result.dead_letters == []


def test_clock_went_back_anomalies_name_both_events() -> None:
    rows = [
        {
            "device_id": "gate-1",
            "seq": 9,
            "observed_at": NOW - timedelta(hours=1),
            "prev_seq": 8,
            "prev_observed_at": NOW,
            "received_at": NOW,
        }
    ]
    (anomaly,) = planning.went_back(rows, {"gate-1": LOT})
    assert anomaly[:4] == (
        f"{AnomalyKind.CLOCK_WENT_BACK}:gate-1:9",
        AnomalyKind.CLOCK_WENT_BACK,
        LOT,
        "gate-1",
    )
    details = msgspec.json.decode(anomaly[7])
    assert (details["seq"], details["previous_seq"]) == (9, 8)
