"""Delivery through process and server faults: matrix rows M1, M2, M4, M5 and R4.

Every test ends with the matrix's invariants: each (device, seq) sent is stored
exactly once, Redis occupancy equals PostgreSQL, nothing is left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

from pipekit import (
    Pipeline,
    Proc,
    check_invariants,
    eventually,
    make_fleet,
    mosquitto,
    settle,
)

from parking.config import read_secrets
from parking.stack import binaries
from parking.stack.servers import Redis, _pid_alive

#: Long enough that devices never re-publish during the test: what arrives
#: came from the broker's persistent session, not from a device's outbox.
NO_REPUBLISH = 3600.0


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output (paho or Python may add others)."""
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and "event" in event:
                out.append(event)
    return out


async def connected(pipe: Pipeline, name: str, times: int = 1) -> None:
    await pipe.subscribed(name, times)


async def stored(pipe: Pipeline) -> int:
    return int(await pipe.fetchval("SELECT count(*) FROM device_events"))  # type: ignore[arg-type]


async def test_m2_events_sent_while_the_gateway_is_down_arrive_after_its_restart(
    pipeline: Pipeline,
) -> None:
    fleet = await make_fleet(pipeline, gates=4, sensors=4, republish_after=NO_REPUBLISH)
    gateway = pipeline.gateway().start()
    pipeline.persister().start()
    await connected(pipeline, "gateway-1")
    assert gateway.stop() == 0
    fleet.start()
    try:
        await asyncio.to_thread(fleet.send, 1000)
        await asyncio.sleep(1.0)
        assert await stored(pipeline) == 0
        gateway.start()
        await settle(pipeline, fleet)
        assert sum(d.republished for d in fleet.devices) == 0
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()


async def test_m1_a_gateway_killed_between_redis_and_the_ack_is_redelivered_and_counted_once(
    pipeline: Pipeline,
) -> None:
    fleet = await make_fleet(pipeline, gates=4, sensors=4, republish_after=NO_REPUBLISH)
    gateway = pipeline.gateway().start(PARKING_GATEWAY_CRASH_AFTER="300")
    pipeline.persister().start()
    await connected(pipeline, "gateway-1")
    fleet.start()
    try:
        await asyncio.to_thread(fleet.send, 1000)
        await asyncio.to_thread(gateway.wait, 30)
        assert gateway.popen is not None
        assert gateway.popen.returncode == -signal.SIGKILL
        assert "crash_hook" in gateway.log()
        before = gateway.log()
        crashed = [e for e in log_events(before) if e["event"] == "crash_hook"]
        assert len(crashed) == 1
        assert crashed[0]["applied"] > 0
        gateway.start()
        await settle(pipeline, fleet)

        # The batch applied before the kill came again and was recognised, all of
        # it (the kill may have come after the last event was in Redis, so the
        # stored count alone does not wait for the redelivery). More may come
        # again (PUBACKs of the batch before, not yet written at the kill), never
        # more than the gateway had handled: no device re-publishes here.
        def recognised() -> int:
            after = gateway.log().split("===== start 2 =====")[1]
            return sum(
                e["count"] for e in log_events(after) if e["event"] == "duplicates_recognised"
            )

        async def redelivered() -> bool:
            return recognised() >= crashed[0]["applied"]

        await eventually(redelivered, within=30, what="the unacked batch's redelivery")
        await asyncio.sleep(0.5)
        assert crashed[0]["applied"] <= recognised() <= crashed[0]["handled"]
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()


async def _two_gateways(pipeline: Pipeline) -> Proc:
    """``gateway-1`` and ``gateway-2`` on the share group, both subscribed; the first."""
    first = pipeline.gateway("gateway-1").start()
    pipeline.gateway("gateway-2").start()
    await connected(pipeline, "gateway-1")
    await connected(pipeline, "gateway-2")
    return first


async def test_m5_when_one_of_two_shared_gateways_dies_nothing_is_lost(
    pipeline: Pipeline,
) -> None:
    fleet = await make_fleet(pipeline, gates=6, sensors=6, republish_after=3.0)
    first = await _two_gateways(pipeline)
    pipeline.persister().start()
    fleet.start()
    try:
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 3000, rate=1500))
        await asyncio.sleep(0.8)
        first.kill()
        await sender
        # The survivor takes the rest; what was in flight to the dead one comes
        # back through the devices' outboxes.
        await settle(pipeline, fleet)
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()


