"""A worker's copy of the access-token denylist, kept current over Redis pub/sub.

Every authenticated request must know whether its token was revoked (logout,
refresh-token reuse). Asking Redis costs a round trip per request; this copy
answers from memory, and falls back to asking Redis whenever it cannot vouch
for being current.

How it stays current (the writer's side is `store.deny`):

1. `store.deny` writes each entry to its key, then to the index
   (``auth:denylist``, a sorted set by expiry), then publishes it, in that order
   on one connection; a revocation is acknowledged only once all three ran.
2. The copy subscribes first, then loads the index: a revocation acknowledged
   before the load is in the index; one published after the subscription
   arrives as a message. Loading is O(revocations of the last 15 minutes),
   never a scan of the keyspace.
3. It sends PING on its subscription every ``ping_every_s``. Redis answers a
   connection in order, so when the PONG of a PING sent at ``t`` arrives, every
   revocation acknowledged before ``t`` has been applied here.

`verdict` answers "not revoked" only while the last answered PING was sent
less than ``max_lag_s`` ago (1 s). Otherwise - not loaded yet, Redis slow or
gone, the event loop stalled - it answers "cannot tell" and the caller asks
Redis as before (and a Redis that does not answer is a 503, fail closed).

The bound: a revocation acknowledged at ``t`` is refused by every worker for
requests authenticated after ``t + max_lag_s``, normally within a millisecond;
by the worker that made it at once (`note`, called by the service before it
writes to Redis). Between ``t`` and that bound another worker may still admit
the token, the same window a request already past authentication has.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking.accounts import store

log = structlog.get_logger("parking.accounts")

#: How stale the copy may be and still answer alone: the promised bound for a
#: revocation to reach every worker. Each PING answered in time renews it.
MAX_LAG_S: Final = 1.0
#: Five PINGs per bound: a PONG late by a few event-loop stalls keeps the copy usable.
PING_EVERY_S: Final = 0.2
#: No PONG for this long and the subscription is taken for dead and reopened.
DEAD_AFTER_S: Final = 3.0
_RETRY_FIRST_S: Final = 0.1
_RETRY_MAX_S: Final = 5.0
#: Expired entries are dropped every this many PINGs (30 s).
_PRUNE_EVERY: Final = 150

# The copy of each Redis client, so the service that writes a revocation
# through a client marks it in that worker's copy at once (read your writes).
_copies: weakref.WeakKeyDictionary[aioredis.Redis, DenylistMirror] = weakref.WeakKeyDictionary()


def mirror_of(redis: aioredis.Redis) -> DenylistMirror | None:
    """The running copy fed through this client, if any."""
    return _copies.get(redis)


class DenylistMirror:
    """One worker's copy of the denylist (token id -> expiry, epoch seconds)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_lag_s: float = MAX_LAG_S,
        ping_every_s: float = PING_EVERY_S,
        dead_after_s: float = DEAD_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._max_lag_s = max_lag_s
        self._ping_every_s = ping_every_s
        self._dead_after_s = dead_after_s
        self._clock = clock
        self._wall = wall
        self._denied: dict[str, float] = {}
        # When the last PING answered was sent (clock): everything acknowledged
        # before it is in _denied. -inf: the copy cannot vouch for anything.
        self._current_as_of = -math.inf
        self._pings: dict[int, float] = {}
        self._last_pong = -math.inf
        self._retry_s = _RETRY_FIRST_S
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the channel in a task of the running loop until `stop`."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="denylist-copy")

    async def stop(self) -> None:
        """Stop following; the copy then answers "cannot tell" for every token not noted."""
        task, self._task = self._task, None
        if task is None:
            return
        # redis-py can swallow a cancellation that lands in a connection's
        # handshake (the task is left "cancelling" and runs on): ask again until
        # the task has ended.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)

    def verdict(self, jti: str) -> bool | None:
        """True: revoked. False: not revoked (the copy is current). None: ask Redis."""
        if jti in self._denied:
            return True
        if self._clock() - self._current_as_of < self._max_lag_s:
            return False
        return None

    @property
    def current(self) -> bool:
        return self._clock() - self._current_as_of < self._max_lag_s

    def note(self, entries: Iterable[tuple[str, float]]) -> None:
        """Entries (token id, expiry in epoch seconds) this worker is revoking now."""
        for jti, expires_at in entries:
            self._denied[jti] = max(expires_at, self._denied.get(jti, 0.0))

    def __len__(self) -> int:
        return len(self._denied)

    async def run(self) -> None:
        """Follow the channel until cancelled, reopening the subscription when it fails."""
        _copies[self._redis] = self
        try:
            while True:
                try:
                    await self._follow()
                except (RedisError, OSError) as exc:
                    log.warning(
                        "denylist copy lost its subscription", error=f"{type(exc).__name__}: {exc}"
                    )
                except Exception:
                    # A bug here must not end the task: requests would then ask
                    # Redis for ever, silently. Log it loudly and start over.
                    log.exception("denylist copy failed")
                self._lost()
                _honour_cancellation()
                await asyncio.sleep(self._retry_s)
                self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)
        finally:
            self._lost()
            if _copies.get(self._redis) is self:
                del _copies[self._redis]

    def _lost(self) -> None:
        self._current_as_of = -math.inf
        self._last_pong = -math.inf
        self._pings.clear()

    async def _follow(self) -> None:
        # A connection of its own, outside the pool: a subscribed connection
        # cannot run other commands, and redis-py's PubSub would reconnect
        # silently, losing what was published meanwhile without telling us.
        conn = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()
            _honour_cancellation()
            await conn.send_command("SUBSCRIBE", store.DENYLIST_CHANNEL, check_health=False)
            reply = await conn.read_response(timeout=self._dead_after_s, push_request=True)
            if not (isinstance(reply, list) and reply and _text(reply[0]) == "subscribe"):
                raise RedisError(f"unexpected reply to SUBSCRIBE: {reply!r}")
            loading_from = self._clock()
            entries = await store.denied_entries(
                self._redis, now=datetime.fromtimestamp(self._wall(), UTC)
            )
            _honour_cancellation()
            self._denied = {jti: ms / 1000 for jti, ms in entries} | self._denied
            self._current_as_of = loading_from
            self._last_pong = loading_from
            self._retry_s = _RETRY_FIRST_S
            reader = asyncio.create_task(self._read(conn))
            pinger = asyncio.create_task(self._ping(conn))
            try:
                done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                raise RedisError("denylist subscription ended")
            finally:
                for task in (reader, pinger):
                    task.cancel()
                await asyncio.gather(reader, pinger, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def _read(self, conn: Any) -> None:
        # Messages are push replies under RESP3 (redis-py's default) and plain
        # arrays under RESP2; a PING's answer is its argument under RESP3 and
        # ["pong", argument] under RESP2. Either way Redis keeps them in order.
        while True:
            reply = await conn.read_response(timeout=math.inf, push_request=True)
            if isinstance(reply, bytes | str):
                self._answered(_text(reply))
                continue
            if not isinstance(reply, list) or not reply:
                continue
            kind = _text(reply[0])
            if kind == "message" and len(reply) == 3:
                expires_ms, _, jti = _text(reply[2]).partition(":")
                with contextlib.suppress(ValueError):
                    self.note([(jti, int(expires_ms) / 1000)])
            elif kind == "pong" and len(reply) == 2:
                self._answered(_text(reply[1]))

    def _answered(self, text: str) -> None:
        try:
            seq = int(text)
        except ValueError:
            return
        sent = self._pings.pop(seq, None)
        if sent is None:
            return
        for older in [s for s in self._pings if s < seq]:
            del self._pings[older]
        self._current_as_of = max(self._current_as_of, sent)
        self._last_pong = self._clock()

    async def _ping(self, conn: Any) -> None:
        seq = 0
        while True:
            _honour_cancellation()
            seq += 1
            self._pings[seq] = self._clock()
            await conn.send_command("PING", str(seq), check_health=False)
            await asyncio.sleep(self._ping_every_s)
            if self._clock() - self._last_pong > self._dead_after_s:
                raise RedisError(f"no PONG on the denylist subscription for {self._dead_after_s} s")
            if seq % _PRUNE_EVERY == 0:
                now = self._wall()
                self._denied = {jti: at for jti, at in self._denied.items() if at > now}


def _honour_cancellation() -> None:
    """Raise if this task was asked to stop while redis-py had it (see `stop`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
