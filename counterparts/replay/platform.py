"""What the replay reads of the platform while it runs, and before it starts.

Only reads: the seq each device is at (so the replay's events come after
everything the platform has), what the run's lots hold, which lots another
simulator is driving right now, and progress figures (applied and stored
watermarks in the live core, stream backlogs, Redis memory, the CPU of the
platform's processes, found by their command line in /proc).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from counterparts.replay.truth import Before
from parking.occupancy import keys


async def busy_lots(redis: aioredis.Redis, device_lots: dict[str, str]) -> set[str]:
    """Lots with a device online now (its retained status says so: another simulator,
    or real hardware, is connected as it; a second connection would take it over)."""
    online = await device_marks(redis, device_lots, ("online",))
    return {device_lots[d] for d, (flag,) in online.items() if flag == 1}


async def device_marks(
    redis: aioredis.Redis, device_lots: dict[str, str], fields: Sequence[str]
) -> dict[str, list[int]]:
    """``fields`` of each device's hash in the live core (0 when absent)."""
    out: dict[str, list[int]] = {}
    devices = list(device_lots)
    for start in range(0, len(devices), 2000):
        chunk = devices[start : start + 2000]
        async with redis.pipeline(transaction=False) as pipe:
            for device in chunk:
                pipe.hmget(f"{keys.lot_tag(device_lots[device])}:dev:{device}", *fields)
            values = await pipe.execute()
        for device, row in zip(chunk, values, strict=True):
            out[device] = [int(v) if v is not None else 0 for v in row]
    return out


async def base_seqs(
    conn: asyncpg.Connection, redis: aioredis.Redis, device_lots: dict[str, str]
) -> dict[str, int]:
    """The highest seq the platform has of each device, stored or applied."""
    rows = await conn.fetch(
        "SELECT device_id, max(seq) AS seq FROM device_events WHERE device_id = ANY($1) "
        "GROUP BY device_id",
        list(device_lots),
    )
    base = {r["device_id"]: int(r["seq"]) for r in rows}
    marks = await device_marks(redis, device_lots, ("max", "wm"))
    return {d: max(base.get(d, 0), *marks.get(d, [0])) for d in device_lots}


async def before(
    conn: asyncpg.Connection, lots: Sequence[str], street_lots: Sequence[str]
) -> tuple[Before, dict[str, int]]:
    """Open sessions and space states of the run's lots before it starts, and each lot's
    count of open sessions (plated or not: all take a space)."""
    rows = await conn.fetch(
        "SELECT lot_id, plate, id FROM sessions WHERE status = 'open' AND lot_id = ANY($1)",
        list(lots),
    )
    open_in: dict[str, dict[str, str]] = {}
    count: dict[str, int] = {}
    for r in rows:
        count[r["lot_id"]] = count.get(r["lot_id"], 0) + 1
        if r["plate"] is not None:
            open_in.setdefault(r["lot_id"], {})[r["plate"]] = r["id"]
    spaces = {
        (r["lot_id"], r["space_id"]): bool(r["occupied"])
        for r in await conn.fetch(
            "SELECT lot_id, space_id, occupied FROM space_states WHERE lot_id = ANY($1)",
            list(street_lots),
        )
    }
    return Before(open_in_lots=open_in, spaces=spaces), count


async def plate_index(
    redis: aioredis.Redis, plates: Iterable[str]
) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """The live core's plate index for ``plates``: the open session each holds (lot,
    session id) and each one's mark (the latest entry or exit time it saw, ms)."""
    index: dict[str, tuple[str, str]] = {}
    marks: dict[str, int] = {}
    wanted = sorted(plates)
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start : start + 5000]
        async with redis.pipeline(transaction=False) as pipe:
            for plate in chunk:
                pipe.hmget(keys.plate(keys.plate_tag(plate), plate), "sid", "lot", "mark")
            rows = await pipe.execute()
        for plate, (sid, lot, mark) in zip(chunk, rows, strict=True):
            if sid is not None and lot is not None:
                index[plate] = (_text(lot), _text(sid))
            if mark is not None:
                marks[plate] = int(mark)
    return index, marks


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ------------------------------------------------------------------ while running


@dataclass
class PlatformNow:
    applied: int = 0
    stored: int = 0
    pending: int = 0
    stream_length: int = 0
    redis_bytes: int = 0
    #: process name -> CPU share of one core since the previous reading
    cpu: dict[str, float] = field(default_factory=dict)


async def pending_entries(redis: aioredis.Redis) -> tuple[int, int]:
    """(entries read but not acked, entries in the streams) over the shards."""
    pending = length = 0
    for shard in range(keys.LOT_SHARDS):
        stream = f"{keys.shard_tag(shard)}:events"
        try:
            summary = await redis.xpending(stream, keys.GROUP)
            pending += int(summary.get("pending") or 0)
            length += int(await redis.xlen(stream))
        except aioredis.ResponseError:
            continue
    return pending, length


async def pending_followups(redis: aioredis.Redis) -> int:
    total = 0
    for shard in range(keys.LOT_SHARDS):
        total += int(await redis.hlen(f"{keys.shard_tag(shard)}:out"))
    return total


class Processes:
    """CPU of the platform's processes on this machine, by their command line."""

    NAMES = ("gateway", "persister", "api", "sandbox-pay", "redis-server", "postgres", "mosquitto")

    def __init__(self, extra: dict[str, list[int]] | None = None) -> None:
        self._last: dict[int, float] = {}
        self._at = time.monotonic()
        self._extra = extra or {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def _find(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {name: [] for name in self.NAMES}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv if a]
            if not words:
                continue
            text = " ".join(words[:4])
            for name in self.NAMES:
                if (f"parking {name}" in text or f"-m parking {name}" in text
                        or words[0].endswith(name) or f"{name}:" in words[0]):  # fmt: skip
                    found[name].append(int(entry.name))
                    break
        found.update(self._extra)
        return found

    def _cpu(self, pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self._tick

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        span = max(1e-3, now - self._at)
        out: dict[str, float] = {}
        seen: dict[int, float] = {}
        for name, pids in self._find().items():
            share = 0.0
            for pid in pids:
                cpu = self._cpu(pid)
                if cpu is None:
                    continue
                seen[pid] = cpu
                share += (cpu - self._last.get(pid, cpu)) / span
            if pids:
                out[name] = share
        self._last, self._at = seen, now
        return out
