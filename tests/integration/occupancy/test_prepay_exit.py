"""Paying in the lot before the exit, as the exit lane and the persister see it
(the core driven through `Ingest`, real Redis and PostgreSQL, a fixed clock)."""

from __future__ import annotations

import msgspec
from corekit import DEMO, Core, minutes

from parking.bills import service as bills
from parking.bills.model import BillKind
from parking.occupancy import batch, plate_flags, store
from parking.pricing import Pricer

PLATE = "赣B7P001"


def display_of(report: batch.BatchReport) -> str:
    [command] = [p for p in report.publishes if p.topic.endswith("/commands")]
    return str(msgspec.json.decode(command.payload)["display"])


async def paid_in_the_lot(core: Core, entered_minutes_ago: int) -> tuple[str, int]:
    """The plate entered, stayed, and paid its fee so far in the lot; (session, fen)."""
    await core.handle(core.passage("in1", PLATE))
    await core.persist()
    core.clock.advance(minutes(entered_minutes_ago))
    sid = await core.conn.fetchval(
        "SELECT id FROM sessions WHERE plate = $1 AND status = 'open'", PLATE
    )
    entry = await core.conn.fetchval("SELECT entry_at FROM sessions WHERE id = $1", sid)
    priced = (await Pricer.load(core.conn)).price(
        lot_id=DEMO, plate=PLATE, entry=entry, exit=core.clock.now()
    )
    assert priced.fee_fen > 0
    assert priced.tariff_id
    assert priced.tariff_version
    now = core.clock.now()
    async with core.conn.transaction():
        bill = await bills.open_bill(
            core.conn,
            session_id=sid,
            lot_id=DEMO,
            plate=PLATE,
            account_id=None,
            amount_fen=priced.fee_fen,
            tariff_id=priced.tariff_id,
            tariff_version=priced.tariff_version,
            quote=b"{}",
            closed_at=now,
            now=now,
            kind=BillKind.PREPAY,
        )
        assert bill is not None
        await bills.mark_paid(
            core.conn,
            bill.id,
            provider="sandbox",
            payment_ref="o-prepay-1",
            amount_fen=bill.amount_fen,
            now=now,
            actor="test",
        )
    await plate_flags.refresh_prepaid(core.conn, core.redis, sid, now)
    return sid, priced.fee_fen


async def stay_bill(core: Core, sid: str) -> int | None:
    bill = await bills.by_session(core.conn, sid)
    return None if bill is None else bill.amount_fen


async def test_leaving_within_the_window_shows_paid_and_bills_nothing_more(core: Core) -> None:
    sid, paid = await paid_in_the_lot(core, entered_minutes_ago=180)
    core.clock.advance(minutes(10))

    out = await core.handle(core.passage("out1", PLATE))
    await core.persist()

    shown = display_of(out)
    assert "已缴" in shown, shown
    assert "一路顺风" in shown, shown
    assert f"{paid // 100}.{paid % 100:02d}" in display_of(out)
    assert await stay_bill(core, sid) is None
    fee = await core.conn.fetchval("SELECT fee_fen FROM sessions WHERE id = $1", sid)
    assert fee >= paid  # the session keeps the whole stay's fee; the bills what was owed


async def test_after_the_window_billing_resumes_for_the_rest(core: Core) -> None:
    sid, paid = await paid_in_the_lot(core, entered_minutes_ago=180)
    core.clock.advance(minutes(120))

    out = await core.handle(core.passage("out1", PLATE))
    await core.persist()

    fee = await core.conn.fetchval("SELECT fee_fen FROM sessions WHERE id = $1", sid)
    assert fee > paid
    assert await stay_bill(core, sid) == fee - paid
    assert "超时应缴" in display_of(out), display_of(out)
    owed = fee - paid
    assert f"{owed // 100}.{owed % 100:02d}" in display_of(out)


async def test_the_window_is_the_lots(core: Core) -> None:
    await core.conn.execute("UPDATE lots SET exit_window_minutes = 1 WHERE id = $1", DEMO)
    sid, paid = await paid_in_the_lot(core, entered_minutes_ago=180)
    core.clock.advance(minutes(10))

    await core.handle(core.passage("out1", PLATE))
    await core.persist()

    fee = await core.conn.fetchval("SELECT fee_fen FROM sessions WHERE id = $1", sid)
    assert await stay_bill(core, sid) == (fee - paid or None)


async def test_the_rebuild_restores_what_the_session_paid(core: Core) -> None:
    sid, paid = await paid_in_the_lot(core, entered_minutes_ago=180)
    before = await core.redis.get(store.keys.prepaid(DEMO, PLATE))

    await core.rebuild()

    assert before is not None
    assert await core.redis.get(store.keys.prepaid(DEMO, PLATE)) == before
    assert before.decode().startswith(f"{sid}|{paid}|")
