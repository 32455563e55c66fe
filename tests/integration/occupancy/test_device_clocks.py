"""Device clocks (contracts/mqtt.md v1.1 "Clocks", issue 10 point 1) in the occupancy core:
the real Redis core and the persister's writes to the real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
from corekit import DEMO, Core, minutes

from parking.devices import service as devices
from parking.occupancy import batch, ingest
from parking.occupancy.model import AnomalyKind
from parking.pricing import Pricer
from parking.sessions import service as sessions

#: The issue's example: an exit gate whose clock says 2036.
Y2036 = datetime(2036, 2, 1, 9, 30, tzinfo=UTC)


def command_of(report: batch.BatchReport) -> dict[str, object]:
    commands = [p for p in report.publishes if "/commands" in p.topic]
    assert len(commands) == 1, report.publishes
    return dict(msgspec.json.decode(commands[0].payload))


async def fee_of(core: Core, entry: datetime, exit: datetime) -> int:
    stay = (await Pricer.load(core.conn)).price(
        lot_id=DEMO, plate="赣B12345", entry=entry, exit=exit
    )
    return stay.fee_fen


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


async def open_anomalies(core: Core, kind: str) -> list[dict[str, object]]:
    rows = await core.conn.fetch(
        "SELECT device_id, session_id, details::text AS details FROM anomalies "
        "WHERE kind = $1 AND status = 'open' ORDER BY id",
        kind,
    )
    return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


async def test_an_exit_dated_2036_bills_the_stay_it_was_not_one_of_years(core: Core) -> None:
    entered = core.clock.now()
    await core.handle(core.passage("in1", "赣B12345", sent_at=entered))
    core.clock.advance(minutes(65))
    now = core.clock.now()
    skew = Y2036 - now
    out = await core.handle(core.passage("out1", "赣B12345", at=Y2036, sent_at=Y2036))
    fee = await fee_of(core, entered, now)
    assert fee > 0
    # Today's main printed "停车79579小时46分 应缴66320.00元" and billed 6,632,000 fen.
    assert command_of(out)["display"] == f"赣B12345 停车1小时05分 应缴{yuan(fee)}元 已离场后付"
    await core.persist()
    [view] = await sessions.list_for_plate(core.conn, "赣B12345")
    assert (view.status, view.fee_fen, view.exit_at) == ("closed", fee, now)
    assert (
        await core.conn.fetchval("SELECT amount_fen FROM bills WHERE session_id = $1", view.id)
        == fee
    )
    # the device's time and the corrected one are both stored
    exit_gate = core.gates[f"{DEMO}/out1"]
    row = await core.conn.fetchrow(
        "SELECT observed_at, event_at, sent_at, clock_offset_ms FROM passages WHERE device_id = $1",
        exit_gate,
    )
    assert (row["observed_at"], row["event_at"], row["sent_at"]) == (Y2036, now, Y2036)
    assert row["clock_offset_ms"] == skew // timedelta(milliseconds=1)
    event = await core.conn.fetchrow(
        "SELECT observed_at, event_at FROM device_events WHERE device_id = $1", exit_gate
    )
    assert (event["observed_at"], event["event_at"]) == (Y2036, now)
    [anomaly] = await open_anomalies(core, AnomalyKind.DEVICE_CLOCK_SKEW)
    assert anomaly["device_id"] == exit_gate
    assert anomaly["details"]["offset_ms"] == skew // timedelta(milliseconds=1)


async def test_a_v1_exit_dated_2036_without_sent_at_is_taken_as_observed_when_it_arrived(
    core: Core,
) -> None:
    entered = core.clock.now()
    await core.handle(core.passage("in1", "赣B12345"))
    core.clock.advance(minutes(65))
    now = core.clock.now()
    out = await core.handle(core.passage("out1", "赣B12345", at=Y2036))
    fee = await fee_of(core, entered, now)
    assert command_of(out)["display"] == f"赣B12345 停车1小时05分 应缴{yuan(fee)}元 已离场后付"
    await core.persist()
    [view] = await sessions.list_for_plate(core.conn, "赣B12345")
    assert (view.fee_fen, view.exit_at) == (fee, now)
    [anomaly] = await open_anomalies(core, AnomalyKind.DEVICE_CLOCK_SKEW)
    assert anomaly["device_id"] == core.gates[f"{DEMO}/out1"]
    assert anomaly["details"]["corrected_to"] == now.isoformat()
    assert anomaly["details"]["offset_ms"] is None


async def test_an_entry_clock_ahead_of_the_exit_does_not_make_the_stay_free(core: Core) -> None:
    entered = core.clock.now()
    ahead = entered + timedelta(hours=3)  # the entry camera's clock runs 3 hours on
    await core.handle(core.passage("in1", "赣B12345", at=ahead, sent_at=ahead))
    core.clock.advance(minutes(65))
    now = core.clock.now()
    out = await core.handle(core.passage("out1", "赣B12345", sent_at=now))
    fee = await fee_of(core, entered, now)
    assert fee > 0
    assert command_of(out)["display"] == f"赣B12345 停车1小时05分 应缴{yuan(fee)}元 已离场后付"
    await core.persist()
    [view] = await sessions.list_for_plate(core.conn, "赣B12345")
    assert (view.fee_fen, view.entry_at, view.exit_at) == (fee, entered, now)


async def test_a_v1_entry_clock_ahead_of_the_exit_does_not_make_the_stay_free(core: Core) -> None:
    entered = core.clock.now()
    await core.handle(core.passage("in1", "赣B12345", at=entered + timedelta(hours=3)))
    core.clock.advance(minutes(65))
    await core.handle(core.passage("out1", "赣B12345"))
    await core.persist()
    [view] = await sessions.list_for_plate(core.conn, "赣B12345")
    assert view.entry_at == entered
    assert view.fee_fen == await fee_of(core, entered, core.clock.now()) > 0


async def test_one_skew_anomaly_per_device_until_its_clock_is_right_again(core: Core) -> None:
    gate = core.gates[f"{DEMO}/in1"]
    behind = timedelta(minutes=-10)
    for n in range(3):
        now = core.clock.now()
        await core.handle(core.passage("in1", f"赣B1000{n}", at=now + behind, sent_at=now + behind))
        core.clock.advance(timedelta(seconds=30))
    await core.persist()
    [anomaly] = await open_anomalies(core, AnomalyKind.DEVICE_CLOCK_SKEW)
    assert anomaly["device_id"] == gate
    assert anomaly["details"]["offset_ms"] == -600_000
    [health] = [
        d for d in await devices.list_devices(core.conn, lot_id=DEMO) if d.device_id == gate
    ]
    assert health.clock is not None
    assert (health.clock.offset_ms, health.clock.skewed) == (-600_000, True)
    assert health.clock.open_anomaly is not None
    # NTP is back: once most of the recent samples are right, so is the clock.
    for n in range(4):
        now = core.clock.now()
        await core.handle(core.passage("in1", f"赣B2000{n}", sent_at=now))
        core.clock.advance(timedelta(seconds=30))
    await core.persist()
    assert await open_anomalies(core, AnomalyKind.DEVICE_CLOCK_SKEW) == []
    resolved = await core.conn.fetchval(
        "SELECT count(*) FROM anomalies WHERE kind = 'device_clock_skew' AND status = 'resolved'"
    )
    assert resolved == 1
    [health] = [
        d for d in await devices.list_devices(core.conn, lot_id=DEMO) if d.device_id == gate
    ]
    assert health.clock is not None
    assert (health.clock.offset_ms, health.clock.skewed, health.clock.open_anomaly) == (
        0,
        False,
        None,
    )


async def test_a_skewed_sensor_reading_is_stored_with_its_corrected_time(core: Core) -> None:
    now = core.clock.now()
    year_1970 = datetime(1970, 1, 1, 0, 5, tzinfo=UTC)  # a clock reset by a power loss
    await core.handle(core.space(True, at=year_1970, sent_at=year_1970))
    await core.persist()
    row = await core.conn.fetchrow(
        "SELECT observed_at, event_at FROM space_events WHERE device_id = $1", core.sensor
    )
    assert (row["observed_at"], row["event_at"]) == (year_1970, now)
    assert (
        await core.conn.fetchval(
            "SELECT observed_at FROM space_states WHERE device_id = $1", core.sensor
        )
        == now
    )
    [anomaly] = await open_anomalies(core, AnomalyKind.DEVICE_CLOCK_SKEW)
    assert anomaly["device_id"] == core.sensor


async def test_an_event_observed_before_the_devices_previous_one_is_flagged(core: Core) -> None:
    gate = core.gates[f"{DEMO}/in1"]
    now = core.clock.now()
    await core.handle(core.passage("in1", "赣B10001", seq=1, at=now))
    await core.handle(core.passage("in1", "赣B10002", seq=2, at=now - minutes(20)))
    await core.persist()
    [went_back] = await open_anomalies(core, AnomalyKind.CLOCK_WENT_BACK)
    assert went_back["device_id"] == gate
    assert (went_back["details"]["seq"], went_back["details"]["previous_seq"]) == (2, 1)
    # a gap filled late is checked against the event after it too: 4 is stored (and
    # fine against 2), then 3 arrives observed after it
    await core.handle(core.passage("in1", "赣B10004", seq=4, at=now - minutes(19)))
    await core.persist()
    flagged = [a["details"]["seq"] for a in await open_anomalies(core, AnomalyKind.CLOCK_WENT_BACK)]
    assert flagged == [2]
    await core.handle(core.passage("in1", "赣B10003", seq=3, at=now - minutes(5)))
    await core.persist()
    flagged = [a["details"]["seq"] for a in await open_anomalies(core, AnomalyKind.CLOCK_WENT_BACK)]
    assert sorted(flagged) == [2, 4]


async def test_a_stay_past_the_lots_review_limit_is_billed_but_never_shown_as_owed(
    core: Core,
) -> None:
    entered = core.clock.now() - timedelta(days=8)  # a v1 entry from a camera's outbox
    await core.handle(core.passage("in1", "赣B12345", at=entered))
    out = await core.handle(core.passage("out1", "赣B12345"))
    display = str(command_of(out)["display"])
    assert display == "赣B12345 停车192小时00分 费用待核实 一路顺风"
    assert "应缴" not in display
    await core.persist()
    [view] = await sessions.list_for_plate(core.conn, "赣B12345")
    fee = await fee_of(core, entered, core.clock.now())
    assert view.fee_fen == fee > 0
    assert AnomalyKind.FEE_REVIEW in view.flags
    assert (
        await core.conn.fetchval("SELECT amount_fen FROM bills WHERE session_id = $1", view.id)
        == fee
    )
    [review] = await open_anomalies(core, AnomalyKind.FEE_REVIEW)
    assert review["session_id"] == view.id
    assert (review["details"]["review"], review["details"]["fee_fen"]) == ("long_stay", fee)


async def test_a_fee_above_the_lots_review_ceiling_waits_for_review(core: Core) -> None:
    await core.conn.execute("UPDATE lots SET review_fee_ceiling_fen = 100 WHERE id = $1", DEMO)
    core.ingest.directory = await ingest.load_directory(core.conn)
    entered = core.clock.now()
    await core.handle(core.passage("in1", "赣B12345"))
    core.clock.advance(timedelta(hours=3))
    fee = await fee_of(core, entered, core.clock.now())
    assert fee > 100
    out = await core.handle(core.passage("out1", "赣B12345"))
    assert command_of(out)["display"] == "赣B12345 停车3小时00分 费用待核实 一路顺风"
    await core.persist()
    [review] = await open_anomalies(core, AnomalyKind.FEE_REVIEW)
    assert review["details"]["review"] == "high_fee"
