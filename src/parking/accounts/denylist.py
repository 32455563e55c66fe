"""A worker's copy of the access-token denylist, kept current over Redis pub/sub.

Every authenticated request must know whether its token was revoked (logout,
refresh-token reuse). Asking Redis costs a round trip per request; this copy
answers from memory, and falls back to asking Redis whenever it cannot vouch
for being current.

How it stays current (the writer's side is `store.deny`; the following, PINGs
and reconnecting are `parking.accounts.following`'s):

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

import contextlib
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final

import redis.asyncio as aioredis

from parking.accounts import store
from parking.accounts.following import DEAD_AFTER_S, MAX_LAG_S, PING_EVERY_S, ChannelCopy

__all__ = ["DEAD_AFTER_S", "MAX_LAG_S", "PING_EVERY_S", "DenylistMirror", "mirror_of"]

#: Expired entries are dropped every this many PINGs (30 s).
_PRUNE_EVERY: Final = 150

# The copy of each Redis client, so the service that writes a revocation
# through a client marks it in that worker's copy at once (read your writes).
_copies: weakref.WeakKeyDictionary[aioredis.Redis, DenylistMirror] = weakref.WeakKeyDictionary()


def mirror_of(redis: aioredis.Redis) -> DenylistMirror | None:
    """The running copy fed through this client, if any."""
    return _copies.get(redis)


class DenylistMirror(ChannelCopy):
    """One worker's copy of the denylist (token id -> expiry, epoch seconds)."""

    channel = store.DENYLIST_CHANNEL
    what = "denylist copy"

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
        super().__init__(
            redis,
            max_lag_s=max_lag_s,
            ping_every_s=ping_every_s,
            dead_after_s=dead_after_s,
            clock=clock,
        )
        self._wall = wall
        self._denied: dict[str, float] = {}

    def verdict(self, jti: str) -> bool | None:
        """True: revoked. False: not revoked (the copy is current). None: ask Redis."""
        if jti in self._denied:
            return True
        if self._clock() - self._current_as_of < self._max_lag_s:
            return False
        return None

    def note(self, entries: Iterable[tuple[str, float]]) -> None:
        """Entries (token id, expiry in epoch seconds) this worker is revoking now."""
        for jti, expires_at in entries:
            self._denied[jti] = max(expires_at, self._denied.get(jti, 0.0))

    def __len__(self) -> int:
        return len(self._denied)

    async def run(self) -> None:
        _copies[self._redis] = self
        try:
            await super().run()
        finally:
            if _copies.get(self._redis) is self:
                del _copies[self._redis]

    async def _load(self) -> None:
        entries = await store.denied_entries(
            self._redis, now=datetime.fromtimestamp(self._wall(), UTC)
        )
        self._denied = {jti: ms / 1000 for jti, ms in entries} | self._denied

    def _apply(self, data: str) -> None:
        expires_ms, _, jti = data.partition(":")
        with contextlib.suppress(ValueError):
            self.note([(jti, int(expires_ms) / 1000)])

    def _tick(self, seq: int) -> None:
        if seq % _PRUNE_EVERY == 0:
            now = self._wall()
            self._denied = {jti: at for jti, at in self._denied.items() if at > now}
