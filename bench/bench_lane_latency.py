"""Lane latency benchmark: passage published -> command received, under 1,000 events/s of load.

    uv run python bench/bench_lane_latency.py [--rate 1000] [--seconds 30]

Runs against the stack of the environment, in a scratch database it creates and drops.

1. The seeded city with its devices (as bench_core_memory.py), the core rebuilt
   from it; ``parking persister`` and ``parking gateway`` (own client id and
   share group) running as processes.
2. Background load, one paho publisher (platform credentials, QoS 1 like the
   devices), paced every 10 ms: ``--rate`` events/s, 80 % space states of the
   on-street sensors and 20 % passages (cars entering and, a few seconds later,
   leaving, priced) at the gates of 300 gated lots. A gate simulator
   subscribes to every lane's commands and acknowledges each (as gates do;
   unacknowledged commands would be re-sent every 3 s). Acks come on top.
3. Probe: every 50 ms an entry with a new plate at one of 20 other lots' entry
   gates; a subscriber on those lanes' commands topics notes when the
   ``open``/``hold`` command arrives. Latency = publish call -> command received.
4. Baseline in the same run, under the same load: 25 ms after each probe, the
   same probe client publishes (QoS 1) to a topic the platform does not
   consume and the same subscriber receives it: the broker round trip alone.

Prints p50/p95/p99/max of both, the ratio, CPU used per process over the
measurement window (from /proc), and the goal (p99 <= 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import pstats
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core_memory import create_city, drop_db
from bench_ingest import _client, cpu_s, drop_session
from results import Results, sized

from parking import config
from parking.devices.messages import Topics
from parking.occupancy import rebuild
from parking.stack import service as stack

DB = "bench_lane_latency"
GATEWAY_ID = "bench-lat-gateway"
SHARE_GROUP = "bench-lat"
GOAL_MS = 20.0
PROBE_LOTS = 20
LOAD_LOTS = 300


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Seqs:
    def __init__(self) -> None:
        self._seq: dict[str, int] = {}

    def next(self, device: str) -> int:
        self._seq[device] = self._seq.get(device, 0) + 1
        return self._seq[device]


def passage(device: str, seq: int, direction: str, plate: str) -> bytes:
    return json.dumps(
        {
            "device_id": device,
            "seq": seq,
            "observed_at": now_iso(),
            "direction": direction,
            "plate": plate,
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"{device}/{seq}.jpg",
        },
        ensure_ascii=False,
    ).encode()


class Load(threading.Thread):
    """Publishes ``rate`` device events/s until stopped."""

    def __init__(
        self,
        settings: config.Settings,
        topics: Topics,
        sensors: list[tuple[str, str, str]],
        lots: list[tuple[str, str, str, str, str]],
        rate: int,
    ) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.sent = 0
        self.late_ticks = 0
        self._topics = topics
        self._sensors = sensors
        self._lots = lots
        self._rate = rate
        self._seqs = Seqs()
        self._client = _client(settings, "bench-lat-load")
        self._client.max_inflight_messages_set(1000)
        self._client.connect(settings.mqtt_host, settings.mqtt_platform_port)
        self._client.loop_start()
        self._occupied: dict[str, bool] = {}
        #: cars inside: (lot index, plate, entered monotonic)
        self._inside: deque[tuple[int, str, float]] = deque()
        self._cars = 0

    def _one(self, i: int) -> None:
        topics = self._topics
        if i % 5 == 0:
            mono = time.monotonic()
            if self._inside and (mono - self._inside[0][2] > 3.0 or len(self._inside) > 2000):
                k, plate, _ = self._inside.popleft()
                lot, _in_lane, _in_dev, out_lane, out_dev = self._lots[k]
                topic = topics.passages(lot, out_lane)
                payload = passage(out_dev, self._seqs.next(out_dev), "out", plate)
            else:
                k = self._cars % len(self._lots)
                plate = f"粤L{self._cars % 100_000:05d}"
                self._cars += 1
                lot, in_lane, in_dev, _o, _d = self._lots[k]
                self._inside.append((k, plate, mono))
                topic = topics.passages(lot, in_lane)
                payload = passage(in_dev, self._seqs.next(in_dev), "in", plate)
        else:
            device, lot, space = self._sensors[random.randrange(len(self._sensors))]
            occupied = not self._occupied.get(device, False)
            self._occupied[device] = occupied
            topic = topics.space_state(lot, space)
            payload = json.dumps(
                {
                    "device_id": device,
                    "seq": self._seqs.next(device),
                    "observed_at": now_iso(),
                    "occupied": occupied,
                    "battery_pct": 80,
                }
            ).encode()
        self._client.publish(topic, payload, qos=1)
        self.sent += 1

    def run(self) -> None:
        tick = 0.01
        per_tick = self._rate * tick
        due = 0.0
        started = time.perf_counter()
        i = 0
        while not self.stop.is_set():
            due += per_tick
            while i < int(due):
                self._one(i)
                i += 1
            tick_no = int(due / per_tick)
            sleep = started + tick_no * tick - time.perf_counter()
            if sleep > 0:
                time.sleep(sleep)
            else:
                self.late_ticks += 1
        self._client.disconnect()
        self._client.loop_stop()


class GateSim:
    """Acknowledges every command, as the gates do."""

    def __init__(self, settings: config.Settings, topics: Topics) -> None:
        self.acked = 0
        self._topics = topics
        client = _client(settings, "bench-lat-gates")
        client.max_inflight_messages_set(1000)
        client.on_message = self._on_message
        self._ready = threading.Event()
        client.on_subscribe = lambda *_: self._ready.set()
        client.connect(settings.mqtt_host, settings.mqtt_platform_port)
        client.loop_start()
        client.subscribe(f"{topics.prefix}/lots/+/lanes/+/commands", qos=1)
        assert self._ready.wait(10)
        self._client = client

    def _on_message(self, client: mqtt.Client, _: object, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        lot, lane = parts[-4], parts[-2]
        body = json.loads(message.payload)
        ack = {"command_id": body["command_id"], "result": "done", "at": now_iso()}
        client.publish(self._topics.command_ack(lot, lane), json.dumps(ack).encode(), qos=1)
        self.acked += 1

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Probe:
    """Entries at the probe lanes, and the bare broker round trip, timed."""

    def __init__(
        self, settings: config.Settings, topics: Topics, gates: list[tuple[str, str, str]]
    ) -> None:
        self._topics = topics
        self._gates = gates
        self._seqs = Seqs()
        self.sent: dict[str, float] = {}
        self.lane: list[float] = []
        #: (seconds since the window started, latency ms) of each lane probe
        self.lane_at: list[tuple[float, float]] = []
        self.window_start = 0.0
        self.bare: list[float] = []
        self.actions: dict[str, int] = {}
        self.recording = False
        self._echo = f"{topics.prefix}/bench/echo"
        sub = _client(settings, "bench-lat-probe-sub")
        sub.on_message = self._on_message
        ready = threading.Event()
        sub.on_subscribe = lambda *_: ready.set()
        sub.connect(settings.mqtt_host, settings.mqtt_platform_port)
        sub.loop_start()
        sub.subscribe(
            [(topics.commands(lot, lane), 1) for lot, lane, _ in gates] + [(self._echo, 1)]
        )
        assert ready.wait(10)
        pub = _client(settings, "bench-lat-probe-pub")
        pub.connect(settings.mqtt_host, settings.mqtt_platform_port)
        pub.loop_start()
        self._sub, self._pub = sub, pub
        self._n = 0

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        arrived = time.perf_counter()
        if message.topic == self._echo:
            key = message.payload.decode()
            body = None
        else:
            body = json.loads(message.payload)
            key = body["command_id"]
        sent = self.sent.pop(key, None)
        if sent is None or not self.recording:
            return
        if body is None:
            self.bare.append((arrived - sent) * 1000)
        else:
            self.lane.append((arrived - sent) * 1000)
            self.lane_at.append((sent - self.window_start, (arrived - sent) * 1000))
            self.actions[body["action"]] = self.actions.get(body["action"], 0) + 1

    def entry(self) -> None:
        lot, lane, device = self._gates[self._n % len(self._gates)]
        seq = self._seqs.next(device)
        plate = f"粤P{self._n % 100_000:05d}"
        self._n += 1
        payload = passage(device, seq, "in", plate)
        self.sent[f"c-{device}-{seq}"] = time.perf_counter()
        self._pub.publish(self._topics.passages(lot, lane), payload, qos=1)

    def echo(self) -> None:
        key = f"echo-{self._n}"
        self.sent[key] = time.perf_counter()
        self._pub.publish(self._echo, key.encode(), qos=1)

    def close(self) -> None:
        for c in (self._sub, self._pub):
            c.disconnect()
            c.loop_stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return (
        f"n={len(values)} p50={statistics.median(values):.1f} ms p95={pct(values, 0.95):.1f} ms "
        f"p99={pct(values, 0.99):.1f} ms max={max(values):.1f} ms"
    )


def _spawn(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The gateway's Prometheus samples (name{labels} -> value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _shares(before: dict[str, float], after: dict[str, float], metric: str) -> str:
    """The share of a histogram's observations in the window at or under each bound."""
    n = after.get(f"{metric}_count", 0.0) - before.get(f"{metric}_count", 0.0)
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(f"{metric}_bucket") and "+Inf" not in k
    )
    return ", ".join(
        f"<={le * 1000:g} ms {c / (n or 1):.0%}" for le, c in buckets if 0.001 <= le <= 0.1
    )


