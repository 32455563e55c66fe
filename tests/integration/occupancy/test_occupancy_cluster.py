"""What the cluster runs of the occupancy core, checked on the stack's Redis Cluster
(three masters): a packed batch spread over every master comes back in order, and
a call across two slots is refused there, so the occupancy suite's cluster runs
would catch one (matrix R7)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ClusterCrossSlotError

from parking import redisclient
from parking.occupancy import keys, store


async def test_a_batch_over_every_master_answers_in_the_order_it_was_queued(
    cluster_client: aioredis.Redis,
) -> None:
    cluster = redisclient.cluster_of(cluster_client)
    assert cluster is not None
    tags = keys.all_lot_tags()
    writes = store.Batch()
    for n, tag in enumerate(tags):
        writes.command("SET", f"{tag}:probe", str(n))
    assert await writes.execute(cluster_client) == [b"OK"] * len(tags)
    reads = store.Batch()
    for tag in reversed(tags):
        reads.command("GET", f"{tag}:probe")
    assert await reads.execute(cluster_client) == [
        str(n).encode() for n in reversed(range(len(tags)))
    ]
    serving = {
        cluster.nodes_manager.get_node_from_slot(cluster.keyslot(f"{tag}:probe")).name
        for tag in tags
    }
    assert len(serving) == 3  # the lot shards are spread over the three masters


async def test_a_function_call_across_two_slots_is_refused_by_the_cluster(
    cluster_client: aioredis.Redis,
) -> None:
    await store.load_library(cluster_client)
    tags = keys.all_lot_tags()
    other = next(t for t in tags[1:] if _slot(cluster_client, t) != _slot(cluster_client, tags[0]))
    # Routed by its first key, as every call; the node refuses the second slot.
    batch = store.Batch()
    batch.fcall("occ_lot", [keys.lot(tags[0], "X"), keys.lot(other, "X")], "10", "gated")
    [reply] = await batch.execute(cluster_client)
    assert isinstance(reply, ClusterCrossSlotError)  # Redis's CROSSSLOT reply


def _slot(client: aioredis.Redis, tag: str) -> int:
    cluster = redisclient.cluster_of(client)
    assert cluster is not None
    return int(cluster.keyslot(f"{tag}:x"))
