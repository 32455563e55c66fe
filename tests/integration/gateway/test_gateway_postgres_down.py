"""Matrix P1: PostgreSQL stops (immediately, a crash for its data) while cars leave.

The gates go on deciding from the core in Redis; what the gateway applied waits in
the applied-event streams while the persister retries; once PostgreSQL is back
(crash recovery) every event is written once and the invariants hold.
"""

from __future__ import annotations

import asyncio

import asyncpg
from pipekit import Pipeline, check_invariants, eventually, settle, under_traffic

from parking.config import read_secrets
from parking.stack import binaries
from parking.stack.servers import Postgres


async def test_p1_postgres_stopped_while_cars_leave_gates_decide_and_every_event_lands_once(
    pipeline: Pipeline,
) -> None:
    fleet, gateway, persister = await under_traffic(pipeline)
    server = Postgres(pipeline.settings, binaries.ensure(log=lambda _: None), lambda _: None)
    secrets = read_secrets(pipeline.settings.stack_dir)
    assert secrets is not None
    own = pipeline.conn
    try:
        await asyncio.to_thread(server.down, "immediate")
        assert not server.running()
        # Passages and readings keep coming; the gateway applies them to the core.
        await asyncio.to_thread(fleet.send, 600, rate=200)

        async def waiting() -> bool:
            return "postgres_unavailable" in persister.log()

        await eventually(waiting, what="the persister to wait for PostgreSQL", within=30)
        assert gateway.alive()
        await asyncio.to_thread(server.up, secrets.postgres, secrets.postgres_app)
        pipeline.conn = await asyncpg.connect(pipeline.db_url)
        await settle(pipeline, fleet, within=180.0)
        await check_invariants(pipeline, fleet)
        assert gateway.alive()
        assert persister.alive()
    finally:
        fleet.stop()
        if not server.running():
            await asyncio.to_thread(server.up, secrets.postgres, secrets.postgres_app)
        if pipeline.conn is not own:
            await pipeline.conn.close()
            pipeline.conn = own
