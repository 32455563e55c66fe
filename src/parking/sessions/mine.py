"""What a driver account holds, and a worker's copy of it kept current over pub/sub.

The app's home screen (``parking.occupancy.stays``) asks on every request which
stays are the driver's: those of its verified plates since it bound them
(``accounts.service.my_plates``) and the open sessions its scans made. Reading
them costs a PostgreSQL round trip a request; a `MineCopy` keeps them per
account in the worker's memory and answers from there while it can vouch for
them, and from PostgreSQL otherwise.

How it stays current: every writer of those rows announces the account after
its commit (``parking.accounts.changes``); the copy follows ``accounts:mine``
and drops an account when a message names it. It vouches for itself by the rule
of ``parking.accounts.following``: only while the last PING answered on its
subscription was sent less than 1 s ago. A read of PostgreSQL is kept only when
no message named the account while it ran and the subscription stayed up from
before it began, so a read that raced a change is never kept.

The bound: a change acknowledged at ``t`` - an unbind, a plate moved away by a
claim, a session ended - is seen by every worker answering after ``t + 1 s``
(normally within milliseconds), by the worker that made it at once. An entry
is also read again after ``MAX_AGE_S``, which bounds the one case the
messages cannot: an announcement Redis refused while still answering the
copies' PINGs (logged as an error by ``accounts.changes``).
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final, NamedTuple, cast

import asyncpg
import redis.asyncio as aioredis

from parking.accounts import changes
from parking.accounts import service as accounts
from parking.accounts.following import DEAD_AFTER_S, MAX_LAG_S, PING_EVERY_S, ChannelCopy
from parking.accounts.model import Binding
from parking.sessions import service as sessions

#: Accounts kept per worker; beyond it the least recently asked is dropped.
MAX_ACCOUNTS: Final = 20_000
#: An entry is read again this long after it was read, whatever the messages said.
MAX_AGE_S: Final = 30.0

# The running copy of each Redis client (one per API worker).
_copies: weakref.WeakKeyDictionary[aioredis.Redis, MineCopy] = weakref.WeakKeyDictionary()


def copy_of(redis: aioredis.Redis) -> MineCopy | None:
    """The running copy fed through this client, if any."""
    return _copies.get(redis)


class Made(NamedTuple):
    """An open session the account's scans made (an unplated car's, a space claimed)."""

    id: str
    lot_id: str
    plate: str | None
    entry_at: datetime


class Mine(NamedTuple):
    """An account's verified bindings (plate -> binding) and open sessions its scans made."""

    held: dict[str, Binding]
    made: tuple[Made, ...]


async def read(conn: asyncpg.Connection, account_id: str) -> Mine:
    """What the account holds now, from PostgreSQL (two indexed reads)."""
    held = {b.plate: b for b in await accounts.my_plates(conn, account_id)}
    made = tuple(
        Made(id=r["id"], lot_id=r["lot_id"], plate=r["plate"], entry_at=r["entry_at"])
        for r in await sessions.made_by(conn, account_id)
    )
    return Mine(held=held, made=made)


async def _read_pooled(pool: asyncpg.Pool, account_id: str) -> Mine:
    async with pool.acquire() as proxy:
        return await read(cast(asyncpg.Connection, proxy), account_id)


class MineCopy(ChannelCopy):
    """One worker's copy: account -> (when read, what it holds), least recently asked first."""

    channel = changes.MINE_CHANNEL
    what = "accounts' copy"

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        max_accounts: int = MAX_ACCOUNTS,
        max_age_s: float = MAX_AGE_S,
        max_lag_s: float = MAX_LAG_S,
        ping_every_s: float = PING_EVERY_S,
        dead_after_s: float = DEAD_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            redis,
            max_lag_s=max_lag_s,
            ping_every_s=ping_every_s,
            dead_after_s=dead_after_s,
            clock=clock,
        )
        self._max_accounts = max_accounts
        self._max_age_s = max_age_s
        self._held: OrderedDict[str, tuple[float, Mine]] = OrderedDict()
        # account -> its read in flight, shared by the requests asking meanwhile
        # (dropped by a message naming the account: that read is then not kept,
        # and later requests read again)
        self._reading: dict[str, asyncio.Future[Mine]] = {}
        # Counts subscriptions: a read that began under an earlier one may have
        # missed a message and is not kept.
        self._subscription = 0

    def __len__(self) -> int:
        return len(self._held)

    async def mine(self, pool: asyncpg.Pool, account_id: str) -> Mine:
        """What the account holds: from the copy while it vouches for itself and holds
        the account, else read from PostgreSQL (and kept when that is safe). Requests
        for an account being read share that read."""
        began = self._clock()
        if began - self._current_as_of >= self._max_lag_s:
            return await _read_pooled(pool, account_id)
        found = self._held.get(account_id)
        if found is not None and began - found[0] < self._max_age_s:
            self._held.move_to_end(account_id)
            return found[1]
        reading = self._reading.get(account_id)
        if reading is None:
            reading = asyncio.ensure_future(_read_pooled(pool, account_id))
            self._reading[account_id] = reading
            reading.add_done_callback(
                functools.partial(self._settle, account_id, began, self._subscription)
            )
        # Shielded: one request cancelled (its client gone) does not cancel the read
        # the others wait for.
        return await asyncio.shield(reading)

    def _settle(
        self, account_id: str, began: float, subscription: int, reading: asyncio.Future[Mine]
    ) -> None:
        """Keep a read that finished, unless a message named the account while it ran
        or the subscription was lost meanwhile (it may have missed one)."""
        if self._reading.get(account_id) is not reading:
            return
        del self._reading[account_id]
        if reading.cancelled() or reading.exception() is not None:
            return
        if subscription != self._subscription:
            return
        self._held[account_id] = (began, reading.result())
        self._held.move_to_end(account_id)
        while len(self._held) > self._max_accounts:
            self._held.popitem(last=False)

    def forget(self, account_ids: Iterable[str]) -> None:
        """These accounts changed: drop them, and any read of them in flight."""
        for account_id in account_ids:
            self._held.pop(account_id, None)
            self._reading.pop(account_id, None)

    async def run(self) -> None:
        _copies[self._redis] = self
        changes.register(self._redis, self)
        try:
            await super().run()
        finally:
            changes.unregister(self._redis, self)
            if _copies.get(self._redis) is self:
                del _copies[self._redis]

    async def _load(self) -> None:
        # Nothing held survives a new subscription: messages may have been
        # missed in between. Accounts are read again as they are asked for.
        self._drop_all()

    def _apply(self, data: str) -> None:
        self.forget(data.split())

    def _lost(self) -> None:
        super()._lost()
        self._drop_all()

    def _drop_all(self) -> None:
        self._subscription += 1
        self._held.clear()
        self._reading.clear()
