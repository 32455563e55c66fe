"""The API's connections, opened once per worker in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final, TypeVar, cast

import asyncpg
import httpx
import redis.asyncio as aioredis
import structlog
from litestar import Litestar
from prometheus_client import Counter

from parking import heap, redisclient
from parking.accounts import changes
from parking.accounts import notifier as notifiers
from parking.accounts.denylist import DenylistMirror
from parking.clock import Clock, SystemClock
from parking.config import Settings, mqtt_identity
from parking.devices.mqtt import Publisher
from parking.payments import providers as payment_providers
from parking.payments.port import PaymentProvider
from parking.redisline import close_line, open_line
from parking.sessions.mine import MineCopy


@dataclass(slots=True)
class Infra:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    publisher: Publisher
    #: the app's one clock (``create_app(clock=...)``, also on ``app.state.clock``)
    clock: Clock = field(default_factory=SystemClock)
    #: payment provider adapters by name, built once (parking.payments.providers.build_providers)
    providers: dict[str, PaymentProvider] = field(default_factory=dict)
    #: the public URL providers post notifications to ($PARKING_NOTIFY_BASE_URL)
    notify_base_url: str = ""
    #: this worker's copy of the access-token denylist (parking.accounts.denylist)
    denylist: DenylistMirror | None = None
    #: this worker's copy of what driver accounts hold (parking.sessions.mine)
    mine: MineCopy | None = None
    #: how login codes reach drivers ($PARKING_NOTIFIER, parking.accounts.notifier)
    notifier: notifiers.Notifier | None = None
    #: the wall clock a provider signature's freshness is checked against (``clock``
    #: unless ``create_app(signature_clock=...)``)
    signature_clock: Clock | None = None
    #: the streaming replica's pool ($PARKING_REPLICA_DATABASE_URL), for `on_replica`
    replica: asyncpg.Pool | None = None

    @property
    def wall_clock(self) -> Clock:
        return self.signature_clock or self.clock


log = structlog.get_logger("parking.api")

T = TypeVar("T")

#: How long a read waits for a replica connection before it goes to the primary.
REPLICA_WAIT_S: Final = 1.0
_REPLICA_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

REPLICA_READS = Counter(
    "parking_replica_reads_total",
    "Dashboard reads by where they ran: replica, or primary because the replica failed",
    ["served_by"],
)


async def on_replica(infra: Infra, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``read(conn)`` on the streaming replica when there is one and it answers, else on
    the primary: the dashboard's figures (a replica a few seconds behind is fine for
    them) keep the primary free for the cars, and a replica that is down or lagging
    out of reach costs nothing but the retry. ``read`` must only read."""
    if infra.replica is not None:
        try:
            async with infra.replica.acquire(timeout=REPLICA_WAIT_S) as proxy:
                answer = await read(cast(asyncpg.Connection, proxy))
            REPLICA_READS.labels("replica").inc()
            return answer
        except _REPLICA_ERRORS as exc:
            REPLICA_READS.labels("primary").inc()
            log.warning("replica_unavailable", error=f"{type(exc).__name__}: {exc}")
    async with connection(infra) as conn:
        return await read(conn)


@asynccontextmanager
async def connection(
    infra: Infra, *, transaction: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection typed as a Connection (the pool's proxy forwards every call);
    with ``transaction=True`` the block is one transaction, committed on success.

    Accounts whose holdings the block's writes changed (``accounts.changes.touched``)
    are announced to every worker once it committed, before the route answers."""
    touched: set[str] = set()
    done = False
    try:
        async with infra.pool.acquire() as proxy:
            conn = cast(asyncpg.Connection, proxy)
            with changes.collected(conn, touched):
                if transaction:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
            done = True
    finally:
        # A block that failed rolled its transaction back: nothing to announce
        # (without a transaction, what it wrote stays written).
        if touched and (done or not transaction):
            await changes.announce(infra.redis, touched)


def infra_of(app: Litestar) -> Infra:
    infra: Infra = app.state.infra
    return infra


async def _session_kept(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the API's pool.

    asyncpg's default reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`` on every release: a round trip per request (about a
    third of PostgreSQL's CPU on the driver's current-session read). The API
    never leaves session state behind: no SET, no LISTEN (the owed-plates
    listener has its own connection), no session-level advisory locks (only
    pg_advisory_xact_lock), no WITH HOLD cursors. asyncpg still rolls back a
    transaction left open before calling this. Code that needs session state
    takes its own connection, not the pool.
    """


def lifespan_for(  # type: ignore[no-untyped-def]
    settings: Settings, clock: Clock, signature_clock: Clock | None = None
):
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The pool is created lazily-tolerant: min_size=0 lets the API start (and
        # answer /healthz, and 503 on /readyz) while PostgreSQL is still down.
        # First: a notifier that may not run here stops the API before it opens anything.
        notifier = notifiers.from_settings(settings)
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=0,
            max_size=10,
            command_timeout=10,
            reset=_session_kept,
        )
        replica = (
            await asyncpg.create_pool(
                settings.replica_database_url,
                min_size=0,
                max_size=4,
                command_timeout=10,
                # a replica that went away is noticed on the next read, not kept
                max_inactive_connection_lifetime=30,
            )
            if settings.replica_database_url
            else None
        )
        client = redisclient.connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            socket_timeout=2,
            socket_connect_timeout=2,
            health_check_interval=30,
        )
        mqtt_username, mqtt_password = mqtt_identity(settings, "api")
        publisher = Publisher(
            host=settings.mqtt_host,
            port=settings.mqtt_platform_port,
            username=mqtt_username,
            password=mqtt_password,
            role="api",
        )
        publisher.start()
        # Short reads of the hot routes share one connection (parking.redisline); a
        # cluster's client routes them by slot through its nodes' pools instead.
        if not settings.redis_cluster:
            open_line(client)
        denied = DenylistMirror(client)
        denied.start()
        held = MineCopy(client)
        held.start()
        # Provider calls go to configured hosts only: no proxies from the
        # environment, no redirects.
        payments_http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        app.state.infra = Infra(
            settings=settings,
            pool=pool,
            redis=client,
            publisher=publisher,
            clock=clock,
            providers=payment_providers.build_providers(
                settings, http=payments_http, clock=signature_clock or clock
            ),
            notify_base_url=settings.notify_base_url,
            denylist=denied,
            mine=held,
            notifier=notifier,
            signature_clock=signature_clock,
            replica=replica,
        )
        # What the worker loaded stays for its lifetime: out of the collector's walks.
        heap.settle()
        try:
            yield
        finally:
            await held.stop()
            await denied.stop()
            await payments_http.aclose()
            publisher.stop()
            close_line(client)
            await client.aclose()
            await asyncio.wait_for(pool.close(), timeout=10)
            if replica is not None:
                await asyncio.wait_for(replica.close(), timeout=10)

    return lifespan
