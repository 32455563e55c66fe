"""Rate limits kept in Redis, so they hold across API workers and replicas.

Algorithm: a sliding-window log. Each (subject, rule) is a sorted set of the
hits of the last window, scored by Redis's own clock (``TIME``), so workers
with skewed clocks agree. A hit is admitted only if every rule of the subject
has room, and then recorded in all of them, in one Lua call: no burst at a
window boundary (a fixed window admits twice the limit across one), and no
race between workers. The log costs one sorted-set member per admitted hit,
which is fine for the small limits of logins (tens per window); a high-volume
limit would want GCRA instead. Refused hits are not recorded, so a client
hammering a closed limit does not push its own reopening further out.

All rules of one subject share a hash tag, so a call touches one Redis
Cluster slot. Several subjects (the client address, then the phone) are
checked one after another: a hit refused by the second still counted against
the first, which is right, because the client did make that attempt.

Responses carry the IETF draft headers (draft-ietf-httpapi-ratelimit-headers-07):
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds until
a slot frees) and ``RateLimit-Policy`` (``<limit>;w=<window seconds>``), for
the rule with the least room left; a 429 adds ``Retry-After``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from litestar.exceptions import ServiceUnavailableException, TooManyRequestsException
from redis.exceptions import RedisError

# KEYS: one sorted set per rule (same hash tag). ARGV: member, then per rule
# limit and window in ms. Returns {admitted, rule index, remaining, reset_ms}
# where the rule is the tightest one (admitted) or the one that refused.
_SLIDING_WINDOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local counts = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local reset = window
    if oldest[2] then reset = tonumber(oldest[2]) + window - now end
    return {0, i, 0, math.max(reset, 1)}
  end
  counts[i] = count
end
local tightest, least, reset_ms = 1, nil, 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
  local remaining = limit - counts[i] - 1
  if least == nil or remaining < least then
    least = remaining
    tightest = i
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    reset_ms = tonumber(oldest[2]) + window - now
  end
end
return {1, tightest, least, math.max(reset_ms, 1)}
"""

# Answer when Redis cannot be asked: refuse (fail closed) rather than let
# login guessing through unlimited, and tell the client when to come back.
_RETRY_AFTER_UNAVAILABLE_S: Final = "5"


@dataclass(frozen=True, slots=True)
class Rule:
    """At most ``limit`` hits per ``window_s`` seconds."""

    name: str
    limit: int
    window_s: int

    @property
    def policy(self) -> str:
        return f"{self.limit};w={self.window_s}"


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    rule: Rule
    remaining: int
    reset_s: int

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.rule.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": self.rule.policy,
        }
        if not self.admitted:
            headers["Retry-After"] = str(self.reset_s)
        return headers


class RateLimiter:
    """Sliding-window limits in Redis (one Lua call per subject)."""

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "rl") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_SLIDING_WINDOW)

    async def hit(self, subject: str, rules: Sequence[Rule]) -> Decision:
        """Count one hit of ``subject`` against every rule; admitted only if all have room."""
        if not rules:
            raise ValueError("a limit needs at least one rule")
        keys = [f"{self._prefix}:{{{subject}}}:{rule.name}" for rule in rules]
        args: list[Any] = [secrets.token_hex(8)]
        for rule in rules:
            args += [rule.limit, rule.window_s * 1000]
        try:
            reply = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise ServiceUnavailableException(
                detail="rate limits cannot be checked right now",
                headers={"Retry-After": _RETRY_AFTER_UNAVAILABLE_S},
            ) from exc
        admitted, index, remaining, reset_ms = (int(v) for v in reply)
        return Decision(
            admitted=bool(admitted),
            rule=rules[index - 1],
            remaining=max(remaining, 0),
            reset_s=max(1, math.ceil(reset_ms / 1000)),
        )

    async def enforce(self, checks: Sequence[tuple[str, Sequence[Rule]]]) -> Decision:
        """Hit each (subject, rules) in order; raise 429 at the first refusal.

        Returns the admitted decision with the least room left (for headers).
        """
        tightest: Decision | None = None
        for subject, rules in checks:
            decision = await self.hit(subject, rules)
            if not decision.admitted:
                raise TooManyRequestsException(
                    detail=(
                        f"too many requests ({decision.rule.name}: {decision.rule.limit} per "
                        f"{decision.rule.window_s} s); retry in {decision.reset_s} s"
                    ),
                    headers=decision.headers,
                )
            if tightest is None or decision.remaining < tightest.remaining:
                tightest = decision
        assert tightest is not None
        return tightest
