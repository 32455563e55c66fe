"""Persister faults: matrix rows R1 (killed after the commit, before XACK) and R3 (poison)."""

from __future__ import annotations

import asyncio
import signal

from pipekit import (
    Pipeline,
    check_invariants,
    eventually,
    make_fleet,
    pending_entries,
    settle,
)

from parking.occupancy import keys


async def test_r1_a_persister_killed_before_xack_has_its_entries_reclaimed_and_written_once(
    pipeline: Pipeline,
) -> None:
    fleet = await make_fleet(pipeline, gates=4, sensors=4, republish_after=3600.0)
    pipeline.gateway().start()
    first = pipeline.persister("persister-1").start(PARKING_PERSISTER_CRASH_AFTER="500")
    await pipeline.subscribed()
    fleet.start()
    try:
        await asyncio.to_thread(fleet.send, 1500)
        await asyncio.to_thread(first.wait, 60)
        assert first.popen is not None
        assert first.popen.returncode == -signal.SIGKILL
        assert await pending_entries(pipeline.redis) > 0
        # Another persister claims what the dead one read but never acknowledged.
        second = pipeline.persister("persister-2", PARKING_PERSISTER_RECLAIM_IDLE_MS="1000").start()
        await settle(pipeline, fleet)
        assert "reclaimed" in second.log()
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()


async def test_r3_a_poison_entry_is_dead_lettered_after_n_deliveries_and_the_stream_flows(
    pipeline: Pipeline,
) -> None:
    fleet = await make_fleet(pipeline, gates=2, sensors=2, republish_after=3600.0)
    pipeline.gateway().start()
    stream = keys.events(keys.all_lot_tags()[0])
    await pipeline.redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    poison_id = await pipeline.redis.xadd(stream, {"k": "passage", "ev": b"\xff not a record"})
    persister = pipeline.persister(
        PARKING_PERSISTER_RECLAIM_IDLE_MS="200", PARKING_PERSISTER_MAX_DELIVERIES="3"
    ).start()
    await pipeline.subscribed()
    fleet.start()
    try:
        await asyncio.to_thread(fleet.send, 300)

        async def dead() -> bool:
            return await pipeline.fetchval("SELECT count(*) FROM dead_letters") == 1

        await eventually(dead, what="the poison entry in the dead letters", within=60)
        rows = await pipeline.conn.fetch("SELECT source, reason FROM dead_letters")
        # every dead letter with its reason, so a second one says why it is there
        assert [r["source"] for r in rows] == [f"{stream}/{poison_id.decode()}"], [
            dict(r) for r in rows
        ]
        row = rows[0]
        assert row["reason"].startswith("poison stream entry after 3 deliveries")
        await settle(pipeline, fleet)
        assert persister.alive()
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()
