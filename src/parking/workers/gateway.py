"""``parking gateway``: MQTT in, occupancy core, commands out (contracts/mqtt.md).

paho-mqtt is confined to `parking.devices.mqtt.SessionClient`, which drives paho
from this process's event loop (no network thread): what it receives waits in an
inbox; the loop takes everything queued as one batch, applies it to Redis with
`parking.occupancy.ingest.Ingest` (pipelined, single-slot function calls),
publishes the commands, and only then acks the batch's MQTT messages (manual
acks). The next batch is taken while one is in Redis, and applied after it. While
Redis is unreachable nothing is acked: the broker keeps the messages (persistent
session) and stops sending once the in-flight window is full, which is the
backpressure (matrix R4, R6).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, cast

import asyncpg
import click
import structlog
from prometheus_client import Counter, Histogram, start_http_server
from redis.exceptions import RedisError

from parking import config, heap, periodic, redisclient
from parking.city import logic as city_logic
from parking.city.model import LANE_BOUNDS_MS
from parking.clock import Clock, SystemClock
from parking.config import mqtt_identity, mqtt_share_group
from parking.devices.messages import Topics
from parking.devices.mqtt import Received, SessionClient
from parking.observability import configure_logging
from parking.occupancy import ingest as core_ingest
from parking.occupancy import plate_flags, rebuild, store
from parking.occupancy.batch import BatchReport, Decoded, Inbound, Recovery
from parking.occupancy.ingest import Ingest
from parking.occupancy.model import CoreNotReady, Directory
from parking.pricing import Pricer
from parking.pricing import service as pricing
from parking.pricing.logic import DayCount

log = structlog.get_logger("parking.gateway")

# ------------------------------------------------------------------ tuning

#: Largest batch applied at once. Batches form naturally from what queued up
#: while the previous one ran, so under light load a batch is one message
#: (lowest lane latency) and under a backlog it grows up to this.
MAX_BATCH: Final = 1000
#: When a batch of at least LINGER_MIN arrived (a backlog is draining) and no
#: batch is in Redis, wait this long once for more before applying it. Batches
#: then grow from ~30 to hundreds (the socket's reader fills the inbox while we
#: sleep), which halves the per-event cost; a lone passage at a quiet lane never
#: waits. While a batch is in Redis, the wait for it is the linger. 32, not less:
#: at a city's steady pace (1,000 events/s) batches hold 5-20 messages and must
#: not wait (with 8, a passage's p99 to its command was 17-21 ms, with 32 12-15 ms;
#: bench_lane_latency), while a backlog's batches hold hundreds.
LINGER_MIN: Final = 32
LINGER_S: Final = 0.002
#: How long the broker keeps our session (and what it queued for it) after we
#: are gone. Long enough to cover a restart (the supervisor's first restart
#: comes after 1 s; start-up takes a few seconds): the broker then redelivers
#: what we had not acked. Short because Mosquitto keeps an offline session in
#: the shared subscription's round robin: a dead gateway's session goes on
#: taking its share of every lane's passages, which wait there until it comes
#: back (with 7 days, half the passages of a two-gateway city would wait for a
#: gateway that never returns, re-sent by the devices into the same trap; matrix
#: M5). When the session expires Mosquitto drops what it queued for it (it does
#: not hand it to the group) and the devices' outboxes re-publish it (60 s by
#: contract), as after any broker loss. A single gateway down for longer than
#: this also falls back on the outboxes.
SESSION_EXPIRY_S: Final = 15
#: Back-off while Redis or PostgreSQL is away: first retry fast (a blip),
#: then at most every 5 s so a long outage costs nothing.
RETRY_FIRST_S: Final = 0.05
RETRY_MAX_S: Final = 5.0
#: How often the directory (lots, devices) and tariffs are re-read.
REFRESH_EVERY_S: Final = 30.0
#: Lot availability (retained, QoS 0, for signs and apps) goes out at most this
#: often per lot: a busy lot changes many times a second, a sign needs no more.
AVAILABILITY_EVERY_S: Final = 1.0
#: How often plate flags are re-synced from their tables (one gateway at a time).
FLAG_SYNC_EVERY_S: Final = 60.0
#: A device not heard of for PARKING_DEVICE_SILENT_AFTER_S (30 minutes) is
#: reported silent. Sensors report at least every 10 minutes and gates send a
#: status heartbeat; 30 minutes leaves room for a flaky 4G link without hiding
#: a dead device for a shift. The city's device online rate uses the same window.
#: Follow-ups older than this were left by a crashed gateway.
FOLLOWUP_GRACE: Final = timedelta(seconds=30)

# ------------------------------------------------------------------ metrics

EVENTS = Counter("gateway_events_total", "Device messages handled", ["result"])
GAPS = Counter("gateway_seq_gaps_total", "Sequence gaps detected")
BATCH_SIZE = Histogram(
    "gateway_batch_size",
    "Messages per applied batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BATCH_SECONDS = Histogram("gateway_batch_seconds", "Time to apply a batch to Redis")
RETRIES = Counter("gateway_batch_retries_total", "Batches retried", ["reason"])
PUBLISHED = Counter("gateway_published_total", "Messages published", ["kind"])
#: re-sends themselves are ``gateway_published_total{kind="command_resend"}``
COMMANDS_DROPPED = Counter(
    "gateway_commands_dropped_total",
    "Unacknowledged commands no longer re-sent (superseded, stale, attempts, expired)",
    ["reason"],
)
LANE_DECISION_SECONDS = Histogram(
    "gateway_lane_decision_seconds",
    "From a passage reaching the gateway to its lane decision going out",
    buckets=tuple(b / 1000 for b in LANE_BOUNDS_MS),
)


# ------------------------------------------------------------------ the process


class Gateway:
    def __init__(
        self,
        settings: config.Settings,
        *,
        client_id: str,
        share_group: str,
        clock: Clock,
        crash_after: int | None = None,
        session_expiry: int = SESSION_EXPIRY_S,
    ) -> None:
        self.settings = settings
        self.session_expiry = session_expiry
        self.client_id = client_id
        self.share_group = share_group
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.redis = redisclient.connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            # A stalled Redis (matrix R6) must fail a batch, not hang it forever.
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        self._stopping = asyncio.Event()
        self._crash_after = crash_after
        self._handled = 0
        self._dirty_lots: set[str] = set()
        self._free: dict[str, int] = {}
        #: set while no batch is between its apply and its ack
        self._idle = asyncio.Event()
        self._idle.set()
        #: lane decision latencies not written to Redis yet: hour -> bucket -> count
        self._latencies: dict[int, dict[int, int]] = {}
        self._counting: asyncio.Task[None] | None = None
        self._last_refresh = 0.0
        self._ingest: Ingest | None = None
        self._pricer: Pricer | None = None
        self._flag_sync = plate_flags.FlagSync()
        #: for the few exits whose fee depends on the plate's stays of the day
        self._stay_pool: asyncpg.Pool | None = None

    async def _pg(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.settings.database_url, timeout=10)

    async def _count_stays(self, plate: str, count: DayCount, before: datetime) -> int:
        """The plate's earlier stays of the day (``nev.daily_grace``), from PostgreSQL; a
        small pool opened at the first such exit."""
        if self._stay_pool is None:
            self._stay_pool = await asyncpg.create_pool(
                self.settings.database_url, min_size=0, max_size=2, timeout=10
            )
        async with self._stay_pool.acquire() as proxy:
            conn = cast(asyncpg.Connection, proxy)
            return await pricing.earlier_stays(conn, plate, count, before)

    async def _retrying(self, what: str, action: Callable[[], Any]) -> Any:
        delay = RETRY_FIRST_S
        while True:
            try:
                return await action()
            except (
                OSError,
                RedisError,
                asyncpg.PostgresError,
                CoreNotReady,
                TimeoutError,
            ) as error:
                log.warning("startup_retry", step=what, error=str(error), delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _prepare(self) -> Ingest:
        async def load() -> tuple[Directory, Pricer]:
            await store.load_library(self.redis)
            conn = await self._pg()
            try:
                await rebuild.ensure_ready(conn, self.redis, now=self.clock.now())
                return await core_ingest.load_directory(conn), await Pricer.load(conn)
            finally:
                await conn.close()

        directory, pricer = await self._retrying("load", load)
        self._pricer = pricer
        ingest = Ingest(
            self.redis,
            topics=self.topics,
            directory=directory,
            pricer=pricer,
            refresh_directory=self._refresh_directory,
            count_stays=self._count_stays,
        )
        await self._retrying("sync_lots", lambda: ingest.sync_lots(list(directory.lots.values())))
        self._last_refresh = time.monotonic()
        return ingest

    async def _refresh_directory(self) -> Directory:
        assert self._ingest is not None
        # At most every 2 s: a device that is really unknown must not make
        # every batch wait for PostgreSQL.
        if time.monotonic() - self._last_refresh < 2.0:
            return self._ingest.directory
        self._last_refresh = time.monotonic()
        try:
            conn = await self._pg()
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            log.warning("directory_refresh_failed", error=str(error))
            return self._ingest.directory
        try:
            return await core_ingest.load_directory(conn)
        finally:
            await conn.close()

    async def _rebuild_core(self) -> None:
        # The ladder retries the batch whatever happens here: a rebuild that fails
        # (PostgreSQL down too) is tried again on the next round.
        with contextlib.suppress(OSError, RedisError, asyncpg.PostgresError, TimeoutError):
            conn = await self._pg()
            try:
                await rebuild.ensure_ready(conn, self.redis, now=self.clock.now())
            finally:
                await conn.close()

    @staticmethod
    def _note_retry(kind: str, error: BaseException, delay: float) -> None:
        if kind == "not_ready":
            RETRIES.labels("not_ready").inc()
            log.warning("core_not_ready", error=str(error), delay=delay)
        elif kind == "library":
            RETRIES.labels("library").inc()
        else:
            RETRIES.labels(type(error).__name__).inc()
            log.warning("batch_retry", error=f"{type(error).__name__}: {error}", delay=delay)

    async def _apply(self, ingest: Ingest, batch: list[Inbound], decoded: Decoded) -> BatchReport:
        """The batch through the core's recovery ladder until it is in: nothing of it
        is acknowledged to the broker before."""
        return await ingest.handle_recovering(
            batch,
            self.clock.now,
            Recovery(
                rebuild=self._rebuild_core,
                first_delay=RETRY_FIRST_S,
                max_delay=RETRY_MAX_S,
                on_retry=self._note_retry,
                on_done=BATCH_SECONDS.observe,
            ),
            decoded=decoded,
        )

    async def _consume(self, adapter: SessionClient, ingest: Ingest) -> None:
        """Batch after batch. The next batch is taken and decoded while the one before
        is in Redis, but applied only after it: one batch is applied at a time, so a
        lot's events reach the core in the order they arrived and a lane's commands
        leave in passage order; a batch is acknowledged once it is applied."""
        applying: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                items = await adapter.take(MAX_BATCH)
                if self._stopping.is_set():
                    break  # not applied, not acked: the broker redelivers it
                if (applying is None or applying.done()) and LINGER_MIN <= len(items) < MAX_BATCH:
                    await asyncio.sleep(LINGER_S)
                    items.extend(adapter.take_now(MAX_BATCH - len(items)))
                batch = self._inbound(items)
                decoded = await ingest.decode(batch)
                if applying is not None:
                    await applying
                    if self._stopping.is_set():
                        return  # not applied, not acked: the broker redelivers it
                    # What arrived while the batch before was applied joins this one.
                    more = adapter.take_now(MAX_BATCH - len(items))
                    if more:
                        extra = self._inbound(more)
                        also = await ingest.decode(extra)
                        items += more
                        batch += extra
                        decoded = Decoded(
                            decoded.items + also.items,
                            decoded.unknown_devices + also.unknown_devices,
                        )
                self._idle.clear()
                applying = asyncio.create_task(
                    self._apply_batch(adapter, ingest, items, batch, decoded)
                )
            if applying is not None:
                await applying
        finally:
            if applying is not None:
                applying.cancel()

    def _inbound(self, items: list[Received]) -> list[Inbound]:
        """The batch as the core takes it: each message received when paho handed it
        over (the clock's now less its wait in our inbox), and whether the broker may
        have held it for us (``Received.held``: then its delay says nothing of the
        device's clock)."""
        now = self.clock.now()
        mono = time.monotonic()
        return [
            Inbound(
                i.topic,
                i.payload,
                now - timedelta(seconds=max(0.0, mono - i.arrived)) if i.arrived else now,
                held=i.held,
            )
            for i in items
        ]

    async def _apply_batch(
        self,
        adapter: SessionClient,
        ingest: Ingest,
        items: list[Received],
        batch: list[Inbound],
        decoded: Decoded,
    ) -> None:
        try:
            report = await self._apply(ingest, batch, decoded)
            self._dirty_lots |= report.lots
            for publish in report.publishes:
                adapter.publish(
                    publish.topic, publish.payload, qos=publish.qos, retain=publish.retain
                )
                PUBLISHED.labels("watermark" if publish.retain else "command").inc()
            self._lane_latency(items)
            self._handled += len(items)
            if self._crash_after is not None and self._handled >= self._crash_after:
                # Test hook (matrix M1): die between the Redis write and the MQTT ack.
                log.warning("crash_hook", handled=self._handled, applied=report.applied)
                os.kill(os.getpid(), signal.SIGKILL)
            adapter.ack(items)
        finally:
            self._idle.set()
        BATCH_SIZE.observe(len(items))
        EVENTS.labels("applied").inc(report.applied)
        EVENTS.labels("duplicate").inc(report.duplicates)
        EVENTS.labels("dead_letter").inc(report.dead_lettered)
        GAPS.inc(report.gaps)
        if report.commands_superseded:
            COMMANDS_DROPPED.labels("superseded").inc(report.commands_superseded)
        if report.dead_lettered:
            log.info("dead_lettered", reasons=dict(report.dead_reasons))
        if report.duplicates:
            # Rare in steady state: a redelivery after a crash, or a device
            # re-sending what its watermark did not cover yet.
            log.info("duplicates_recognised", count=report.duplicates)

    def _lane_latency(self, items: list[Received]) -> None:
        """Each passage's lane decision latency: the Prometheus histogram, and the
        hour's histogram in Redis that the city's figures read, written in the
        background (a statistic never holds a batch, nor costs it a round trip)."""
        done = time.monotonic()
        counts: dict[int, int] | None = None
        for item in items:
            if "/passages" not in item.topic or not item.arrived:
                continue
            seconds = max(0.0, done - item.arrived)
            LANE_DECISION_SECONDS.observe(seconds)
            if counts is None:
                hour = int(city_logic.hour_of(self.clock.now()).timestamp())
                counts = self._latencies.setdefault(hour, {})
            bucket = city_logic.bucket_of_ms(seconds * 1000)
            counts[bucket] = counts.get(bucket, 0) + 1
        if counts is not None and (self._counting is None or self._counting.done()):
            self._counting = asyncio.create_task(self._count_latencies())

    async def _count_latencies(self) -> None:
        """Write what ``_lane_latency`` gathered (best effort: dropped if Redis fails)."""
        while self._latencies:
            hours, self._latencies = self._latencies, {}
            for hour, counts in hours.items():
                try:
                    await store.count_lane_latency(self.redis, hour, counts)
                except (RedisError, OSError) as exc:
                    log.warning("lane_latency_not_counted", error=str(exc))

    async def _every(self, period: float, what: str, action: Callable[[], Any]) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=period)
            if self._stopping.is_set():
                return
            try:
                await action()
            except Exception as error:  # housekeeping must never take the gateway down
                log.warning(
                    "housekeeping_failed", task=what, error=f"{type(error).__name__}: {error}"
                )

    async def _availability(self, adapter: SessionClient, ingest: Ingest) -> None:
        """Publish the free count of the lots touched since the last call (so once a
        second at most per lot), when it moved."""
        lots, self._dirty_lots = list(self._dirty_lots), set()
        now = self.clock.now()
        sent = 0
        for lot_id, (capacity, free) in (await ingest.free_counts(lots)).items():
            if self._free.get(lot_id) == free:
                continue
            sign = ingest.availability(lot_id, capacity, free, now)
            adapter.publish(sign.topic, sign.payload, qos=sign.qos, retain=sign.retain)
            self._free[lot_id] = free
            PUBLISHED.labels("availability").inc()
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)  # let lane batches through between bursts

    async def _resend(self, adapter: SessionClient, ingest: Ingest) -> None:
        due = await ingest.resend_due(self.clock.now())
        for publish in due.publishes:
            adapter.publish(publish.topic, publish.payload, qos=publish.qos, retain=publish.retain)
            PUBLISHED.labels("command_resend").inc()
        for reason, count in due.dropped.items():
            COMMANDS_DROPPED.labels(reason).inc(count)

    async def _refresh(self, ingest: Ingest) -> None:
        conn = await self._pg()
        try:
            ingest.directory = await core_ingest.load_directory(conn)
            if self._pricer is not None:
                await self._pricer.refresh(conn)
        finally:
            await conn.close()
        self._last_refresh = time.monotonic()
        await ingest.sync_lots(list(ingest.directory.lots.values()))

    async def _sync_flags(self) -> None:
        lock = "{occ}:flag-sync-lock"
        if not await self.redis.set(lock, self.client_id, nx=True, ex=int(FLAG_SYNC_EVERY_S) - 5):
            return
        conn = await self._pg()
        try:
            changed = await self._flag_sync.run(conn, self.redis, self.clock.now())
        finally:
            await conn.close()
        if changed:
            log.info("plate_flags_synced", plates=changed)

    async def _catch_up_flags(self, conn: asyncpg.Connection) -> None:
        """Before listening to bill changes: what changed while nobody listened."""
        changed = await self._flag_sync.run(conn, self.redis, self.clock.now())
        if changed:
            log.info("plate_flags_synced", plates=changed)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        ingest = await self._prepare()
        self._ingest = ingest
        # What it loaded stays for its lifetime: out of the collector's walks
        # (a 36-60 ms pause every ~15 s otherwise; parking.heap).
        log.info("heap_settled", frozen=heap.settle())
        username, password = mqtt_identity(self.settings, "gateway")
        adapter = SessionClient(
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_platform_port,
            username=username,
            password=password,
            client_id=self.client_id,
            subscriptions=self.topics.subscriptions(
                mqtt_share_group(self.settings, self.share_group)
            ),
            loop=loop,
            session_expiry=self.session_expiry,
        )
        adapter.start()
        log.info("gateway_started", client_id=self.client_id, share_group=self.share_group)
        silent_after = timedelta(seconds=self.settings.device_silent_after_s)
        consume = asyncio.create_task(self._consume(adapter, ingest), name="gateway loop")
        tasks = [
            consume,
            asyncio.create_task(self._every(1.0, "resend", lambda: self._resend(adapter, ingest))),
            asyncio.create_task(
                self._every(
                    AVAILABILITY_EVERY_S,
                    "availability",
                    lambda: self._availability(adapter, ingest),
                )
            ),
            asyncio.create_task(
                self._every(
                    10.0,
                    "followups",
                    lambda: ingest.finish_stale_followups(
                        self.clock.now(), older_than=FOLLOWUP_GRACE
                    ),
                )
            ),
            asyncio.create_task(
                self._every(
                    min(30.0, silent_after.total_seconds()),
                    "silence",
                    lambda: ingest.report_silent(self.clock.now(), silent_after=silent_after),
                )
            ),
            asyncio.create_task(
                self._every(REFRESH_EVERY_S, "refresh", lambda: self._refresh(ingest))
            ),
            asyncio.create_task(self._every(FLAG_SYNC_EVERY_S, "flags", self._sync_flags)),
            asyncio.create_task(
                plate_flags.OwedWatch(
                    self.settings.database_url, self.redis, self.clock.now, self._catch_up_flags
                ).run(self._stopping)
            ),
        ]
        try:
            await periodic.until_stopped(self._stopping, [consume])
        finally:
            await self._stop(adapter, tasks)

    async def _stop(self, adapter: SessionClient, tasks: list[asyncio.Task[Any]]) -> None:
        log.info("gateway_stopping")
        # Let a batch in progress finish (and be acked) before disconnecting;
        # what is not acked is redelivered to the next gateway anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._counting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._counting, timeout=2)
        adapter.stop()
        if self._stay_pool is not None:
            await self._stay_pool.close()
        await self.redis.aclose()
        log.info("gateway_stopped")


