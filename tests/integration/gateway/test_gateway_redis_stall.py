"""Matrix R6: Redis stalls for 5 s (``DEBUG SLEEP 5``) while devices publish.

Everything waits on it, nothing fails: the gateway holds its batch (its Redis
deadline is 10 s) and acks nothing to the broker, so no watermark moves and the
devices keep their outboxes (the backpressure); the persister's reads wait too.
When Redis answers again every event is stored once.
"""

from __future__ import annotations

import asyncio
import time

import redis
from pipekit import Pipeline, check_invariants, settle, under_traffic

from parking.config import Settings

STALL_S = 5


def _stall(settings: Settings) -> float:
    """``DEBUG SLEEP`` on a connection of its own; the seconds Redis was away."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=STALL_S * 4)
    try:
        started = time.monotonic()
        client.execute_command("DEBUG", "SLEEP", STALL_S)
        return time.monotonic() - started
    finally:
        client.close()


async def test_r6_a_redis_stalled_for_5_s_holds_the_acks_and_loses_nothing(
    pipeline: Pipeline,
) -> None:
    fleet, gateway, persister = await under_traffic(pipeline)
    try:
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 1500, rate=300))
        await asyncio.sleep(0.5)
        stall = asyncio.create_task(asyncio.to_thread(_stall, pipeline.settings))
        await asyncio.sleep(STALL_S / 2)
        # Mid-stall: what the devices sent since it began is not confirmed to them.
        assert not stall.done()
        assert fleet.unconfirmed > 0
        assert await stall >= STALL_S - 0.5
        await sender
        await settle(pipeline, fleet)
        await check_invariants(pipeline, fleet)
        assert gateway.alive()
        assert persister.alive()
    finally:
        fleet.stop()
