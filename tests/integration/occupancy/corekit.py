"""The occupancy core tests' kit: the seeded city, gates and a sensor, a loaded core."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from parking.clock import FixedClock
from parking.devices import service as devices
from parking.devices.messages import Topics
from parking.occupancy import batch, keys, rebuild
from parking.occupancy import ingest as core_ingest
from parking.occupancy import persist as core_persist
from parking.occupancy import plan as planning
from parking.occupancy.batch import Inbound
from parking.occupancy.ingest import Ingest
from parking.occupancy.model import Directory
from parking.pricing import Pricer

DEMO = "GZ-DEMO-01"
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


@dataclass
class Core:
    conn: asyncpg.Connection
    redis: aioredis.Redis
    ingest: Ingest
    clock: FixedClock
    topics: Topics
    gates: dict[str, str]
    sensor: str
    seqs: dict[str, int]

    def passage(
        self,
        lane: str,
        plate: str | None,
        *,
        at: datetime | None = None,
        seq: int | None = None,
        lot: str = DEMO,
        confidence: float | None = 0.97,
        device: str | None = None,
        sent_at: datetime | None = None,
    ) -> Inbound:
        """A passage observed ``at`` (default now); ``sent_at`` makes it a v1.1 copy."""
        device = device or self.gates[f"{lot}/{lane}"]
        if seq is None:
            seq = self.seqs.get(device, 0) + 1
        self.seqs[device] = max(self.seqs.get(device, 0), seq)
        body = {
            "device_id": device,
            "seq": seq,
            "observed_at": (at or self.clock.now()).isoformat(),
            "direction": "in" if lane.startswith("in") else "out",
            "plate": plate,
            "plate_color": "blue",
            "confidence": confidence,
            "image_ref": f"{lot}/{lane}/{seq}.jpg",
        }
        if sent_at is not None:
            body["sent_at"] = sent_at.isoformat()
        return Inbound(self.topics.passages(lot, lane), msgspec.json.encode(body), self.clock.now())

    def space(
        self,
        occupied: bool,
        *,
        seq: int | None = None,
        at: datetime | None = None,
        sent_at: datetime | None = None,
    ) -> Inbound:
        if seq is None:
            seq = self.seqs.get(self.sensor, 0) + 1
        self.seqs[self.sensor] = max(self.seqs.get(self.sensor, 0), seq)
        body = {
            "device_id": self.sensor,
            "seq": seq,
            "observed_at": (at or self.clock.now()).isoformat(),
            "occupied": occupied,
            "battery_pct": 80,
        }
        if sent_at is not None:
            body["sent_at"] = sent_at.isoformat()
        return Inbound(
            self.topics.space_state(DEMO, "P0001"), msgspec.json.encode(body), self.clock.now()
        )

    async def handle(self, *messages: Inbound) -> batch.BatchReport:
        return await self.ingest.handle(list(messages), self.clock.now())

    async def persist(self) -> core_persist.Persisted:
        """Write everything the streams hold (as the persister would) and trim them."""
        entries: list[planning.StreamEntry] = []
        for tag in keys.all_lot_tags():
            stream = keys.events(tag)
            for entry_id, fields in await self.redis.xrange(stream):
                entries.append(planning.StreamEntry(stream, entry_id.decode(), fields))
            await self.redis.delete(stream)
        return await core_persist.persist(self.conn, entries, self.clock.now())

    async def rebuild(self) -> rebuild.RebuildReport:
        return await rebuild.rebuild(self.conn, self.redis, now=self.clock.now(), force=True)


async def add_gate(conn: asyncpg.Connection, lot: str, lane: str) -> str:
    found = await conn.fetchval(
        "SELECT device_id FROM devices WHERE lot_id = $1 AND lane_id = $2 AND revoked_at IS NULL",
        lot,
        lane,
    )
    if found:
        return str(found)
    return (await devices.add_device(conn, lot_id=lot, lane_id=lane, broker=None)).device_id


async def make_core(
    conn: asyncpg.Connection, redis: aioredis.Redis, lanes: Sequence[tuple[str, str]]
) -> Core:
    gates = {f"{lot}/{lane}": await add_gate(conn, lot, lane) for lot, lane in lanes}
    sensor = (await devices.add_device(conn, lot_id=DEMO, space_id="P0001", broker=None)).device_id
    clock = FixedClock(T0)
    topics = Topics("parking/v1")
    await rebuild.rebuild(conn, redis, now=clock.now(), force=True)

    async def refresh() -> Directory:
        return await core_ingest.load_directory(conn)

    ingest = Ingest(
        redis,
        topics=topics,
        directory=await core_ingest.load_directory(conn),
        pricer=await Pricer.load(conn),
        refresh_directory=refresh,
    )
    return Core(conn, redis, ingest, clock, topics, gates, sensor, {})


@pytest.fixture
async def core(city_db: asyncpg.Connection, redis_client: aioredis.Redis) -> Core:
    other = await city_db.fetchval(
        "SELECT id FROM lots WHERE kind = 'gated' AND id <> $1 ORDER BY id LIMIT 1", DEMO
    )
    return await make_core(
        city_db, redis_client, [(DEMO, "in1"), (DEMO, "out1"), (other, "in1"), (other, "out1")]
    )


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)