@click.command()
@click.option(
    "--client-id",
    default=lambda: config.load().gateway_client_id,
    show_default="$PARKING_GATEWAY_CLIENT_ID or gateway-1",
    help="MQTT client id; stable across restarts (it names the persistent session), "
    "different for each gateway",
)
@click.option("--share-group", default="gateways", show_default=True)
@click.option("--metrics-port", type=int, default=0, help="serve Prometheus metrics (0: off)")
@click.option(
    "--session-expiry",
    type=click.IntRange(1, 7 * 24 * 3600),
    default=lambda: config.load().gateway_session_expiry,
    show_default=f"$PARKING_GATEWAY_SESSION_EXPIRY or {SESSION_EXPIRY_S}",
    help="seconds the broker keeps this gateway's session after it is gone "
    "(a dead gateway's session takes its share of the traffic until then)",
)
def gateway(client_id: str, share_group: str, metrics_port: int, session_expiry: int) -> None:
    """Run the device gateway: MQTT -> occupancy core -> commands (until SIGTERM)."""
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="gateway")
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    asyncio.run(
        Gateway(
            settings,
            client_id=client_id,
            share_group=share_group,
            clock=SystemClock(),
            crash_after=settings.gateway_crash_after,
            session_expiry=session_expiry,
        ).run()
    )
