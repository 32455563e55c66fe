"""What a worker's copy of accounts' holdings keeps and when it reads PostgreSQL instead
(parking.sessions.mine). Following Redis is tested against the real Redis in
tests/integration/auth_perf."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest
import redis.asyncio as aioredis

from parking.accounts.model import Binding
from parking.sessions import mine
from parking.sessions.mine import Mine, MineCopy


class Pool:
    """Stands for the pool: hands out a connection the patched `mine.read` ignores."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        yield object()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The accounts read from "PostgreSQL"; each read holds one plate bound at a new time."""
    accounts: list[str] = []

    async def read(_conn: Any, account_id: str) -> Mine:
        accounts.append(account_id)
        await asyncio.sleep(0)
        at = datetime.fromtimestamp(len(accounts), UTC)
        return Mine(
            held={"赣B12345": Binding(plate="赣B12345", bound_at=at, verified_at=at)}, made=()
        )

    monkeypatch.setattr(mine, "read", read)
    return accounts


def vouching(clock: Clock, **options: Any) -> MineCopy:
    copy = MineCopy(aioredis.Redis(), clock=clock, **options)
    # As if a PING sent just now was answered (following Redis is not this test's).
    copy._current_as_of = clock.now
    return copy


def pool() -> asyncpg.Pool:
    return cast(asyncpg.Pool, Pool())


async def test_a_copy_that_never_followed_reads_every_time(reads: list[str]) -> None:
    copy = MineCopy(aioredis.Redis())
    assert not copy.current
    for _ in range(3):
        await copy.mine(pool(), "acc-1")
    assert reads == ["acc-1"] * 3
    assert len(copy) == 0


async def test_a_vouching_copy_reads_an_account_once(reads: list[str]) -> None:
    copy = vouching(Clock())
    first = await copy.mine(pool(), "acc-1")
    assert await copy.mine(pool(), "acc-1") is first
    assert reads == ["acc-1"]


async def test_a_copy_that_stopped_vouching_reads_again(reads: list[str]) -> None:
    clock = Clock()
    copy = vouching(clock)
    await copy.mine(pool(), "acc-1")
    clock.now += 1.0  # the last answered PING is a second old
    await copy.mine(pool(), "acc-1")
    assert reads == ["acc-1", "acc-1"]


async def test_an_account_named_in_a_message_is_read_again(reads: list[str]) -> None:
    copy = vouching(Clock())
    await copy.mine(pool(), "acc-1")
    await copy.mine(pool(), "acc-2")
    copy._apply("acc-1 acc-9")  # a message on accounts:mine
    await copy.mine(pool(), "acc-1")
    await copy.mine(pool(), "acc-2")
    assert reads == ["acc-1", "acc-2", "acc-1"]


async def test_a_read_raced_by_a_change_is_not_kept(reads: list[str]) -> None:
    copy = vouching(Clock())
    reading = asyncio.create_task(copy.mine(pool(), "acc-1"))
    await asyncio.sleep(0)  # the read has begun
    copy.forget(["acc-1"])
    await reading
    assert len(copy) == 0


async def test_a_read_across_a_lost_subscription_is_not_kept(reads: list[str]) -> None:
    copy = vouching(Clock())
    reading = asyncio.create_task(copy.mine(pool(), "acc-1"))
    await asyncio.sleep(0)
    copy._lost()  # the subscription dropped: messages may be missed
    copy._current_as_of = 100.0  # and is back, vouching
    await reading
    assert len(copy) == 0


async def test_requests_for_an_account_being_read_share_the_read(reads: list[str]) -> None:
    copy = vouching(Clock())
    answers = await asyncio.gather(*(copy.mine(pool(), "acc-1") for _ in range(5)))
    assert reads == ["acc-1"]
    assert all(answer is answers[0] for answer in answers)


async def test_a_request_after_a_change_does_not_share_the_read_before_it(
    reads: list[str],
) -> None:
    copy = vouching(Clock())
    before = asyncio.create_task(copy.mine(pool(), "acc-1"))
    await asyncio.sleep(0)
    copy.forget(["acc-1"])
    after = await copy.mine(pool(), "acc-1")
    assert after is not await before
    assert reads == ["acc-1", "acc-1"]
    assert len(copy) == 1  # the read begun after the change


async def test_an_entry_is_read_again_once_old(reads: list[str]) -> None:
    clock = Clock()
    copy = vouching(clock, max_age_s=30.0, max_lag_s=1000.0)
    await copy.mine(pool(), "acc-1")
    clock.now += 29.0
    await copy.mine(pool(), "acc-1")
    clock.now += 2.0
    await copy.mine(pool(), "acc-1")
    assert reads == ["acc-1", "acc-1"]


async def test_the_least_recently_asked_account_goes_first(reads: list[str]) -> None:
    copy = vouching(Clock(), max_accounts=2)
    for account in ("acc-1", "acc-2", "acc-1", "acc-3", "acc-1", "acc-2"):
        await copy.mine(pool(), account)
    assert reads == ["acc-1", "acc-2", "acc-3", "acc-2"]


def test_a_client_without_a_running_copy_has_none() -> None:
    assert mine.copy_of(aioredis.Redis()) is None
