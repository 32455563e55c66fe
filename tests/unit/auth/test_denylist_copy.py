"""What a worker's copy of the denylist answers before it has vouched for itself.

Following Redis (subscription, index, PINGs) is tested against the real Redis
in tests/integration/auth_perf.
"""

from __future__ import annotations

import inspect

import redis.asyncio as aioredis

from parking.accounts.denylist import DenylistMirror, mirror_of
from parking.api.auth import roles
from parking.auth.model import Role


def test_a_copy_that_never_loaded_cannot_say_a_token_is_not_revoked() -> None:
    copy = DenylistMirror(aioredis.Redis())
    assert copy.verdict("some-jti") is None
    assert not copy.current


def test_a_token_this_worker_revoked_is_refused_even_before_the_copy_is_current() -> None:
    copy = DenylistMirror(aioredis.Redis())
    copy.note([("jti-1", 4_102_444_800.0)])
    assert copy.verdict("jti-1") is True
    assert copy.verdict("jti-2") is None


def test_a_client_without_a_running_copy_has_none() -> None:
    assert mirror_of(aioredis.Redis()) is None


def test_the_role_guard_runs_on_the_event_loop_not_in_a_thread() -> None:
    # Litestar runs a plain-function guard through sync_to_thread.
    assert inspect.iscoroutinefunction(roles(Role.DRIVER))
