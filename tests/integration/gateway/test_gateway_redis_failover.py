"""The occupancy core on a Redis Cluster: a master killed under load fails over.

The gateway, the persister and the devices run as for every fault test, but every
process talks to the stack's Redis Cluster (three masters, three replicas;
``PARKING_REDIS_CLUSTER=1``). While the fleet publishes, the master serving the
busiest lot's shard is killed with SIGKILL. For the seconds until the cluster
promotes its replica the gateway's batches for that shard fail and are retried
(nothing is acknowledged to the broker meanwhile); then they go to the new
master. What Redis's asynchronous replication could have lost is covered twice:
the gateway waits for the replica (``WAIT``) before it acknowledges a batch, and
an event the new master lacks anyway is re-published from its device's outbox
until the watermark (from PostgreSQL) covers it. The killed node comes back as a
replica. Every event sent is stored once, and Redis agrees with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pipekit import DEMO, Pipeline, check_invariants, open_pipeline, settle, under_traffic
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from parking import redisclient
from parking.config import Settings, read_secrets
from parking.occupancy import keys
from parking.stack import binaries
from parking.stack import cluster as stack_cluster


@pytest.fixture
async def cluster_pipeline(
    city_db_url: str, cluster_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    async with open_pipeline(
        city_db_url, cluster_client, tmp_path, PARKING_REDIS_CLUSTER="1"
    ) as pipe:
        yield pipe


def _nodes(settings: Settings) -> stack_cluster.RedisCluster:
    return stack_cluster.RedisCluster(settings, binaries.ensure(log=lambda _: None), lambda _: None)


async def _master_port_of(client: aioredis.Redis, slot: int) -> int:
    cluster = redisclient.cluster_of(client)
    assert isinstance(cluster, RedisCluster)
    await cluster.nodes_manager.initialize()
    return int(cluster.nodes_manager.get_node_from_slot(slot).port)


async def test_r7_a_master_killed_under_load_fails_over_and_nothing_acknowledged_is_lost(
    cluster_pipeline: Pipeline, cluster_settings: Settings
) -> None:
    pipe = cluster_pipeline
    nodes = _nodes(cluster_settings)
    secrets = read_secrets(cluster_settings.stack_dir)
    assert secrets is not None
    password = secrets.redis
    slot = key_slot(keys.lot_tag(DEMO).encode())
    victim = await _master_port_of(pipe.redis, slot)
    replica = nodes.replica_of(password, victim)
    assert replica is not None, "the busiest shard's master has no replica"
    fleet, gateway, persister = await under_traffic(pipe)
    try:
        sender = asyncio.create_task(asyncio.to_thread(fleet.send, 2000, rate=400))
        await asyncio.sleep(1.0)
        pid = nodes.pid(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # The replica takes over the slot (bounded wait, no timing asserted).
        deadline = time.monotonic() + 60
        while await _master_port_of(pipe.redis, slot) != replica:
            assert time.monotonic() < deadline, "the replica never took over"
            await asyncio.sleep(0.2)
        failover_s = time.monotonic() - killed_at
        await sender
        nodes.start_node(victim)
        await settle(pipe, fleet, within=180)
        await check_invariants(pipe, fleet)
        assert gateway.alive()
        assert persister.alive()
        # The gateway went on through the failover: it retried, it did not restart.
        assert "batch_retry" in gateway.log()
        republished = sum(d.republished for d in fleet.devices)
        print(f"failover in {failover_s:.1f} s; events re-published: {republished}")
    finally:
        fleet.stop()
        # The killed node is back as a replica: the next test finds six nodes.
        nodes.start_node(victim)
        deadline = time.monotonic() + 60
        while not nodes.running():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
