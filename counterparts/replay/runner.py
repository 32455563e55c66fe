"""One replay from start to report: plan, sign the drivers up, play, drain, check, write.

Kept as one use case: each step is a call into its own module; this file says
in which order they happen and what is measured between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from counterparts.devices.city import load_trace
from counterparts.replay import check as checking
from counterparts.replay import platform
from counterparts.replay.drivers import Drivers, DriversReport
from counterparts.replay.fleet import (
    DEVICES_PER_PROCESS,
    DeviceSpec,
    Fleet,
    FleetTotals,
    WorkerSpec,
)
from counterparts.replay.model import Kind
from counterparts.replay.plan import DayPlan, PlanOptions, lot_devices, plan_day
from counterparts.replay.report import Report, write_report
from counterparts.replay.truth import Before
from counterparts.replay.truth import truth as make_truth
from parking import redisclient
from parking.auth import tokens
from parking.auth.model import Role
from parking.clock import SHANGHAI
from parking.config import Settings
from parking.devices import service as devices
from parking.devices.messages import Topics

#: how often the progress line reads the live core (9,000 device hashes a read)
CORE_READ_EVERY_S = 5.0


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    seed: int
    day: date
    speedup: float
    start: dtime = dtime(0)
    hours: float = 24.0
    lots: int | None = None
    only: tuple[str, ...] = ()
    processes: int | None = None
    drain_s: float = 600.0
    republish_after: float = 60.0
    progress_every: float = 5.0
    trace: Path = Path("/work/shared/data/birmingham-carpark-occupancy-2016.csv")
    secrets: Path | None = None
    out: Path | None = None
    api_url: str | None = None
    sandbox_url: str | None = None
    #: payments per second the drivers' side makes at most (the rest wait their turn)
    pay_rate: float = 40.0
    payments: bool = True
    fault_scale: float = 1.0


@dataclass
class Phase:
    name: str
    started: float
    ended: float | None = None


@dataclass
class Run:
    """What is measured while the replay runs."""

    id: str
    started: datetime
    phases: list[Phase] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    peak: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str) -> None:
        now = time.monotonic()
        if self.phases and self.phases[-1].ended is None:
            self.phases[-1].ended = now
        self.phases.append(Phase(name, now))

    def seconds(self, name: str) -> float:
        for p in self.phases:
            if p.name == name:
                return (p.ended or time.monotonic()) - p.started
        return 0.0


def run_id(seed: int, now: datetime) -> str:
    return f"replay-{now.strftime('%Y%m%d-%H%M%S')}-s{seed}"


def _lots_for(options: ReplayOptions, all_lots: list[Any]) -> list[Any]:
    if options.only:
        wanted = set(options.only)
        return [lot for lot in all_lots if lot.lot_id in wanted]
    if options.lots is None:
        return all_lots
    order = sorted(all_lots, key=lambda lot: lot.lot_id)
    random.Random(options.seed).shuffle(order)
    return sorted(order[: options.lots], key=lambda lot: lot.lot_id)


def _bar(done: float, width: int = 20) -> str:
    filled = int(max(0.0, min(1.0, done)) * width)
    return "█" * filled + "·" * (width - filled)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def replay(
    options: ReplayOptions, settings: Settings, say: Callable[[str], None]
) -> tuple[Report, Path]:
    started = datetime.now(UTC)
    run = Run(run_id(options.seed, started), started)
    out_dir = options.out or settings.stack_dir.parent / "loadtests" / run.id
    out_dir.mkdir(parents=True, exist_ok=True)
    topics = Topics(settings.topic_prefix)
    conn = await asyncpg.connect(settings.database_url)
    redis = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster)
    api_url = options.api_url or f"http://{settings.api_host}:{settings.api_port}"
    http = httpx.AsyncClient(base_url=api_url, trust_env=False, timeout=30)
    fleet: Fleet | None = None
    drivers: Drivers | None = None
    try:
        run.phase("plan")
        secrets = devices.read_secrets(options.secrets or devices.secrets_path(settings.stack_dir))
        all_lots, left_out = lot_devices(await devices.fleet(conn), secrets)
        device_lots = {
            d: lot.lot_id
            for lot in all_lots
            for d in (*lot.gates_in, *lot.gates_out, *lot.sensors.values())
        }
        busy = await platform.busy_lots(redis, device_lots)
        chosen = [lot for lot in _lots_for(options, all_lots) if lot.lot_id not in busy]
        for lot_id in sorted(busy):
            left_out[lot_id] = "a device is online: another simulator drives it"
        if not chosen:
            reasons = Counter(left_out.values()).most_common(5)
            raise RuntimeError(f"no lot to replay; lots left out: {reasons}")
        lot_ids = [lot.lot_id for lot in chosen]
        street = [lot.lot_id for lot in chosen if lot.kind != "gated"]
        before, occupied_before = await platform.before(conn, lot_ids, street)
        device_count = sum(
            len(lot.gates_in) + len(lot.gates_out) + len(lot.sensors) for lot in chosen
        )
        processes = options.processes or max(1, math.ceil(device_count / DEVICES_PER_PROCESS))
        trace = load_trace(options.trace)
        t = time.monotonic()
        plan = plan_day(
            chosen, trace,
            PlanOptions(seed=options.seed, day=options.day, start=options.start,
                        hours=options.hours, occupied_before=occupied_before,
                        partitions=processes, topic_prefix=settings.topic_prefix,
                        fault_scale=options.fault_scale),
            left_out=dict(left_out),
        )  # fmt: skip
        say(
            f"[replay] {run.id}: {len(plan.lots)} lots ({len(street)} on-street), "
            f"{device_count} devices in {processes} processes, {len(plan.events):,} events, "
            f"{len(plan.stays):,} stays in gated lots, {len(plan.outages)} outages, "
            f"{sum(1 for e in plan.events if e.kind in (Kind.BAD_RAW, Kind.BAD_IN_SEQUENCE))} "
            f"malformed payloads; planned in {time.monotonic() - t:.1f} s; "
            f"{len(left_out)} lots left out"
        )
        plates = {e.plate for e in plan.events if e.plate is not None}
        index, marks = await platform.plate_index(redis, plates)
        before = Before(before.open_in_lots, index, marks, before.spaces)
        dev_lots = {d: device_lots[d] for d in plan.devices()}
        base = await platform.base_seqs(conn, redis, dev_lots)

        if options.payments:
            run.phase("drivers")
            drivers = Drivers(
                http, redis, plan, sandbox_url=options.sandbox_url or
                f"http://127.0.0.1:{settings.sandbox_port}", pay_rate=options.pay_rate, say=say,
            )  # fmt: skip
            await drivers.sign_up()
            # which stays cost anything: a driver whose stay was free pays nothing
            pricing = await checking.load_pricing(conn, lot_ids, sorted(plates))

        run.phase("connect")
        specs = _specs(plan, secrets, base, options, settings, out_dir)
        fleet = Fleet(specs, out_dir)
        fleet.start()
        online, starts = await fleet.wait_ready()
        moved = {d: s for d, s in starts.items() if s > base.get(d, 0)}
        if moved:
            say(f"[replay] {len(moved)} devices start above the database's seq "
                "(their retained watermark is ahead of it)")  # fmt: skip
        base = {d: max(b, starts.get(d, 0)) for d, b in base.items()}
        truth = make_truth(plan, base, before)
        say(f"[replay] {online}/{device_count} devices connected in {run.seconds('connect'):.1f} s")

        run.phase("play")
        t0 = time.time() + 1.0
        fleet.go(t0)
        if drivers is not None:
            drivers.start(t0, options.speedup, plan.window[0], pricing.owes)
        watcher = Watcher(run, plan, fleet, drivers, redis, dev_lots, base, options, say)
        await watcher.play()
        run.phase("drain")
        drained = await watcher.drain()
        run.phase("stop")
        totals = fleet.totals()
        await fleet.stop()
        fleet_final = fleet.totals()
        driver_report = await drivers.stop() if drivers is not None else DriversReport()

        run.phase("check")
        say("[replay] checking the platform against what was generated ...")
        scope = checking.Scope(
            base=base, lots=lot_ids, street_lots=street,
            topics=_topics(plan, topics), started=started,
        )  # fmt: skip
        city = tokens.issue(settings.jwt_key, subject="replay", role=Role.CITY,
                            now=datetime.now(UTC), ttl=timedelta(hours=1))  # fmt: skip
        result = await checking.check(
            conn, redis, truth=truth, scope=scope, stays=plan.stays,
            payments=checking.Payments(
                paid=driver_report.paid,
                uncertain=frozenset(driver_report.uncertain),
                contactless_plates=driver_report.contactless_plates,
            ),
            api=http, city_token=city,
        )  # fmt: skip
        run.phase("report")
        decided = await checking.decisions(conn, base)
        report = Report.build(
            run=run, options=options, plan=plan, truth=truth, fleet=fleet_final,
            played=totals, lags=fleet.lags, backlog_lags=fleet.backlog_lags,
            drivers=driver_report, result=result, drained=drained, decisions=decided,
        )  # fmt: skip
        path = write_report(report, out_dir)
        return report, path
    finally:
        if fleet is not None:
            with contextlib.suppress(Exception):
                await fleet.stop(within=5)
        if drivers is not None:
            with contextlib.suppress(Exception):
                await drivers.stop()
        await http.aclose()
        await redis.aclose()
        await conn.close()


def _topics(plan: DayPlan, topics: Topics) -> list[str]:
    out: list[str] = []
    for lot in plan.lots:
        out.extend(
            topics.passages(lot.lot_id, lot.places[d]) for d in (*lot.gates_in, *lot.gates_out)
        )
        out.extend(topics.space_state(lot.lot_id, space) for space in lot.sensors)
    return out


def _specs(
    plan: DayPlan,
    secrets: dict[str, str],
    base: dict[str, int],
    options: ReplayOptions,
    settings: Settings,
    out_dir: Path,
) -> list[WorkerSpec]:
    info: dict[str, DeviceSpec] = {}
    for lot in plan.lots:
        for device in (*lot.gates_in, *lot.gates_out):
            info[device] = DeviceSpec(device, secrets[device], "gate", lot.lot_id,
                                      lot.places[device], None, base.get(device, 0))  # fmt: skip
        for space, device in lot.sensors.items():
            info[device] = DeviceSpec(device, secrets[device], "sensor", lot.lot_id, None, space,
                                      base.get(device, 0))  # fmt: skip
    begin, _ = plan.window
    return [
        WorkerSpec(
            index=part.index,
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            topic_prefix=settings.topic_prefix,
            speedup=options.speedup,
            begin_ms=begin,
            republish_after=options.republish_after,
            outbox=str(out_dir / f"outbox-{part.index}.sqlite3"),
            devices=[info[d] for d in part.devices],
            partition=part,
        )
        for part in plan.partitions()
    ]


async def _platform_now(
    redis: aioredis.Redis, dev_lots: dict[str, str], base: dict[str, int]
) -> platform.PlatformNow:
    marks = await platform.device_marks(redis, dev_lots, ("max", "wm"))
    now = platform.PlatformNow()
    for device, (applied, stored) in marks.items():
        b = base.get(device, 0)
        now.applied += max(0, applied - b)
        now.stored += max(0, stored - b)
    now.pending, now.stream_length = await platform.pending_entries(redis)
    info = await redis.info("memory")
    now.redis_bytes = int(info.get("used_memory", 0))
    return now


@dataclass
class _Reading:
    totals: FleetTotals
    now: platform.PlatformNow
    cpu: dict[str, float]
    rate: float
    recent: list[float]


@dataclass
class Watcher:
    """Samples both sides every second while the day plays and drains, keeps the
    samples for the report, and prints the progress line."""

    run: Run
    plan: DayPlan
    fleet: Fleet
    drivers: Drivers | None
    redis: aioredis.Redis
    dev_lots: dict[str, str]
    base: dict[str, int]
    options: ReplayOptions
    say: Callable[[str], None]
    last: dict[str, float] = field(default_factory=dict)
    next_line: float = 0.0
    _now: platform.PlatformNow = field(default_factory=platform.PlatformNow)
    _read_core_at: float = 0.0

    def __post_init__(self) -> None:
        self.procs = platform.Processes({"replay-devices": self.fleet.pids()})
        self.procs.sample()

    async def sample(self) -> _Reading:
        await asyncio.sleep(1.0)
        self.fleet.poll()
        totals = self.fleet.totals()
        now = self._now
        # The live core is read every few seconds, and a slow answer is no reason to
        # stop: the replay measures the platform, it must not fall over with it.
        if time.monotonic() >= self._read_core_at:
            self._read_core_at = time.monotonic() + CORE_READ_EVERY_S
            try:
                now = self._now = await _platform_now(self.redis, self.dev_lots, self.base)
            except (aioredis.RedisError, OSError) as error:
                self.say(f"[replay] the live core did not answer the progress read: {error}")
        cpu = self.procs.sample()
        at = time.monotonic()
        last = self.last
        rate = (totals.emitted - last.get("emitted", 0)) / max(1e-3, at - last.get("at", at - 1))
        recent = self.fleet.lags[int(last.get("lags", 0)) :]
        last.update(emitted=totals.emitted, at=at, lags=len(self.fleet.lags))
        sample = {
            "t": round(at - self.run.phases[0].started, 1), "day_ms": totals.day_ms,
            "emitted": totals.emitted, "applied": now.applied, "persisted": now.stored,
            "pending": now.pending, "stream": now.stream_length,
            "redis_mb": round(now.redis_bytes / 2**20, 1),
            "rate": round(rate, 1), "online": totals.online, "disconnects": totals.disconnects,
            "republished": totals.republished, "cpu": {k: round(v, 3) for k, v in cpu.items()},
            "lag_p50": _pct(recent, 0.5), "lag_p99": _pct(recent, 0.99), "load": os.getloadavg()[0],
        }  # fmt: skip
        self.run.samples.append(sample)
        for key, value in (("pending", now.pending), ("stream", now.stream_length),
                           ("redis_mb", now.redis_bytes / 2**20), ("rate", rate)):  # fmt: skip
            self.run.peak[key] = max(self.run.peak.get(key, 0.0), float(value))
        return _Reading(totals, now, cpu, rate, recent)

    def line(self, r: _Reading, extra: str = "", *, force: bool = False) -> None:
        if not force and time.monotonic() < self.next_line:
            return
        self.next_line = time.monotonic() + self.options.progress_every
        begin, end = self.plan.window
        t, p = r.totals, r.now
        day = max(begin, min(end, t.day_ms))
        done = (day - begin) / max(1, end - begin)
        clock = datetime.fromtimestamp(day / 1000, SHANGHAI)
        p50, p99 = _pct(r.recent, 0.5), _pct(r.recent, 0.99)
        lag = "lag -" if p50 is None or p99 is None else f"lag p50 {p50:.2f}s p99 {p99:.2f}s"
        money = f" | {self.drivers.line()}" if self.drivers is not None else ""
        self.say(
            f"[replay {time.monotonic() - self.run.phases[0].started:6.0f}s] {clock:%H:%M} "
            f"{_bar(done)} {done * 100:3.0f}% | sent {t.emitted:,} ({r.rate:,.0f}/s) applied "
            f"{p.applied:,} persisted {p.stored:,} | {lag} backlog "
            f"{max(0, p.applied - p.stored):,} | devices {t.online}/{t.devices} on, "
            f"{t.disconnects} disconnects, {t.republished} re-published, cpu "
            f"{r.cpu.get('replay-devices', 0) * 100:.0f}% | platform: gateway "
            f"{r.cpu.get('gateway', 0) * 100:.0f}% persister "
            f"{r.cpu.get('persister', 0) * 100:.0f}% pending {p.pending:,} redis "
            f"{p.redis_bytes / 2**20:.0f} MB load {os.getloadavg()[0]:.1f}{money}{extra}"
        )

    async def play(self) -> None:
        while True:
            reading = await self.sample()
            self.line(reading)
            if reading.totals.done:
                return

    async def drain(self) -> bool:
        """Wait until every event is stored (the devices' outboxes are empty), the streams
        and follow-ups are done, and the drivers have made their payments."""
        deadline = time.monotonic() + self.options.drain_s
        if self.drivers is not None:
            self.drivers.day_over()
        while time.monotonic() < deadline:
            r = await self.sample()
            try:
                followups = await platform.pending_followups(self.redis)
            except (aioredis.RedisError, OSError):
                continue
            settled = (
                r.totals.outbox == 0
                and r.now.pending == 0
                and followups == 0
                and (self.drivers is None or self.drivers.settled())
            )
            self.line(r, f" | draining: outbox {r.totals.outbox}, follow-ups {followups}",
                      force=settled)  # fmt: skip
            if settled:
                # watermarks are published after the commit; give the last ones a moment
                await asyncio.sleep(1.0)
                return True
        self.say(
            f"[replay] not drained within {self.options.drain_s:.0f} s: checking what is there"
        )
        return False
