"""The occupancy core against the real Redis and PostgreSQL, driven through `Ingest` (no MQTT)."""

from __future__ import annotations

import random

import msgspec
import pytest
from corekit import DEMO, Core, minutes

from parking.occupancy import batch, ingest, keys, plate_flags, store
from parking.occupancy.model import CoreNotReady, PassWindow
from parking.pricing import Pricer
from parking.sessions import service as sessions


def command_of(report: batch.BatchReport) -> dict[str, object]:
    commands = [p for p in report.publishes if p.topic.endswith("/commands")]
    assert len(commands) == 1, report.publishes
    return dict(msgspec.json.decode(commands[0].payload))


async def open_count(core: Core, lot: str = DEMO) -> int:
    return int((await store.lot_counts(core.redis, lot)).get("sessions", "0"))


async def test_entry_opens_a_session_and_exit_closes_it_with_the_tariff_fee(core: Core) -> None:
    entry = await core.handle(core.passage("in1", "赣B12345"))
    assert command_of(entry)["action"] == "open"
    assert await open_count(core) == 1
    core.clock.advance(minutes(65))
    out = await core.handle(core.passage("out1", "赣B12345"))
    command = command_of(out)
    expected = (await Pricer.load(core.conn)).price(
        lot_id=DEMO, plate="赣B12345", entry=core.clock.now() - minutes(65), exit=core.clock.now()
    )
    yuan = f"{expected.fee_fen // 100}.{expected.fee_fen % 100:02d}"
    assert command["action"] == "open"
    assert command["display"] == f"赣B12345 停车1小时05分 应缴{yuan}元 已离场后付"
    assert await open_count(core) == 0
    persisted = await core.persist()
    assert persisted.poison == []
    [view] = await sessions.list_for_plate(core.conn, "赣B12345")
    assert (view.status, view.fee_fen, view.lot_id) == ("closed", expected.fee_fen, DEMO)
    assert view.tariff_id == expected.tariff_id
    assert view.tariff_version == expected.tariff_version
    quote = await core.conn.fetchval(
        "SELECT quote->>'total_fen' FROM sessions WHERE id = $1", view.id
    )
    assert int(quote) == expected.fee_fen


async def test_duplicates_and_out_of_order_delivery_are_applied_once(core: Core) -> None:
    plates = [f"赣B{n:05d}" for n in range(1, 21)]
    messages = [core.passage("in1", p) for p in plates]
    shuffled = messages + random.Random(7).sample(messages, len(messages))
    random.Random(8).shuffle(shuffled)
    report = await core.handle(*shuffled[:25])
    report2 = await core.handle(*shuffled[25:])
    assert report.applied + report2.applied == 20
    assert report.duplicates + report2.duplicates == 20
    assert await open_count(core) == 20
    await core.persist()
    stored = await core.conn.fetchval(
        "SELECT count(*) FROM device_events WHERE device_id = $1", core.gates[f"{DEMO}/in1"]
    )
    assert stored == 20
    wm = await core.conn.fetchval(
        "SELECT seq FROM device_watermarks WHERE device_id = $1", core.gates[f"{DEMO}/in1"]
    )
    assert wm == 20
    assert await core.conn.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'") == 20


async def test_a_seq_gap_is_reported_and_resolved_once_the_outbox_fills_it(core: Core) -> None:
    first = core.passage("in1", "赣B00001", seq=1)
    third = core.passage("in1", "赣B00003", seq=3)
    fourth = core.passage("in1", "赣B00004", seq=4)
    report = await core.handle(first, third, fourth)
    assert report.gaps == 1
    await core.persist()
    gap = await core.conn.fetchrow("SELECT status, details FROM anomalies WHERE kind = 'seq_gap'")
    assert gap is not None
    assert gap["status"] == "open"
    assert msgspec.json.decode(gap["details"]) == {"from": 2, "to": 2}
    device = core.gates[f"{DEMO}/in1"]
    assert (
        await core.conn.fetchval("SELECT seq FROM device_watermarks WHERE device_id = $1", device)
        == 1
    )
    await core.handle(core.passage("in1", "赣B00002", seq=2))
    persisted = await core.persist()
    assert persisted.watermarks[device][1] == 4
    assert (
        await core.conn.fetchval("SELECT status FROM anomalies WHERE kind = 'seq_gap'")
        == "resolved"
    )


