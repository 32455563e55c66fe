"""``parking persister``: the applied-events streams -> PostgreSQL, then watermarks.

One consumer group (``persisters``) per lot-shard stream. A batch is written in
one transaction (`parking.occupancy.persist.persist`), then acknowledged
(XACK), then each device whose watermark moved is told so (retained
``devices/{id}/watermark``) and the core learns it too (for duplicates the
gateway answers). Writing is idempotent, so any entry may be written twice:

* killed after the commit, before XACK (matrix R1): the entries stay pending;
  a restarted persister of the same name reads its own pending entries first,
  any other persister claims them with XAUTOCLAIM once idle for the reclaim
  timeout (R2: a hung persister);
* an entry that cannot be written (R3) stays pending, is retried on each
  reclaim, and after ``max_deliveries`` goes to the dead letters, so the stream
  keeps flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final, cast

import asyncpg
import click
import httpx
import msgspec
import structlog
from prometheus_client import Counter, Histogram, start_http_server
from redis.exceptions import RedisError, ResponseError

from parking import config, heap, periodic, redisclient
from parking.clock import Clock, SystemClock
from parking.config import mqtt_identity
from parking.devices.messages import Topics, Watermark, encode
from parking.devices.mqtt import Publisher
from parking.observability import configure_logging
from parking.occupancy import keys, persist, records, store
from parking.occupancy.model import AnomalyKind
from parking.occupancy.plan import StreamEntry
from parking.payments import contactless as payment_contactless
from parking.payments import providers as payment_providers
from parking.payments.port import PaymentProvider
from parking.sessions import service as sessions

log = structlog.get_logger("parking.persister")

#: Entries read per shard and round. A transaction of a few thousand rows
#: amortises its commit (the fsync) while keeping a redo after a crash small.
READ_COUNT: Final = 500
#: A batch smaller than this waits LINGER_S once for more before it is written.
#: Every transaction costs a WAL flush and per-statement overhead, so a
#: persister that keeps pace with the gateway would otherwise commit a few
#: dozen events at a time and spend PostgreSQL's CPU on commits (measured:
#: ~160 us of PostgreSQL CPU per event at ~50-event batches). It only delays
#: the system of record and the watermark, never a lane's decision.
MIN_BATCH: Final = 1000
LINGER_S: Final = 0.05
#: Nothing to read: wait this long before asking again (no blocking read can
#: span the 16 shard streams on a Cluster). Bounds the added latency.
IDLE_SLEEP_S: Final = 0.02
#: A pending entry idle this long belonged to a dead or hung persister and is
#: claimed. Shorter claims a slow persister's work twice (harmless, wasted);
#: longer delays the events of a crashed one.
RECLAIM_IDLE_MS: Final = 30_000
#: Deliveries after which an entry that still cannot be written is dead-lettered.
MAX_DELIVERIES: Final = 5
RECLAIM_EVERY_S: Final = 5.0
#: A transaction of the persister's left idle this long is ended by PostgreSQL (R2).
#: Its statements follow each other within milliseconds; a batch's planning between
#: them takes well under a second even at 8,000 entries.
IDLE_IN_TRANSACTION_MS: Final = 15_000
TRIM_EVERY_S: Final = 10.0
RETRY_MAX_S: Final = 5.0

WRITTEN = Counter("persister_entries_total", "Stream entries handled", ["result"])
BATCH_SECONDS = Histogram("persister_batch_seconds", "Time to write one batch")
WATERMARKS = Counter("persister_watermarks_published_total", "Watermarks published")

_CONNECTION_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.PostgresConnectionError,
)


def _entries(stream: str, items: Sequence[Any] | None) -> list[StreamEntry]:
    found: list[StreamEntry] = []
    for entry_id, fields in items or []:
        if fields is None:  # claimed, but trimmed meanwhile
            continue
        found.append(StreamEntry(stream, store.text(entry_id), fields))
    return found


class Persister:
    def __init__(
        self,
        settings: config.Settings,
        *,
        consumer: str,
        clock: Clock,
        reclaim_idle_ms: int = RECLAIM_IDLE_MS,
        max_deliveries: int = MAX_DELIVERIES,
        crash_after: int | None = None,
        contactless: Callable[[list[str]], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.settings = settings
        self._contactless = contactless
        self._background: set[asyncio.Task[None]] = set()
        self.consumer = consumer
        self.clock = clock
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries
        self.topics = Topics(settings.topic_prefix)
        self.redis = redisclient.connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        username, password = mqtt_identity(settings, "persister")
        self.publisher = Publisher(
            host=settings.mqtt_host,
            port=settings.mqtt_platform_port,
            username=username,
            password=password,
            role="persister",
        )
        self._conn: asyncpg.Connection | None = None
        self._stopping = asyncio.Event()
        self._crash_after = crash_after
        self._written = 0
        self._streams = [keys.events(t) for t in keys.all_lot_tags()]
        # Look for idle entries at least twice per idle timeout, at most every 5 s.
        self._reclaim_every = max(0.1, min(RECLAIM_EVERY_S, reclaim_idle_ms / 2000))

    # ---------------------------------------------------------- connections

    async def _db(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.settings.database_url,
                timeout=10,
                # A persister that hangs inside a transaction (matrix R2: stopped,
                # swapped out, a debugger) would hold the rows it inserted locked,
                # and the persister that claims its entries would wait on them for
                # as long: PostgreSQL ends such a session after this long instead.
                server_settings={
                    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)
                },
            )
        return self._conn

    async def _drop_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.terminate()
        self._conn = None

    async def ensure_groups(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._streams:
            pipe.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
        for reply in await pipe.execute(raise_on_error=False):
            # A cluster's pipeline also returns a lost connection as a value here.
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    # ---------------------------------------------------------- reading

    async def read(self, *, own_pending: bool) -> list[StreamEntry]:
        """New entries of every shard (or this consumer's pending ones)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in self._streams:
            pipe.xreadgroup(
                keys.GROUP,
                self.consumer,
                {stream: "0" if own_pending else ">"},
                count=READ_COUNT,
            )
        found: list[StreamEntry] = []
        replies = await pipe.execute(raise_on_error=False)
        missing_group = False
        for stream, reply in zip(self._streams, replies, strict=True):
            # A cluster's pipeline also returns a lost connection as a value here.
            if isinstance(reply, Exception):
                if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
                    missing_group = True  # Redis lost its state; the rebuild recreates it
                    continue
                raise reply
            for _, items in reply or []:
                found.extend(_entries(stream, items))
        if missing_group:
            await self.ensure_groups()
        return found

    async def reclaim(self) -> list[StreamEntry]:
        """Entries another (dead or hung) persister read but did not acknowledge."""
        found: list[StreamEntry] = []
        for stream in self._streams:
            try:
                reply = await self.redis.xautoclaim(
                    stream,
                    keys.GROUP,
                    self.consumer,
                    min_idle_time=self.reclaim_idle_ms,
                    start_id="0-0",
                    count=READ_COUNT,
                )
            except ResponseError as error:
                if "NOGROUP" in str(error):
                    continue
                raise
            found.extend(_entries(stream, reply[1]))
        if found:
            log.info("reclaimed", entries=len(found))
        return found

    # ---------------------------------------------------------- writing

    async def write(self, entries: list[StreamEntry]) -> None:
        """Write, acknowledge and announce ``entries``; retries until PostgreSQL takes them."""
        if not entries:
            return
        delay = 0.05
        while True:
            started = time.perf_counter()
            try:
                conn = await self._db()
                try:
                    persisted = await persist.persist(conn, entries, self.clock.now())
                except asyncpg.UniqueViolationError:
                    # Two persisters opened sessions of one plate at once: the
                    # second sees the first's row on a retry.
                    await asyncio.sleep(delay)
                    persisted = await self._one_by_one(conn, entries)
                except _CONNECTION_ERRORS:
                    raise
                except asyncpg.PostgresError as error:
                    log.warning("batch_refused", error=str(error), entries=len(entries))
                    persisted = await self._one_by_one(conn, entries)
                BATCH_SECONDS.observe(time.perf_counter() - started)
                break
            except _CONNECTION_ERRORS as error:
                log.warning("postgres_unavailable", error=f"{type(error).__name__}: {error}")
                await self._drop_db()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        self._written += len(persisted.written)
        if self._crash_after is not None and self._written >= self._crash_after:
            # Test hook (matrix R1): die after the commit, before XACK.
            log.warning("crash_hook", written=self._written)
            os.kill(os.getpid(), signal.SIGKILL)
        await self._ack(persisted.written)
        await self._poison(persisted.poison)
        await self._announce(persisted.watermarks)
        WRITTEN.labels("written").inc(len(persisted.written))
        if self._contactless is not None and persisted.bills_opened:
            # Deductions talk to a provider over HTTP: never on the write path.
            # A crash before one runs leaves an ordinary open bill (leave first,
            # pay later), which the driver pays as any other.
            task = asyncio.create_task(self._contactless(persisted.bills_opened))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _one_by_one(
        self, conn: asyncpg.Connection, entries: list[StreamEntry]
    ) -> persist.Persisted:
        written: list[StreamEntry] = []
        poison: list[tuple[StreamEntry, str]] = []
        watermarks: dict[str, tuple[str, int]] = {}
        bills_opened: list[str] = []
        for entry in entries:
            try:
                one = await persist.persist(conn, [entry], self.clock.now())
            except _CONNECTION_ERRORS:
                raise
            except asyncpg.PostgresError as error:
                poison.append((entry, f"{type(error).__name__}: {error}"))
                continue
            written.extend(one.written)
            poison.extend(one.poison)
            watermarks.update(one.watermarks)
            bills_opened.extend(one.bills_opened)
        return persist.Persisted(
            watermarks=watermarks, poison=poison, written=written, bills_opened=bills_opened
        )

    async def _ack(self, entries: Sequence[StreamEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        if not by_stream:
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, keys.GROUP, *ids)
        await pipe.execute()

    async def _poison(self, poison: Sequence[tuple[StreamEntry, str]]) -> None:
        """Dead-letter entries delivered too often; leave the others pending for a retry."""
        doomed: list[tuple[StreamEntry, str]] = []
        for entry, why in poison:
            info = await self.redis.xpending_range(
                entry.stream, keys.GROUP, min=entry.entry_id, max=entry.entry_id, count=1
            )
            deliveries = int(info[0]["times_delivered"]) if info else self.max_deliveries
            if deliveries >= self.max_deliveries:
                doomed.append((entry, why))
            else:
                log.warning("entry_refused", entry=entry.source, why=why, deliveries=deliveries)
        if not doomed:
            return
        rows = [
            (
                entry.source,
                self.clock.now(),
                entry.stream,
                entry.get("d") or None,
                None,
                f"poison stream entry after {self.max_deliveries} deliveries: {why}",
                msgspec.json.encode(
                    {
                        k.decode(errors="replace"): v.decode(errors="replace")
                        for k, v in entry.fields.items()
                    }
                ),
            )
            for entry, why in doomed
        ]
        conn = await self._db()
        async with conn.transaction():
            await records.insert_dead_letters(conn, rows)
        await self._ack([e for e, _ in doomed])
        WRITTEN.labels("poison").inc(len(doomed))
        log.error("poison_dead_lettered", entries=[e.source for e, _ in doomed])

    async def _announce(self, watermarks: dict[str, tuple[str, int]]) -> None:
        if not watermarks:
            return
        pipe = store.Batch()
        for device, (tag, seq) in watermarks.items():
            store.queue_watermark(pipe, tag=tag, device_id=device, seq=seq)
        await pipe.execute(self.redis)
        for device, (_, seq) in watermarks.items():
            self.publisher.publish(
                self.topics.watermark(device), encode(Watermark(seq=seq)), qos=1, retain=True
            )
        WATERMARKS.inc(len(watermarks))

    # ---------------------------------------------------------- housekeeping

    async def trim(self) -> None:
        """Drop entries every persister has acknowledged (the streams would grow forever)."""
        for stream in self._streams:
            try:
                groups = await self.redis.xinfo_groups(stream)
                summary = await self.redis.xpending(stream, keys.GROUP)
            except ResponseError:
                continue
            group = next((g for g in groups if store.text(g.get("name")) == keys.GROUP), None)
            if group is None:
                continue
            floor = store.text(group.get("last-delivered-id"))
            if int(summary.get("pending") or 0) > 0 and summary.get("min") is not None:
                floor = store.text(summary["min"])
            if floor and floor != "0-0":
                await self.redis.xtrim(stream, minid=floor, approximate=True)

    async def _every(self, period: float, what: str, action: Any) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=period)
            if self._stopping.is_set():
                return
            try:
                await action()
            except Exception as error:  # housekeeping must never stop the persister
                log.warning(
                    "housekeeping_failed", task=what, error=f"{type(error).__name__}: {error}"
                )

    async def _loop(self) -> None:
        own = True
        last_reclaim = time.monotonic()
        delay = 0.05
        while not self._stopping.is_set():
            try:
                if time.monotonic() - last_reclaim > self._reclaim_every:
                    last_reclaim = time.monotonic()
                    await self.write(await self.reclaim())
                entries = await self.read(own_pending=own)
                if own and not entries:
                    own = False
                    continue
                if not entries:
                    await asyncio.sleep(IDLE_SLEEP_S)
                    continue
                if len(entries) < MIN_BATCH and not own:
                    await asyncio.sleep(LINGER_S)
                    entries.extend(await self.read(own_pending=False))
                await self.write(entries)
                delay = 0.05
            except (RedisError, OSError) as error:
                log.warning("redis_unavailable", error=f"{type(error).__name__}: {error}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                own = True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self.publisher.start()
        delay = 0.05
        while True:
            try:
                await self.ensure_groups()
                break
            except (RedisError, OSError) as error:
                log.warning("redis_unavailable", error=str(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        log.info("persister_started", consumer=self.consumer, frozen=heap.settle())
        main = asyncio.create_task(self._loop(), name="persister loop")
        trim = asyncio.create_task(self._every(TRIM_EVERY_S, "trim", self.trim))
        try:
            await periodic.until_stopped(self._stopping, [main])
        finally:
            await self._stop(main, trim)

    async def _stop(self, main: asyncio.Task[None], trim: asyncio.Task[None]) -> None:
        # The loop finishes its batch (write, ack) before it looks at _stopping again.
        await asyncio.wait({main}, timeout=15)
        for task in (main, trim):
            task.cancel()
        await asyncio.gather(main, trim, return_exceptions=True)
        self.publisher.stop()
        if self._conn is not None:
            await self._conn.close()
        await self.redis.aclose()
        log.info("persister_stopped")


@click.command()
@click.option(
    "--consumer",
    default=lambda: config.load().persister_consumer,
    show_default="$PARKING_PERSISTER_CONSUMER or persister-1",
    help="consumer name in the streams' group; stable across restarts (a restarted "
    "persister writes its own pending entries first), different for each persister",
)
@click.option(
    "--reclaim-idle-ms",
    type=int,
    default=lambda: config.load().persister_reclaim_idle_ms,
    show_default=f"$PARKING_PERSISTER_RECLAIM_IDLE_MS or {RECLAIM_IDLE_MS}",
    help="claim another persister's pending entries after they were idle this long",
)
@click.option(
    "--max-deliveries",
    type=int,
    default=lambda: config.load().persister_max_deliveries,
    show_default=f"$PARKING_PERSISTER_MAX_DELIVERIES or {MAX_DELIVERIES}",
    help="dead-letter an entry that still cannot be written after this many deliveries",
)
@click.option("--metrics-port", type=int, default=0, help="serve Prometheus metrics (0: off)")
def persister(consumer: str, reclaim_idle_ms: int, max_deliveries: int, metrics_port: int) -> None:
    """Write applied device events to PostgreSQL and publish watermarks (until SIGTERM)."""
    settings = config.load()
    configure_logging(settings.log_level, settings.log_format, process="persister")
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")

    async def main() -> None:
        clock = SystemClock()
        async with httpx.AsyncClient(timeout=10) as http:
            hook = ContactlessHook(
                settings,
                providers=payment_providers.build_providers(settings, http=http, clock=clock),
                clock=clock,
                notify_base_url=settings.notify_base_url,
            )
            try:
                await Persister(
                    settings,
                    consumer=consumer,
                    clock=clock,
                    reclaim_idle_ms=reclaim_idle_ms,
                    max_deliveries=max_deliveries,
                    crash_after=settings.persister_crash_after,
                    contactless=hook,
                ).run()
            finally:
                await hook.close()

    asyncio.run(main())


class ContactlessHook:
    """Asks the provider for a deduction for each new bill whose plate has a mandate (无感支付)."""

    def __init__(
        self,
        settings: config.Settings,
        *,
        providers: Mapping[str, PaymentProvider],
        clock: Clock,
        notify_base_url: str,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.clock = clock
        self.notify_base_url = notify_base_url
        self._pool: asyncpg.Pool | None = None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __call__(self, bill_ids: list[str]) -> None:
        if not self.providers:
            return
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.settings.database_url, min_size=0, max_size=2
            )
        for bill_id in bill_ids:
            try:
                async with self._pool.acquire() as proxy:
                    row = await sessions.stay_of_bill(
                        cast(asyncpg.Connection, proxy), bill_id, review=AnomalyKind.FEE_REVIEW
                    )
                if row is None or row["entry_at"] is None:
                    continue
                if row["needs_review"]:
                    # mqtt.md "Clocks" 4: a stay past the lot's review limits is
                    # never deducted before an operator confirmed it.
                    log.info("contactless_skipped_for_review", bill_id=bill_id)
                    continue
                await payment_contactless.on_bill_opened(
                    self._pool,
                    self.providers,
                    bill_id,
                    entered_at=row["entry_at"],
                    lot_name=row["name"],
                    notify_base_url=self.notify_base_url,
                    now=self.clock.now(),
                )
            except Exception as error:
                log.warning(
                    "contactless_failed", bill_id=bill_id, error=f"{type(error).__name__}: {error}"
                )
