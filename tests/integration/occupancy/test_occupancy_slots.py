"""Every Redis function call touches keys of one slot only (Redis Cluster), checked for real.

The core runs on a one-node Redis Cluster (all 16384 slots) while MONITOR
records every command, including those each function runs inside. For each
FCALL, the keys its inner commands touched must all be in one slot, asked of
the cluster node itself with CLUSTER KEYSLOT.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from corekit import DEMO, make_core, minutes

from parking.occupancy import plate_flags
from parking.stack.binaries import find


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[int]:
    server = find("redis-server")
    assert server is not None
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(server),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(tmp_path),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            # the bus port defaults to port + 10000, out of range for high ports
            "--cluster-port",
            str(_free_port()),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(
                ["redis-cli", "-p", str(port), "CLUSTER", "ADDSLOTSRANGE", "0", "16383"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.stdout.strip() == "OK" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        while (
            "cluster_state:ok"
            not in subprocess.run(
                ["redis-cli", "-p", str(port), "CLUSTER", "INFO"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        ):
            assert time.monotonic() < deadline, "one-node cluster did not come up"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Monitor:
    """``redis-cli MONITOR`` into a file, from start until ``stop``."""

    def __init__(self, port: int, path: Path) -> None:
        self.path = path
        self._out = path.open("w")
        self._proc = subprocess.Popen(["redis-cli", "-p", str(port), "MONITOR"], stdout=self._out)
        time.sleep(0.3)

    def stop(self) -> str:
        time.sleep(0.3)
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._out.close()
        return self.path.read_text()


@pytest.fixture
def monitor(cluster_node: int, tmp_path: Path) -> Iterator[Monitor]:
    watcher = Monitor(cluster_node, tmp_path / "monitor.log")
    try:
        yield watcher
    finally:
        watcher.stop()


@pytest.fixture
async def cluster_redis(cluster_node: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=cluster_node)
    try:
        yield client
    finally:
        await client.aclose()


_LINE = re.compile(r"^\d+\.\d+ \[\d+ (?P<who>[^\]]+)\] (?P<args>.*)$")


def _calls(monitor_log: str) -> list[tuple[list[str], list[str]]]:
    """(FCALL argv, first arguments of the commands it ran) per function call."""
    calls: list[tuple[list[str], list[str]]] = []
    for line in monitor_log.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        argv = shlex.split(match["args"])
        if not argv:
            continue
        if match["who"] == "lua":
            if calls:
                calls[-1][1].append(argv[1] if len(argv) > 1 else "")
        elif argv[0].lower() in ("fcall", "fcall_ro"):
            calls.append((argv, []))
    return calls


async def test_every_function_call_touches_keys_of_one_slot(
    city_db: asyncpg.Connection, cluster_redis: aioredis.Redis, monitor: Monitor
) -> None:
    other = await city_db.fetchval(
        "SELECT id FROM lots WHERE kind = 'gated' AND id <> $1 ORDER BY id LIMIT 1", DEMO
    )
    core = await make_core(city_db, cluster_redis, [(DEMO, "in1"), (DEMO, "out1"), (other, "in1")])
    # Every kind of call: entries, a supersede elsewhere, an exit, sensors, a
    # dead letter, a status, an ack, re-sends, silence, flags.
    await core.handle(core.passage("in1", "赣B12345"), core.passage("in1", "赣B54321"))
    await core.handle(core.passage("in1", "赣B12345", lot=other))
    core.clock.advance(minutes(30))
    await core.handle(core.passage("out1", "赣B54321"), core.space(True), core.space(False))
    bad = core.passage("in1", "赣B1")
    await core.handle(type(bad)(bad.topic, b'{"device_id": 1}', bad.received_at))
    status = msgspec.json.encode(
        {"device_id": core.sensor, "online": False, "at": core.clock.now().isoformat()}
    )
    await core.handle(
        type(bad)(core.topics.status(core.sensor), status, core.clock.now()),
        type(bad)(
            core.topics.command_ack(DEMO, "in1"),
            msgspec.json.encode(
                {"command_id": "c-x", "result": "done", "at": core.clock.now().isoformat()}
            ),
            core.clock.now(),
        ),
    )
    core.clock.advance(minutes(2))
    await core.ingest.resend_due(core.clock.now())
    await core.ingest.report_silent(core.clock.now(), silent_after=minutes(1))
    await plate_flags.set_blacklisted(cluster_redis, "赣B77777", "test")
    await core.ingest.sync_lots(list(core.ingest.directory.lots.values())[:20])
    await core.ingest.finish_stale_followups(core.clock.now(), older_than=minutes(0))
    calls = _calls(monitor.stop())
    names = {argv[1] for argv, _ in calls}
    assert {
        "occ_passage",
        "occ_space",
        "occ_dead",
        "occ_status",
        "occ_ack",
        "occ_due",
        "occ_supersede",
        "occ_silence",
        "occ_lot",
        "plate_read",
        "plate_claim",
        "plate_release",
        "plate_flag",
    } <= names
    slot_cache: dict[str, int] = {}

    async def slot(key: str) -> int:
        # MONITOR escapes non-ASCII bytes; the slot only depends on the {tag}.
        if key not in slot_cache:
            slot_cache[key] = int(await cluster_redis.execute_command("CLUSTER", "KEYSLOT", key))
        return slot_cache[key]

    for argv, touched in calls:
        numkeys = int(argv[2])
        declared = argv[3 : 3 + numkeys]
        slots = {await slot(k) for k in [*declared, *touched]}
        assert len(slots) == 1, f"{argv[1]} touched slots {slots}: {declared} {touched}"
        assert set(touched) <= set(declared), f"{argv[1]} touched undeclared keys"
