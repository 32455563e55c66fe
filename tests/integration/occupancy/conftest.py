"""Fixtures of the occupancy core tests (defined in corekit).

Every test of this suite runs twice: against the stack's single Redis and against
its Redis Cluster (three masters, three replicas), through the same client code
(`parking.redisclient`). On the cluster a function touching keys of two slots, a
packed batch sent to the wrong node or a pipeline across nodes fails for real
(reliability matrix R7).
"""

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from corekit import core
from kits import flushed_redis

from parking.config import Settings

__all__ = ["core", "redis_client"]


@pytest.fixture(params=["redis", "cluster"])
async def redis_client(
    request: pytest.FixtureRequest, settings: Settings
) -> AsyncIterator[aioredis.Redis]:
    on_cluster = request.param == "cluster"
    on = request.getfixturevalue("cluster_settings") if on_cluster else settings
    async with flushed_redis(on.redis_url, cluster=on_cluster) as client:
        yield client