async def test_m5_two_gateways_and_two_persisters_lose_nothing_when_one_of_each_is_killed(
    pipeline: Pipeline,
) -> None:
    """More than one of everything under load: a gateway and a persister killed while
    devices publish; the others take the rest, nothing lost, and each lot's order
    holds (every session's exit after its entry, each space at its newest report)."""
    fleet = await make_fleet(pipeline, gates=6, sensors=6, republish_after=3.0)
    first = await _two_gateways(pipeline)
    reclaim = {"PARKING_PERSISTER_RECLAIM_IDLE_MS": "1000"}
    doomed = pipeline.persister("persister-1", **reclaim).start()
    pipeline.persister("persister-2", **reclaim).start()
    fleet.start()
    try:
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 3000, rate=1500))
        await asyncio.sleep(0.8)
        first.kill()
        await asyncio.sleep(0.4)
        doomed.kill()
        await sender
        await settle(pipeline, fleet)
        await check_invariants(pipeline, fleet)
        assert (
            await pipeline.fetchval("SELECT count(*) FROM sessions WHERE exit_at < entry_at") == 0
        )
        sensors = {d.device_id: d.seq for d in fleet.devices if "/spaces/" in d.topic}
        newest = dict(
            await pipeline.conn.fetch(
                "SELECT device_id, seq FROM space_states WHERE device_id = ANY($1::text[])",
                list(sensors),
            )
        )
        assert newest == sensors
    finally:
        fleet.stop()


async def test_m5_a_dead_gateways_session_stops_taking_a_share_of_the_passages(
    pipeline: Pipeline,
) -> None:
    # Mosquitto keeps an offline persistent session in the shared subscription's
    # round robin: until the dead gateway's session expires, every other
    # passage is queued for it. No device re-publishes here, so what went to
    # the dead session would never arrive.
    expiry = 2
    fleet = await make_fleet(pipeline, gates=4, sensors=2, republish_after=NO_REPUBLISH)
    first = pipeline.gateway("gateway-1", PARKING_GATEWAY_SESSION_EXPIRY=str(expiry)).start()
    pipeline.gateway("gateway-2", PARKING_GATEWAY_SESSION_EXPIRY=str(expiry)).start()
    pipeline.persister().start()
    await connected(pipeline, "gateway-1")
    await connected(pipeline, "gateway-2")
    first.kill()
    # Mosquitto looks at expired sessions about once a second.
    await asyncio.sleep(expiry + 2.5)
    fleet.start()
    try:
        await asyncio.to_thread(fleet.send, 300)
        await settle(pipeline, fleet, within=30.0)
        assert sum(d.republished for d in fleet.devices) == 0
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()


async def test_m4_a_graceful_broker_restart_loses_nothing(pipeline: Pipeline) -> None:
    fleet = await make_fleet(pipeline, gates=4, sensors=4, republish_after=3.0)
    pipeline.gateway().start()
    pipeline.persister().start()
    await connected(pipeline, "gateway-1")
    fleet.start()
    broker = mosquitto(pipeline.settings)
    try:
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 2000, rate=2000))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.down)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(broker.up, pipeline.settings.mqtt_password)
        await sender
        await settle(pipeline, fleet)
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()
        await asyncio.to_thread(broker.up, pipeline.settings.mqtt_password)


async def test_r4_redis_killed_and_restarted_the_gateway_waits_and_loses_nothing(
    pipeline: Pipeline,
) -> None:
    fleet = await make_fleet(pipeline, gates=4, sensors=4, republish_after=NO_REPUBLISH)
    gateway = pipeline.gateway().start()
    pipeline.persister().start()
    await connected(pipeline, "gateway-1")
    fleet.start()
    server = Redis(pipeline.settings, binaries.ensure(log=lambda _: None), lambda _: None)
    secrets = read_secrets(pipeline.settings.stack_dir)
    assert secrets is not None
    password = secrets.redis
    try:
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 2000, rate=2000))
        await asyncio.sleep(0.4)
        pid = _pid_alive(server.pid_file)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(1.5)
        # The daemonised server may linger as a zombie (nobody reaps it in a
        # container), which `up` would take for a running server.
        server.pid_file.unlink(missing_ok=True)
        await asyncio.to_thread(server.up, password)
        # This test's own client still holds connections to the killed server.
        await pipeline.redis.connection_pool.disconnect()
        await sender
        await settle(pipeline, fleet)
        assert gateway.alive()
        assert "batch_retry" in gateway.log()
        await check_invariants(pipeline, fleet)
    finally:
        fleet.stop()
        if _pid_alive(server.pid_file) is None:
            await asyncio.to_thread(server.up, password)