def batches(before: dict[str, float], after: dict[str, float]) -> str:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    n = delta("gateway_batch_seconds_count") or 1.0
    return (
        f"{n:,.0f} batches, mean {delta('gateway_batch_size_sum') / n:.1f} messages, "
        f"Ingest.handle mean {delta('gateway_batch_seconds_sum') / n * 1000:.1f} ms "
        f"({_shares(before, after, 'gateway_batch_seconds')}); passage reaching the gateway "
        f"-> its decision out: {_shares(before, after, 'gateway_lane_decision_seconds')}"
    )


def pauses(before: dict[str, float], after: dict[str, float]) -> str:
    """The gateway's garbage-collector pauses in the window (parking.heap)."""
    out = []
    for gen in ("0", "1", "2"):
        key = f'python_gc_pause_seconds_count{{generation="{gen}"}}'
        total = f'python_gc_pause_seconds_sum{{generation="{gen}"}}'
        n = after.get(key, 0.0) - before.get(key, 0.0)
        spent = after.get(total, 0.0) - before.get(total, 0.0)
        if n:
            out.append(f"generation {gen}: {n:,.0f} runs, mean {spent / n * 1000:.2f} ms")
    return "; ".join(out) or "none"


def _has(path: Path, text: bytes) -> bool:
    return text in path.read_bytes()


