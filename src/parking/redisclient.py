"""One way to make a Redis client: the stack's single server, or its Cluster.

``PARKING_REDIS_CLUSTER=1`` (``Settings.redis_cluster``) makes every process talk
to a Redis Cluster through redis-py's `RedisCluster`: it answers the same
commands as `redis.asyncio.Redis`, routing each by its key's hash slot
(the occupancy core's keys carry one tag per shard, ``occupancy/keys.py``), sends
``FUNCTION LOAD`` to every master, groups pipelines by node, follows MOVED
replies and finds the new master after a failover. So the code stays typed
against ``redis.asyncio.Redis`` and takes either; the few places that reach
below the command API (the packed `occupancy.store.Batch`, the API's shared
line in `parking.redisline`) ask `cluster_of` and route by slot themselves.
"""

from __future__ import annotations

import random
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException


class ClusterUnavailable(RedisConnectionError):
    """The cluster cannot serve a slot now (a master died and its replica is not
    promoted yet, the client's slot map is being rebuilt): a `RedisError` like any
    lost connection, so every caller's retry treats it as Redis being away.
    redis-py raises these as `RedisClusterException`, outside `RedisError`."""


class _Pipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as error:
            raise ClusterUnavailable(str(error)) from error


class _Cluster(RedisCluster):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as error:
            raise ClusterUnavailable(str(error)) from error

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _Pipeline(self, transaction)  # type: ignore[abstract]


def connect(url: str, *, cluster: bool, **options: Any) -> aioredis.Redis:
    """A client of ``url``: with ``cluster``, of the cluster that node belongs to."""
    if cluster:
        # The cluster client retries a command itself after asking the cluster who
        # serves the slot now; what it cannot serve comes out as ClusterUnavailable.
        return cast(aioredis.Redis, _Cluster.from_url(url, **options))
    return aioredis.Redis.from_url(url, **options)


def cluster_of(redis: object) -> RedisCluster | None:
    """The cluster client behind ``redis``, or None for a single server."""
    return redis if isinstance(redis, RedisCluster) else None


def own_connection(redis: aioredis.Redis) -> Any:
    """A new connection outside the client's pool (for a subscription): to the server,
    or to one of the cluster's masters (a PUBLISH on any node reaches every node's
    subscribers, so any one will do; a later call may pick another)."""
    cluster = cluster_of(redis)
    if cluster is None:
        return redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    node = random.choice(cluster.get_primaries())
    return node.connection_class(**node.connection_kwargs)
