"""Telling every API worker that what a driver account holds has changed, so their copies
(``parking.sessions.mine``) stop answering from what they hold of it.

What an account holds, for this purpose: its live bindings (bind, unbind, a claim
approved for it or against it, a provider confirming the plate, the account
deleted) and the open sessions its scans made (an unplated car scanned in or out,
a space claimed, an operator voiding or ending one). Every writer of those rows
says so, with the account:

- a use case running in its caller's transaction calls `touched` with its
  connection; the edge that owns the transaction (``api.infra.connection``)
  announces what was touched once the transaction committed;
- a use case that commits on its own (the scan flows) calls `announce` after
  its commit.

`announce` drops the accounts from this worker's copy at once (read your
writes), then publishes them on ``accounts:mine``; other workers drop them when
the message arrives, which ``parking.accounts.following`` bounds to 1 s. A
change is announced after its commit, never before: a worker that read the
account while the change was in flight drops what it read when the message
comes.

Outside an edge that collects (a test calling a use case directly, a CLI)
`touched` does nothing: only API workers keep copies, and they go stale only
until their copy's entries expire (``parking.sessions.mine.MAX_AGE_S``), which
also bounds an announcement Redis refused.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from parking.redisline import line_of, pack

log = structlog.get_logger("parking.accounts")

#: Each message: the changed accounts' ids, separated by spaces.
MINE_CHANNEL: Final = "accounts:mine"


class Forgets(Protocol):
    """A worker's copy of what accounts hold (``parking.sessions.mine.MineCopy``)."""

    def forget(self, account_ids: Iterable[str]) -> None: ...


# The copy fed through each Redis client, so a change announced through a client
# is dropped from that worker's copy at once.
_copies: weakref.WeakKeyDictionary[aioredis.Redis, Forgets] = weakref.WeakKeyDictionary()
# Connection (by id, while an edge collects on it) -> the accounts its writes touched.
_collecting: dict[int, set[str]] = {}
# Accounts whose announcement Redis refused: sent again with the next one. Past
# _UNSENT_MAX the rest are left to the copies' expiry.
_unsent: set[str] = set()
_UNSENT_MAX: Final = 10_000


def register(redis: aioredis.Redis, copy: Forgets) -> None:
    _copies[redis] = copy


def unregister(redis: aioredis.Redis, copy: Forgets) -> None:
    if _copies.get(redis) is copy:
        del _copies[redis]


@contextlib.contextmanager
def collected(conn: asyncpg.Connection, accounts: set[str]) -> Iterator[None]:
    """Gather in ``accounts`` those whose holdings the writes on ``conn`` change while the
    block runs (the edge announces them once its transaction committed)."""
    _collecting[id(conn)] = accounts
    try:
        yield
    finally:
        _collecting.pop(id(conn), None)


def touched(conn: asyncpg.Connection, *account_ids: str | None) -> None:
    """The caller's transaction on ``conn`` changes what these accounts hold (bindings,
    or sessions their scans made); announced after it commits."""
    accounts = _collecting.get(id(conn))
    if accounts is not None:
        accounts.update(a for a in account_ids if a)


async def _publish(redis: aioredis.Redis, message: str) -> None:
    """``PUBLISH``, on the API's shared line when the client has one
    (``parking.redisline``: a scan's announcement costs no pool checkout)."""
    line = line_of(redis)
    if line is None:
        await redis.publish(MINE_CHANNEL, message)
        return
    [reply] = await line.execute(pack("PUBLISH", MINE_CHANNEL, message), 1, deadline_s=5.0)
    if isinstance(reply, Exception):
        raise reply


async def announce(redis: aioredis.Redis, account_ids: Iterable[str]) -> None:
    """What these accounts hold changed and is committed: dropped from this worker's copy
    now and from every other worker's within 1 s. Never raises: a publish Redis
    refuses is logged and sent again with the next announcement."""
    accounts = set(account_ids)
    if not accounts:
        return
    copy = _copies.get(redis)
    if copy is not None:
        copy.forget(accounts)
    accounts |= _unsent
    message = " ".join(sorted(accounts))
    for attempt in (1, 2):
        try:
            await _publish(redis, message)
        except (RedisError, OSError) as exc:
            if attempt == 2:
                if len(_unsent) < _UNSENT_MAX:
                    _unsent.update(accounts)
                log.error(
                    "accounts' change not announced",
                    accounts=len(accounts),
                    error=f"{type(exc).__name__}: {exc}",
                )
        else:
            _unsent.difference_update(accounts)
            return