async def wait_for(path: Path, text: bytes, within: float) -> None:
    deadline = time.monotonic() + within
    while not _has(path, text):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path.name}: no {text.decode()} within {within:.0f} s")
        await asyncio.sleep(0.1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=sized(1000, 200))
    parser.add_argument("--seconds", type=float, default=sized(30.0, 2.0))
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the gateway under cProfile, write the profile here and print its top",
    )
    args = parser.parse_args()
    stack.up(config.load(), log=lambda _: None)
    settings = config.load()
    topics = Topics(settings.topic_prefix)
    logs = Path(settings.stack_dir) / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"preparing: seeded city with its devices in database {DB}")
    url = await create_city(settings, DB)
    conn = await asyncpg.connect(url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    procs: list[subprocess.Popen[bytes]] = []
    logs_open: list[Any] = []
    try:
        await redis.flushall()
        await rebuild.rebuild(conn, redis, now=datetime.now(UTC), force=True)
        gated = await conn.fetch(
            """SELECT l.id AS lot_id,
                      (SELECT device_id FROM devices WHERE lot_id = l.id AND lane_id = 'in1') AS i,
                      (SELECT device_id FROM devices WHERE lot_id = l.id AND lane_id = 'out1') AS o
               FROM lots l WHERE l.kind = 'gated' ORDER BY l.capacity DESC, l.id"""
        )
        gated = [r for r in gated if r["i"] and r["o"]]
        probe_gates = [(r["lot_id"], "in1", r["i"]) for r in gated[:PROBE_LOTS]]
        load_lots = [
            (r["lot_id"], "in1", r["i"], "out1", r["o"])
            for r in gated[PROBE_LOTS : PROBE_LOTS + LOAD_LOTS]
        ]
        sensors = [
            (r["device_id"], r["lot_id"], r["space_id"])
            for r in await conn.fetch(
                "SELECT device_id, lot_id, space_id FROM devices WHERE kind = 'sensor'"
            )
        ]
        env = {
            **os.environ,
            "PARKING_DATABASE_URL": url,
            "PARKING_LOG_FORMAT": "json",
            "PARKING_LOG_LEVEL": "info",
        }
        me = [sys.executable, "-m", "parking"]
        profiled = [sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m", "parking"]
        metrics = free_port()
        drop_session(settings, GATEWAY_ID)
        plog = (logs / "lat-persister.log").open("wb")
        glog = (logs / "lat-gateway.log").open("wb")
        logs_open += [plog, glog]
        procs.append(_spawn([*me, "persister", "--consumer", "bench-lat"], env, plog))
        procs.append(
            _spawn(
                [
                    *(profiled if args.profile else me),
                    "gateway",
                    "--client-id",
                    GATEWAY_ID,
                    "--share-group",
                    SHARE_GROUP,
                    "--metrics-port",
                    str(metrics),
                ],
                env,
                glog,
            )
        )
        await wait_for(logs / "lat-gateway.log", b"mqtt_subscribed", 60)
        gates = GateSim(settings, topics)
        probe = Probe(settings, topics, probe_gates)
        load = Load(settings, topics, sensors, load_lots, args.rate)
        load.start()
        print(
            f"load: {args.rate} events/s (80% space states of {len(sensors)} sensors, 20% "
            f"passages at {len(load_lots)} lots), gates acking; probes at {len(probe_gates)} "
            f"lanes every 50 ms, bare round trip 25 ms after each"
        )
        warmup = sized(5.0, 1.0)
        started = time.perf_counter()
        pids = {
            "gateway": procs[1].pid,
            "persister": procs[0].pid,
            "bench (load, gates, probe)": os.getpid(),
        }
        for name, pidfile in (
            ("redis", Path(settings.stack_dir) / "redis" / "redis.pid"),
            ("mosquitto", Path(settings.stack_dir) / "mosquitto" / "mosquitto.pid"),
        ):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids[name] = int(pidfile.read_text().split()[0])
        cpu0: dict[str, float] = {}
        sent0 = 0
        n = 0
        while True:
            elapsed = time.perf_counter() - started
            if elapsed > warmup + args.seconds:
                break
            if not probe.recording and elapsed > warmup:
                probe.recording = True
                cpu0 = {k: cpu_s(p) for k, p in pids.items()}
                metrics0 = scrape(metrics)
                await redis.config_resetstat()
                sent0 = load.sent
                window_start = time.perf_counter()
                probe.window_start = window_start
            probe.entry() if n % 2 == 0 else probe.echo()
            n += 1
            target = started + n * 0.025
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        window = time.perf_counter() - window_start
        cpu = {k: cpu_s(p) - cpu0[k] for k, p in pids.items()}
        metrics1 = scrape(metrics)
        stats = await redis.info("commandstats")
        rate = (load.sent - sent0) / window
        await asyncio.sleep(1.0)  # the last commands arrive
        load.stop.set()
        load.join(10)
        probe.close()
        gates.close()
        if procs[1].poll() is not None:
            raise SystemExit("the gateway exited during the run; see lat-gateway.log")
        print(
            f"load achieved: {rate:,.0f} events/s over {window:.1f} s "
            f"(+ {gates.acked:,} command acks in total, {load.late_ticks} late ticks)"
        )
        print(
            "CPU over the window (cores): "
            + ", ".join(f"{k} {v / window:.2f}" for k, v in cpu.items())
        )
        print(f"gateway batches in the window: {batches(metrics0, metrics1)}")
        print(f"gateway GC pauses in the window: {pauses(metrics0, metrics1)}")
        top = sorted(stats.items(), key=lambda kv: -int(kv[1]["usec"]))[:4]
        print(
            "Redis in the window: "
            + ", ".join(
                f"{name} {int(v['calls']):,} calls {float(v['usec_per_call']):.0f} us/call"
                for name, v in top
            )
        )
        if not probe.lane:
            raise SystemExit("no command received at the probe lanes")
        missing = sum(1 for k in probe.sent if k.startswith("c-"))
        print(
            f"lane: passage -> {probe.actions} command: {summary(probe.lane)} (missing {missing})"
        )
        print(f"baseline broker round trip (QoS 1, same load): {summary(probe.bare)}")
        slowest = sorted(probe.lane_at, key=lambda p: -p[1])[:8]
        print(
            "slowest probes (s into the window: ms): "
            + ", ".join(f"{at:.2f}: {ms:.1f}" for at, ms in sorted(slowest))
        )
        lane99, bare99 = pct(probe.lane, 0.99), pct(probe.bare, 0.99)
        lane50, bare50 = statistics.median(probe.lane), statistics.median(probe.bare)
        print(
            f"ratio lane / bare: p50 {lane50 / bare50:.1f}x, "
            f"p99 {lane99 / bare99:.1f}x; goal p99 <= {GOAL_MS:.0f} ms: "
            f"{'met' if lane99 <= GOAL_MS else 'NOT met'}"
        )
        results = Results("lane_latency")
        load_figures = {
            "load_events_per_s": rate,
            "window_s": window,
            "cpu_cores": {k: v / window for k, v in cpu.items()},
        }
        base50 = results.baseline("bare broker round trip p50 (baseline)", bare50, "ms")
        results.row("passage -> command p50", lane50, "ms", against=base50)
        base99 = results.baseline(
            "bare broker round trip p99 (baseline)", bare99, "ms", n=len(probe.bare)
        )
        results.row(
            "passage -> command p99",
            lane99,
            "ms",
            against=base99,
            goal=f"p99 <= {GOAL_MS:.0f} ms",
            met=lane99 <= GOAL_MS,
            n=len(probe.lane),
            p95_ms=pct(probe.lane, 0.95),
            max_ms=max(probe.lane),
            missing=missing,
            **load_figures,
        )
        results.write()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for log in logs_open:
            log.close()
        await redis.flushall()
        await redis.aclose()
        await conn.close()
        drop_session(settings, GATEWAY_ID)
        await drop_db(settings, DB)
    if args.profile and args.profile.exists():
        out = io.StringIO()
        pstats.Stats(str(args.profile), stream=out).sort_stats("tottime").print_stats(25)
        print(f"gateway under cProfile, top by own time ({args.profile}):")
        lines = out.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        for line in lines[start : start + 26]:
            print("  " + line[:160])


if __name__ == "__main__":
    asyncio.run(main())
