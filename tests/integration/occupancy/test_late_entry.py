"""An entry that reaches the platform after its car's exit (the entry camera's connection
dropped and its outbox kept the entry while the exit lane's went through): it completes
the exit without entry, priced from the entry; it opens nothing, counts nothing and
sends no command. Real Redis and PostgreSQL, driven through ``Ingest`` (no MQTT)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from corekit import DEMO, Core, minutes

from parking.occupancy import keys, store
from parking.occupancy import persist as core_persist
from parking.occupancy import plan as planning
from parking.pricing import Pricer

PLATE = "赣B7L001"


async def open_count(core: Core) -> int:
    return int((await store.lot_counts(core.redis, DEMO)).get("sessions", "0"))


def commands(report: object) -> list[dict[str, object]]:
    return [
        dict(msgspec.json.decode(p.payload))
        for p in report.publishes  # type: ignore[attr-defined]
        if p.topic.endswith("/commands")
    ]


async def stay(core: Core, plate: str) -> dict[str, object]:
    rows = await core.conn.fetch(
        """SELECT id, status, entry_at, exit_at, fee_fen, tariff_id, pricing_reason, flags,
                  entry_device_id, entry_seq, exit_device_id, exit_seq
           FROM sessions WHERE plate = $1""",
        plate,
    )
    assert len(rows) == 1, [dict(r) for r in rows]
    return dict(rows[0])


async def bills_of(core: Core, session_id: object) -> list[tuple[int, str]]:
    rows = await core.conn.fetch(
        "SELECT amount_fen, status FROM bills WHERE session_id = $1 AND kind = 'stay'",
        session_id,
    )
    return [(r["amount_fen"], r["status"]) for r in rows]


async def anomalies(core: Core, plate: str) -> list[tuple[str, str]]:
    rows = await core.conn.fetch(
        "SELECT kind, status FROM anomalies WHERE plate = $1 ORDER BY kind", plate
    )
    return [(r["kind"], r["status"]) for r in rows]


async def price(core: Core, plate: str, entry: datetime, exit: datetime) -> tuple[int, str]:
    priced = (await Pricer.load(core.conn)).price(lot_id=DEMO, plate=plate, entry=entry, exit=exit)
    assert priced.fee_fen > 0  # the case worth showing: a stay that owes money
    return priced.fee_fen, str(priced.tariff_id)


async def check_completed(core: Core, plate: str, entry_at: datetime, exit_at: datetime) -> None:
    fee, tariff = await price(core, plate, entry_at, exit_at)
    row = await stay(core, plate)
    assert (row["status"], row["entry_at"], row["exit_at"]) == ("closed", entry_at, exit_at)
    assert (row["fee_fen"], row["tariff_id"]) == (fee, tariff)
    assert row["pricing_reason"] != "no_entry"
    assert {"late_entry", "exit_without_entry"} <= set(row["flags"])  # type: ignore[arg-type]
    assert row["entry_device_id"] == core.gates[f"{DEMO}/in1"]
    assert row["exit_device_id"] == core.gates[f"{DEMO}/out1"]
    assert await bills_of(core, row["id"]) == [(fee, "open")]
    assert await anomalies(core, plate) == [("exit_without_entry", "resolved")]
    assert await open_count(core) == 0
    assert await core.redis.hget(keys.gone(keys.lot_tag(DEMO), DEMO), plate) is None


async def test_an_entry_arriving_after_its_exit_completes_the_stay(core: Core) -> None:
    entry_at = core.clock.now()
    late = core.passage("in1", PLATE, at=entry_at)  # kept in the entry gate's outbox
    core.clock.advance(minutes(95))
    exit_at = core.clock.now()
    out = await core.handle(core.passage("out1", PLATE))
    assert [c["action"] for c in commands(out)] == ["open"]  # leave first, as always
    await core.persist()
    assert (await stay(core, PLATE))["entry_at"] is None
    core.clock.advance(minutes(3))
    report = await core.handle(late)
    assert report.outcomes["late_entry"] == 1
    assert commands(report) == []  # the car has gone: no barrier opens for it
    persisted = await core.persist()
    assert persisted.poison == []
    assert len(persisted.bills_opened) == 1
    await check_completed(core, PLATE, entry_at, exit_at)
    # Delivered again (the outbox re-publishes): applied once.
    again = await core.handle(late)
    assert (again.duplicates, again.applied) == (1, 0)
    assert (await core.persist()).bills_opened == []
    await check_completed(core, PLATE, entry_at, exit_at)


async def test_exit_and_its_late_entry_in_one_batch(core: Core) -> None:
    entry_at = core.clock.now()
    late = core.passage("in1", PLATE, at=entry_at)
    core.clock.advance(minutes(70))
    exit_at = core.clock.now()
    report = await core.handle(core.passage("out1", PLATE), late)
    assert (report.outcomes["no_entry"], report.outcomes["late_entry"]) == (1, 1)
    assert [c["action"] for c in commands(report)] == ["open"]
    await core.persist()
    await check_completed(core, PLATE, entry_at, exit_at)


async def test_the_late_entry_stored_before_its_exit_gives_the_same_stay(core: Core) -> None:
    """Two persisters of one stream: the entry's batch may commit before the exit's."""
    entry_at = core.clock.now()
    late = core.passage("in1", PLATE, at=entry_at)
    core.clock.advance(minutes(130))
    exit_at = core.clock.now()
    await core.handle(core.passage("out1", PLATE))
    await core.handle(late)
    stream = keys.events(keys.lot_tag(DEMO))
    entries = [
        planning.StreamEntry(stream, entry_id.decode(), fields)
        for entry_id, fields in await core.redis.xrange(stream)
    ]
    await core.redis.delete(stream)
    [exit_entry] = [e for e in entries if e.get("o") == "no_entry"]
    [entry_entry] = [e for e in entries if e.get("o") == "late_entry"]
    first = await core_persist.persist(core.conn, [entry_entry], core.clock.now())
    assert len(first.bills_opened) == 1
    second = await core_persist.persist(core.conn, [exit_entry], core.clock.now())
    assert second.poison == []
    await check_completed(core, PLATE, entry_at, exit_at)


async def test_an_entry_after_the_exit_is_a_new_stay(core: Core) -> None:
    await core.handle(core.passage("out1", PLATE))
    core.clock.advance(minutes(10))
    report = await core.handle(core.passage("in1", PLATE))
    assert report.outcomes["opened"] == 1
    assert [c["action"] for c in commands(report)] == ["open"]
    assert await open_count(core) == 1
    await core.persist()
    rows = await core.conn.fetch(
        "SELECT status, entry_at IS NULL AS no_entry FROM sessions WHERE plate = $1 ORDER BY 1",
        PLATE,
    )
    assert [(r["status"], r["no_entry"]) for r in rows] == [("closed", True), ("open", False)]


async def test_an_exit_older_than_the_window_is_not_completed(core: Core) -> None:
    entry_at = core.clock.now()
    late = core.passage("in1", PLATE, at=entry_at)
    core.clock.advance(core.ingest.tuning.late_entry_within + minutes(1))
    await core.handle(core.passage("out1", PLATE))
    report = await core.handle(late)
    assert report.outcomes["late_entry"] == 0
    assert report.outcomes["opened"] == 1


async def test_a_rebuilt_core_still_completes_the_exit(core: Core) -> None:
    entry_at = core.clock.now()
    late = core.passage("in1", PLATE, at=entry_at)
    core.clock.advance(minutes(45))
    exit_at = core.clock.now()
    await core.handle(core.passage("out1", PLATE))
    await core.persist()
    await core.rebuild()
    report = await core.handle(late)
    assert report.outcomes["late_entry"] == 1
    await core.persist()
    await check_completed(core, PLATE, entry_at, exit_at)


async def test_two_reads_of_one_car_delivered_out_of_order_leave_the_later_stay(
    core: Core,
) -> None:
    """The entry camera read the car twice (seq n, n+1) and the broker delivered n+1
    first: the later read's stay stands, the earlier one is superseded by it at once,
    and the exit closes the later one (the full-city replay found the opposite)."""
    first_at = core.clock.now()
    first = core.passage("in1", PLATE, at=first_at)
    core.clock.advance(minutes(0) + (minutes(1) / 40))  # 1.5 s later
    second_at = core.clock.now()
    second = core.passage("in1", PLATE, at=second_at)
    assert (await core.handle(second)).outcomes["opened"] == 1
    report = await core.handle(first)
    assert report.outcomes["older_entry"] == 1
    assert await open_count(core) == 1
    core.clock.advance(minutes(50))
    exit_at = core.clock.now()
    out = await core.handle(core.passage("out1", PLATE))
    assert out.outcomes["closed"] == 1
    await core.persist()
    rows = await core.conn.fetch(
        """SELECT status, entry_at, exit_at, superseded_by, id FROM sessions WHERE plate = $1
           ORDER BY entry_at""",
        PLATE,
    )
    assert [(r["status"], r["entry_at"], r["exit_at"]) for r in rows] == [
        ("superseded", first_at, None),
        ("closed", second_at, exit_at),
    ]
    assert rows[0]["superseded_by"] == rows[1]["id"]
    assert await open_count(core) == 0
