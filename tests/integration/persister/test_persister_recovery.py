"""Persister faults: matrix rows R1 (killed after the commit, before XACK), R2 (hung with
entries read and not acknowledged) and R3 (poison)."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis.asyncio as aioredis
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
        await settle(pipeline, fleet, within=180.0)
        assert "reclaimed" in second.log()
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()


async def _pending_of(pipeline: Pipeline, consumer: str) -> int:
    """Entries read by ``consumer`` and not acknowledged, over every lot shard's stream."""
    total = 0
    for tag in keys.all_lot_tags():
        stream = keys.events(tag)
        if not await pipeline.redis.exists(stream):
            continue
        try:
            held = await pipeline.redis.xpending_range(
                stream, keys.GROUP, min="-", max="+", count=10_000, consumername=consumer
            )
        except aioredis.ResponseError:
            continue  # no group on this stream yet: nothing read from it
        total += len(held)
    return total


async def _in_transaction(pipeline: Pipeline) -> bool:
    """Whether a session of the test's database (other than the test's own) sits idle
    inside a transaction: the hung persister's, holding the rows it inserted."""
    return bool(
        await pipeline.fetchval(
            """SELECT count(*) > 0 FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND state = 'idle in transaction'"""
        )
    )


@pytest.mark.parametrize("inside", [False, True], ids=["before-its-ack", "inside-its-transaction"])
async def test_r2_a_hung_persisters_entries_are_claimed_and_written_once_when_it_wakes(
    pipeline: Pipeline, inside: bool
) -> None:
    """Caught between reading entries and acknowledging them, or (the harder case)
    inside the transaction that writes them: its rows stay locked until PostgreSQL ends
    the idle transaction (``IDLE_IN_TRANSACTION_MS``), then the other persister's
    writes of the same entries go through."""
    fleet = await make_fleet(pipeline, gates=4, sensors=4, republish_after=3600.0)
    pipeline.gateway().start()
    first = pipeline.persister("persister-1").start()
    await pipeline.subscribed()
    fleet.start()
    try:
        sending = asyncio.create_task(asyncio.to_thread(fleet.send, 3000))
        # Hang it while it holds entries it read and has not acknowledged (tried
        # until caught so: between a read and its XACK is a few milliseconds).
        for _ in range(400):
            await asyncio.sleep(0.01)
            first.pause()
            await asyncio.sleep(0.03)
            if await _pending_of(pipeline, "persister-1") > 0 and (
                not inside or await _in_transaction(pipeline)
            ):
                break
            first.resume()
        held = await _pending_of(pipeline, "persister-1")
        assert held > 0, "persister-1 was never caught holding entries"
        if inside:
            assert await _in_transaction(pipeline), "never caught inside its transaction"
        await sending
        # Another persister takes the stream over, the hung one's entries included.
        second = pipeline.persister("persister-2", PARKING_PERSISTER_RECLAIM_IDLE_MS="1000").start()
        await settle(pipeline, fleet, within=180.0)
        assert "reclaimed" in second.log()
        assert await _pending_of(pipeline, "persister-1") == 0
        # The hung one wakes in the middle of what it was doing: what it had read is
        # stored already, and it must neither write it again nor stop.
        first.resume()
        await asyncio.to_thread(fleet.send, 300)
        await settle(pipeline, fleet)
        assert first.alive()
        assert second.alive()
        await check_invariants(pipeline, fleet)
    finally:
        first.resume()
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
            return bool(
                await pipeline.fetchval(
                    "SELECT count(*) FROM dead_letters WHERE source = $1",
                    f"{stream}/{poison_id.decode()}",
                )
            )

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