async def test_entry_while_parked_elsewhere_supersedes_the_old_session(core: Core) -> None:
    other = next(k.split("/")[0] for k in core.gates if not k.startswith(DEMO))
    await core.handle(core.passage("in1", "赣C88888"))
    core.clock.advance(minutes(30))
    await core.handle(core.passage("in1", "赣C88888", lot=other))
    assert await open_count(core, DEMO) == 0
    assert await open_count(core, other) == 1
    entry = await store.plate_entry(core.redis, "赣C88888")
    assert entry["lot"] == other
    await core.persist()
    views = {v.lot_id: v for v in await sessions.list_for_plate(core.conn, "赣C88888")}
    assert views[DEMO].status == "superseded"
    assert views[other].status == "open"
    assert views[DEMO].superseded_by == views[other].id
    kind = await core.conn.fetchval(
        "SELECT kind FROM anomalies WHERE session_id = $1", views[DEMO].id
    )
    assert kind == "plate_elsewhere"


async def test_a_full_lot_holds_entries_but_lets_monthly_pass_holders_in(core: Core) -> None:
    await core.conn.execute("UPDATE lots SET capacity = 1 WHERE id = $1", DEMO)
    await core.rebuild()
    core.ingest.directory = await ingest.load_directory(core.conn)
    assert command_of(await core.handle(core.passage("in1", "赣B11111")))["action"] == "open"
    held = command_of(await core.handle(core.passage("in1", "赣B22222")))
    assert held["action"] == "hold"
    assert "车位已满" in str(held["display"])
    await plate_flags.set_pass(
        core.redis,
        "赣B33333",
        DEMO,
        PassWindow("mp-1", core.clock.now() - minutes(60), core.clock.now() + minutes(60)),
    )
    passed = command_of(await core.handle(core.passage("in1", "赣B33333")))
    assert passed["action"] == "open"
    assert "月卡" in str(passed["display"])
    assert await open_count(core) == 2


async def test_blacklisted_plates_and_old_arrears_are_held_with_a_pay_reference(core: Core) -> None:
    await plate_flags.set_blacklisted(core.redis, "赣B44444", "stolen")
    held = command_of(await core.handle(core.passage("in1", "赣B44444")))
    assert held["action"] == "hold"
    assert "禁止入场" in str(held["display"])
    await plate_flags.set_arrears_since(
        core.redis, "赣B55555", core.clock.now() - minutes(60 * 24 * 8)
    )
    arrears = command_of(await core.handle(core.passage("in1", "赣B55555")))
    assert arrears["action"] == "hold"
    assert "PAY:赣B55555" in str(arrears["display"])
    await plate_flags.set_arrears_since(core.redis, "赣B66666", core.clock.now() - minutes(60))
    recent = command_of(await core.handle(core.passage("in1", "赣B66666")))
    assert recent["action"] == "open"
    assert await open_count(core) == 1


async def test_unplated_cars_are_held_and_low_confidence_reads_go_to_review(core: Core) -> None:
    unplated = command_of(await core.handle(core.passage("in1", None)))
    assert unplated["action"] == "hold"
    assert "二维码" in str(unplated["display"])
    low = command_of(await core.handle(core.passage("in1", "赣B77777", confidence=0.41)))
    assert low["action"] == "open"
    await core.persist()
    rows = await core.conn.fetch("SELECT kind, image_ref FROM anomalies ORDER BY kind")
    assert [(r["kind"], r["image_ref"] is not None) for r in rows] == [
        ("low_confidence", True),
        ("unplated", True),
    ]


async def test_exit_without_entry_opens_and_is_recorded_for_review(core: Core) -> None:
    out = command_of(await core.handle(core.passage("out1", "赣B99999")))
    assert out["action"] == "open"
    assert "无入场记录" in str(out["display"])
    await core.persist()
    [view] = await sessions.list_for_plate(core.conn, "赣B99999")
    assert (view.status, view.fee_fen, view.entry_at) == ("closed", 0, None)
    assert "exit_without_entry" in view.flags
    assert (
        await core.conn.fetchval("SELECT count(*) FROM anomalies WHERE kind = 'exit_without_entry'")
        == 1
    )


async def test_a_flapping_sensor_is_reported_once(core: Core) -> None:
    reports = []
    for n in range(8):
        core.clock.advance(minutes(1))
        reports.append(await core.handle(core.space(n % 2 == 0)))
    assert sum(r.applied for r in reports) == 8
    await core.persist()
    assert (
        await core.conn.fetchval("SELECT count(*) FROM anomalies WHERE kind = 'sensor_flapping'")
        == 1
    )
    state = await core.conn.fetchrow("SELECT occupied, seq FROM space_states")
    assert state is not None
    assert (state["occupied"], state["seq"]) == (False, 8)
    counts = await store.lot_counts(core.redis, DEMO)
    assert counts["occupied"] == "0"


