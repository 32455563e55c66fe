"""Ingest benchmark: a 100,000-event backlog drained through the whole pipeline, vs bare paho.

    uv run python bench/bench_ingest.py [--events 100000]

Runs against the stack of the environment (``PARKING_STACK_DIR`` and ports; the
test stack under ``make bench``), in a scratch database it creates and drops.

1. Two persistent MQTT sessions subscribe to every device topic: a bare paho
   subscriber that only acks (manual ack, like the gateway), and the gateway
   (``parking gateway``'s client id, shared subscription).
2. One paho publisher queues the backlog (half gate passages, entries then exits
   at 100 lanes of 50 lots, half space states of 100 sensors), waiting for every
   PUBACK and never more than 20,000 in flight (message ids are 16-bit).
3. The bare subscriber drains its copy: events/s from its connect to the last ack.
4. The pipeline drains its copy: ``parking persister`` is already running and
   idle, ``parking gateway`` starts; events/s from the gateway's MQTT connect to
   the moment PostgreSQL holds all events (device_events rows).
5. Scale with cores, in the same run: the database and core made afresh, the same
   backlog queued for two gateway sessions on the share group (the broker deals the
   messages between them), drained by two ``parking gateway`` processes and one
   persister; recorded against the one-gateway rate.
6. The core on the stack's Redis Cluster (``parking stack up --redis-cluster``, three
   masters): the database made afresh, the core rebuilt on the cluster, the backlog
   drained by one gateway and one persister with ``PARKING_REDIS_CLUSTER=1`` (batches
   routed by node, a WAIT for the replica per node group); recorded against the
   one-gateway rate on the single Redis.

Prints both rates and their ratio (goal: pipeline >= 0.5x bare and >= 10,000/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from results import Baseline, Results, sized

from parking import config, redisclient
from parking.db import migrate
from parking.devices import service as devices
from parking.devices.messages import Topics
from parking.occupancy import rebuild
from parking.seed import service as seeding
from parking.stack import service as stack

DB = "bench_ingest"
GATEWAY_ID = "bench-gateway"
BARE_ID = "bench-bare"
#: Its own share group: Mosquitto keeps routing a group's messages to offline
#: members' sessions, so a leftover bench session must never join the real one.
SHARE_GROUP = "bench-gateways"
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def _db_url(settings: config.Settings, name: str) -> str:
    # Scratch databases are created and migrated, so as the schema owner.
    return urlunsplit(urlsplit(settings.owner_database_url)._replace(path=f"/{name}"))


async def prepare(
    settings: config.Settings,
) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """Scratch database with the city, 100 gates and 100 sensors; Redis rebuilt from it."""
    admin = await asyncpg.connect(_db_url(settings, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DB}")
    finally:
        await admin.close()
    url = _db_url(settings, DB)
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        await seeding.seed(conn, city_seed=settings.city_seed, progress=lambda _: None)
        lanes = await conn.fetch(
            """SELECT lot_id, lane_id FROM lanes WHERE lane_id IN ('in1', 'out1')
               ORDER BY lot_id, lane_id LIMIT 100"""
        )
        spaces = await conn.fetch(
            """SELECT s.lot_id, s.space_id FROM spaces s JOIN lots l ON l.id = s.lot_id
               WHERE l.kind = 'on_street' ORDER BY s.lot_id, s.space_id LIMIT 100"""
        )
        gates = []
        for r in lanes:
            made = await devices.add_device(
                conn, lot_id=r["lot_id"], lane_id=r["lane_id"], broker=None
            )
            gates.append(
                (made.device_id, settings_topic(settings).passages(r["lot_id"], r["lane_id"]))
            )
        sensors = []
        for r in spaces:
            made = await devices.add_device(
                conn, lot_id=r["lot_id"], space_id=r["space_id"], broker=None
            )
            sensors.append(
                (made.device_id, settings_topic(settings).space_state(r["lot_id"], r["space_id"]))
            )
        redis = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
        try:
            await redis.flushall()
            report = await rebuild.rebuild(conn, redis, now=datetime.now(UTC), force=True)
            print(
                f"core rebuilt from PostgreSQL in {report.seconds:.2f} s "
                f"({report.lots} lots, {report.spaces} spaces)"
            )
        finally:
            await redis.aclose()
    finally:
        await conn.close()
    return url, gates, sensors


def settings_topic(settings: config.Settings) -> Topics:
    return Topics(settings.topic_prefix)


def backlog(
    n: int, gates: list[tuple[str, str]], sensors: list[tuple[str, str]]
) -> list[tuple[str, bytes]]:
    """Half passages (every entry's car leaves later), half space states."""
    seqs: dict[str, int] = {}
    out: list[tuple[str, bytes]] = []
    entries = [g for g in gates if g[1].endswith("/in1/passages")]
    exits = {g[1].replace("/in1/", "/out1/"): g for g in gates if g[1].endswith("/out1/passages")}
    passages = n // 2
    cars = passages // 2
    for i in range(n):
        at = (T0 + timedelta(milliseconds=20 * i)).isoformat()
        if i % 2 == 0 and i // 2 < passages:
            k = i // 2
            car = k % cars
            device, topic = entries[car % len(entries)]
            direction = "in"
            if k >= cars:
                device, topic = exits.get(topic.replace("/in1/", "/out1/"), (device, topic))
                direction = "out"
            body = {
                "direction": direction,
                "plate": f"赣B{car:05d}",
                "plate_color": "blue",
                "confidence": 0.96,
                "image_ref": f"{device}/{i}.jpg",
            }
        else:
            device, topic = sensors[i % len(sensors)]
            body = {"occupied": (i // len(sensors)) % 2 == 0, "battery_pct": 80}
        seqs[device] = seqs.get(device, 0) + 1
        payload = {"device_id": device, "seq": seqs[device], "observed_at": at, **body}
        out.append((topic, json.dumps(payload, ensure_ascii=False).encode()))
    return out


def _client(settings: config.Settings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    return client


def _session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    return props


def drop_session(settings: config.Settings, client_id: str) -> None:
    """Connect with a clean start and leave: the broker forgets the session and its queue."""
    client = _client(settings, client_id)
    client.connect(settings.mqtt_host, settings.mqtt_platform_port, clean_start=True)
    client.disconnect()


def register_session(settings: config.Settings, client_id: str, filters: list[str]) -> None:
    """Connect with a fresh persistent session, subscribe, leave: the broker now queues for it."""
    done = threading.Event()
    client = _client(settings, client_id)
    client.on_subscribe = lambda *_: done.set()
    client.connect(
        settings.mqtt_host,
        settings.mqtt_platform_port,
        clean_start=True,
        properties=_session_properties(),
    )
    client.loop_start()
    client.subscribe([(f, 1) for f in filters])
    assert done.wait(10), f"{client_id} did not subscribe"
    client.disconnect()
    client.loop_stop()


def publish(settings: config.Settings, messages: list[tuple[str, bytes]]) -> float:
    acked = 0
    lock = threading.Condition()

    def on_publish(*_: object) -> None:
        nonlocal acked
        with lock:
            acked += 1
            lock.notify_all()

    client = _client(settings, "bench-publisher")
    client.max_inflight_messages_set(100)
    client.on_publish = on_publish
    client.connect(settings.mqtt_host, settings.mqtt_platform_port)
    client.loop_start()
    started = time.perf_counter()
    for n, (topic, payload) in enumerate(messages, start=1):
        client.publish(topic, payload, qos=1)
        if n - acked > 20_000:  # paho's message ids are 16-bit
            with lock:
                lock.wait_for(lambda sent=n: sent - acked <= 10_000, timeout=60)  # type: ignore[misc]
    with lock:
        lock.wait_for(lambda: acked >= len(messages), timeout=300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    assert acked >= len(messages), f"only {acked} of {len(messages)} acknowledged by the broker"
    return elapsed


def drain_bare(settings: config.Settings, total: int) -> float:
    """The bare paho subscriber: receive and ack, nothing else."""
    got = 0
    finished = threading.Event()
    client = _client(settings, BARE_ID, manual_ack=True)

    def on_message(c: mqtt.Client, _: object, message: mqtt.MQTTMessage) -> None:
        nonlocal got
        c.ack(message.mid, message.qos)
        got += 1
        if got >= total:
            finished.set()

    client.on_message = on_message
    started = time.perf_counter()
    client.connect(
        settings.mqtt_host,
        settings.mqtt_platform_port,
        clean_start=False,
        properties=_session_properties(),
    )
    client.loop_start()
    ok = finished.wait(600)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    assert ok, f"bare subscriber got {got} of {total}"
    return elapsed


def _spawn(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def gateway_ids(n: int) -> list[str]:
    """The client ids of ``n`` gateways on the bench's share group."""
    return [GATEWAY_ID if i == 0 else f"{GATEWAY_ID}-{i + 1}" for i in range(n)]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


def stack_cpu(settings: config.Settings, procs: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the named processes and of the stack's servers (PostgreSQL
    with every backend, Redis, Mosquitto)."""
    out = {name: cpu_s(pid) for name, pid in procs.items()}
    stack_dir = Path(settings.stack_dir)
    for name, pidfile in (
        ("redis", stack_dir / "redis" / "redis.pid"),
        ("mosquitto", stack_dir / "mosquitto" / "mosquitto.pid"),
        ("postgresql", stack_dir / "postgres" / "data" / "postmaster.pid"),
    ):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[name] = cpu_s(pid)
        if name == "postgresql":
            out[name] += sum(cpu_s(child) for child in _children(pid))
    return out


async def _stored(conn: asyncpg.Connection, total: int) -> int:
    """How many events are stored, cheaply while far from ``total``: the table's insert
    count from the statistics (up to a second behind), an exact count near the end (a
    count(*) every 50 ms over the whole drain took PostgreSQL CPU from the pipeline)."""
    inserted = await conn.fetchval(
        "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'device_events'"
    )
    if inserted is not None and inserted < total * 0.9:
        return int(inserted)
    return int(await conn.fetchval("SELECT count(*) FROM device_events"))


#: the tables a day of events fills (their partitions counted with them)
GROWING = ("device_events", "passages", "space_events", "sessions", "bills", "ledger_postings",
           "ledger_transactions")  # fmt: skip


async def table_bytes(url: str) -> dict[str, int]:
    """On-disk bytes (heap, indexes, TOAST) of each table in ``GROWING``, partitions
    included."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT t.name, coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS bytes
                 FROM unnest($1::text[]) AS t(name)
                 JOIN pg_class p ON p.relname = t.name
                 JOIN pg_class c ON c.oid = p.oid
                   OR c.oid IN (SELECT relid FROM pg_partition_tree(p.oid))
                GROUP BY t.name""",
            list(GROWING),
        )
    finally:
        await conn.close()
    return {r["name"]: int(r["bytes"]) for r in rows}


async def drain_pipeline(
    settings: config.Settings,
    url: str,
    total: int,
    logs: Path,
    *,
    gateways: int = 1,
    cpu: dict[str, float] | None = None,
    cluster: bool = False,
) -> tuple[float, float]:
    """The pipeline drains the backlog queued for ``gateways`` sessions on the share group:
    seconds from the first gateway's MQTT connect, and from its process start, to the last
    event stored. ``cpu`` receives each process's CPU seconds over the same span."""
    env = {
        **os.environ,
        "PARKING_DATABASE_URL": url,
        "PARKING_LOG_FORMAT": "json",
        "PARKING_LOG_LEVEL": "info",
        "PARKING_REDIS_CLUSTER": "1" if cluster else "",
    }
    me = [sys.executable, "-m", "parking"]
    gateway = [*me, "gateway", "--share-group", SHARE_GROUP, "--client-id"]
    gateway_logs = [logs / f"{client_id}.log" for client_id in gateway_ids(gateways)]
    procs: list[subprocess.Popen[bytes]] = []
    with (logs / "persister.log").open("wb") as plog:
        persister = _spawn([*me, "persister"], env, plog)
        procs.append(persister)
        conn = await asyncpg.connect(url)
        try:
            await asyncio.sleep(1.5)  # the persister is up and idle
            started = time.perf_counter()
            for client_id, path in zip(gateway_ids(gateways), gateway_logs, strict=True):
                with path.open("wb") as glog:
                    procs.append(_spawn([*gateway, client_id], env, glog))
            connected_at = None
            named = {"persister": persister.pid} | {
                f"gateway {n + 1}": proc.pid for n, proc in enumerate(procs[1:])
            }
            cpu0: dict[str, float] = {}
            while True:
                if connected_at is None and any(
                    b"mqtt_connected" in path.read_bytes() for path in gateway_logs
                ):
                    connected_at = time.perf_counter()
                    cpu0 = stack_cpu(settings, named)
                n = await _stored(conn, total)
                if n >= total:
                    break
                if time.perf_counter() - started > 900:
                    raise SystemExit(f"pipeline stored only {n} of {total} in 900 s")
                await asyncio.sleep(0.05)
            done = time.perf_counter()
            if cpu is not None:
                cpu1 = stack_cpu(settings, named)
                cpu.update({name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1})
        finally:
            await conn.close()
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(timeout=30)
    assert connected_at is not None
    return done - connected_at, done - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=sized(100_000, 2_000))
    args = parser.parse_args()
    stack.up(config.load(), log=lambda _: None, redis_cluster=True)
    settings = config.load()
    logs = Path(settings.stack_dir) / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"preparing: city, 100 gates, 100 sensors in database {DB}")
    url, gates, sensors = await prepare(settings)
    topics = settings_topic(settings)
    register_session(settings, BARE_ID, topics.subscriptions(None))
    register_session(settings, GATEWAY_ID, topics.subscriptions(SHARE_GROUP))
    messages = backlog(args.events, gates, sensors)
    took = await asyncio.to_thread(publish, settings, messages)
    print(
        f"backlog: {len(messages)} events queued for both sessions in {took:.1f} s "
        f"({len(messages) / took:,.0f}/s, publisher waiting for PUBACKs)"
    )
    bare = await asyncio.to_thread(drain_bare, settings, len(messages))
    bare_rate = len(messages) / bare
    print(f"bare paho subscriber (manual ack only): {bare:.2f} s, {bare_rate:,.0f} events/s")
    cpu: dict[str, float] = {}
    pipe, wall = await drain_pipeline(settings, url, len(messages), logs, cpu=cpu)
    pipe_rate = len(messages) / pipe
    print(
        f"pipeline gateway -> Redis -> persister -> PostgreSQL: {pipe:.2f} s from the gateway's "
        f"connect to the last event stored ({wall:.2f} s with process start), "
        f"{pipe_rate:,.0f} events/s"
    )
    per_event = {name: seconds / len(messages) * 1e6 for name, seconds in cpu.items()}
    print(
        "CPU per event over the drain: "
        + ", ".join(f"{name} {us:.0f} us" for name, us in per_event.items())
        + f"; {sum(per_event.values()):.0f} us in all, {sum(cpu.values()) / pipe:.2f} of "
        f"{os.cpu_count()} cores busy"
    )
    grown = await table_bytes(url)
    per_stored = {name: size / len(messages) for name, size in grown.items()}
    print(
        "PostgreSQL bytes per event stored (tables with their indexes): "
        + ", ".join(f"{name} {size:.0f}" for name, size in per_stored.items())
        + f"; {sum(per_stored.values()):.0f} in all"
    )
    met = pipe_rate / bare_rate >= 0.5 and pipe_rate >= 10_000
    print(
        f"ratio pipeline / bare: {pipe_rate / bare_rate:.2f}x "
        f"(goal >= 0.5x and >= 10,000 events/s: {'met' if met else 'NOT met'})"
    )
    results = Results("ingest")
    base = results.baseline(
        "bare paho subscriber, ack only (baseline)", bare_rate, "events/s", seconds=bare
    )
    results.row(
        "gateway -> Redis -> persister -> PostgreSQL",
        pipe_rate,
        "events/s",
        against=base,
        goal=">= 0.5x and >= 10,000 events/s",
        met=met,
        events=len(messages),
        seconds=pipe,
        seconds_with_process_start=wall,
        cpu_us_per_event=per_event,
        cores_busy=sum(cpu.values()) / pipe,
        pg_bytes_per_event=per_stored,
    )
    # Scale with cores: the same backlog, a fresh database and core, two gateways on the
    # share group (the broker deals the messages between their sessions) and one persister.
    drop_session(settings, BARE_ID)
    url, _, _ = await prepare(settings)
    for client_id in gateway_ids(2):
        register_session(settings, client_id, topics.subscriptions(SHARE_GROUP))
    took = await asyncio.to_thread(publish, settings, messages)
    print(f"backlog queued again for two gateways in {took:.1f} s")
    two, two_wall = await drain_pipeline(settings, url, len(messages), logs, gateways=2)
    two_rate = len(messages) / two
    print(
        f"pipeline with two gateways: {two:.2f} s, {two_rate:,.0f} events/s, "
        f"{two_rate / pipe_rate:.2f}x one gateway, {two_rate / bare_rate:.2f}x bare"
    )
    results.row(
        "two gateways on the share group -> Redis -> persister -> PostgreSQL",
        two_rate,
        "events/s",
        against=Baseline(
            case="gateway -> Redis -> persister -> PostgreSQL (one gateway)",
            value=pipe_rate,
            unit="events/s",
        ),
        events=len(messages),
        seconds=two,
        seconds_with_process_start=two_wall,
        ratio_to_bare=two_rate / bare_rate,
    )
    # The core on the Redis Cluster: one gateway, one persister, the same backlog.
    on_cluster = config.load({**os.environ, "PARKING_REDIS_CLUSTER": "1"})
    url, _, _ = await prepare(on_cluster)
    for client_id in gateway_ids(2)[1:]:
        drop_session(settings, client_id)  # the one gateway's session alone in the group
    register_session(settings, GATEWAY_ID, topics.subscriptions(SHARE_GROUP))
    took = await asyncio.to_thread(publish, settings, messages)
    print(f"backlog queued again for the gateway on the Redis Cluster in {took:.1f} s")
    clustered, clustered_wall = await drain_pipeline(
        settings, url, len(messages), logs, cluster=True
    )
    clustered_rate = len(messages) / clustered
    print(
        f"pipeline on the Redis Cluster (3 masters): {clustered:.2f} s, "
        f"{clustered_rate:,.0f} events/s, {clustered_rate / pipe_rate:.2f}x the single Redis, "
        f"{clustered_rate / bare_rate:.2f}x bare"
    )
    results.row(
        "gateway -> Redis Cluster (3 masters, WAIT per node) -> persister -> PostgreSQL",
        clustered_rate,
        "events/s",
        against=Baseline(
            case="gateway -> Redis -> persister -> PostgreSQL (single Redis)",
            value=pipe_rate,
            unit="events/s",
        ),
        events=len(messages),
        seconds=clustered,
        seconds_with_process_start=clustered_wall,
        ratio_to_bare=clustered_rate / bare_rate,
    )
    results.write()
    for client_id in (BARE_ID, *gateway_ids(2)):
        drop_session(settings, client_id)
    admin = await asyncpg.connect(_db_url(settings, "postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