async def test_an_older_sensor_reading_does_not_overwrite_a_newer_one(core: Core) -> None:
    await core.handle(core.space(True, seq=2))
    report = await core.handle(core.space(False, seq=1))
    assert report.outcomes["space_older"] == 1
    spaces = await store.lot_spaces(core.redis, DEMO)
    assert spaces["P0001"].startswith("1|2|")


async def test_commands_are_resent_until_acked_and_expire_after_the_ttl(core: Core) -> None:
    entry = await core.handle(core.passage("in1", "赣B12121"))
    command = command_of(entry)
    assert (await core.ingest.resend_due(core.clock.now())).publishes == []
    core.clock.advance(minutes(0) + core.ingest.tuning.command_resend_after)
    again = (await core.ingest.resend_due(core.clock.now())).publishes
    assert [msgspec.json.decode(p.payload)["command_id"] for p in again] == [command["command_id"]]
    ack = msgspec.json.encode(
        {"command_id": command["command_id"], "result": "done", "at": core.clock.now().isoformat()}
    )
    await core.handle(batch.Inbound(core.topics.command_ack(DEMO, "in1"), ack, core.clock.now()))
    core.clock.advance(core.ingest.tuning.command_resend_after)
    assert (await core.ingest.resend_due(core.clock.now())).publishes == []
    # One that is never acked expires and is recorded.
    await core.handle(core.passage("in1", "赣B13131"))
    core.clock.advance(core.ingest.tuning.command_ttl + minutes(1))
    dropped = await core.ingest.resend_due(core.clock.now())
    assert (dropped.publishes, dict(dropped.dropped)) == ([], {"expired": 1})
    await core.persist()
    assert (
        await core.conn.fetchval("SELECT count(*) FROM anomalies WHERE kind = 'command_expired'")
        == 1
    )


async def test_rebuild_restores_occupancy_sessions_and_dedup_from_postgres(core: Core) -> None:
    for n in range(5):
        await core.handle(core.passage("in1", f"赣B2000{n}"))
    await core.handle(core.space(True))
    await core.handle(core.passage("out1", "赣B20000"))
    await core.persist()
    before = (
        await store.lot_counts(core.redis, DEMO),
        await store.lot_sessions(core.redis, DEMO),
        await store.plate_entry(core.redis, "赣B20001"),
    )
    device = core.gates[f"{DEMO}/in1"]
    seq = core.seqs[device]
    await core.redis.flushall()
    with pytest.raises(CoreNotReady):
        await core.handle(core.passage("in1", "赣B30000"))
    report = await core.rebuild()
    assert report.open_sessions == 4
    after = (
        await store.lot_counts(core.redis, DEMO),
        await store.lot_sessions(core.redis, DEMO),
        await store.plate_entry(core.redis, "赣B20001"),
    )
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert (after[2]["sid"], after[2]["lot"]) == (before[2]["sid"], before[2]["lot"])
    # Re-sent events are recognised as duplicates from PostgreSQL's records.
    dup = await core.handle(core.passage("in1", "赣B20004", seq=seq))
    assert dup.duplicates == 1
    assert dup.applied == 0
    # The duplicate is covered by the watermark: the device is told so.
    assert any(p.topic.endswith(f"/devices/{device}/watermark") for p in dup.publishes)


async def test_a_malformed_call_is_refused_before_anything_is_written(core: Core) -> None:
    tag = keys.lot_tag(DEMO)
    before = await core.redis.xlen(keys.events(tag))
    call = store.PassageCall(
        lot_id=DEMO,
        device_id=core.gates[f"{DEMO}/in1"],
        seq=0,
        now_ms=1,
        plate="赣B1",
        mode="open",
        session_id="s-1",
        at_ms=1,
        record=b"{}",
        command_id="",
        command_topic="",
        command_open=b"",
        command_hold=b"",
        command_expires_ms=0,
        command_resend_ms=0,
        command_stale_ms=0,
    )
    pipe = store.Batch()
    store.queue_passage(pipe, call)
    [reply] = await pipe.execute(core.redis)
    assert isinstance(reply, Exception)
    assert "BADARG" in str(reply)
    assert await core.redis.xlen(keys.events(tag)) == before
    assert await store.device_marks(core.redis, DEMO, call.device_id) == {}
