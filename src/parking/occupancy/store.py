"""Access to the occupancy core (Redis functions) and its tables (PostgreSQL). No decisions.

Kept whole (over 600 lines): every Redis call of the core sits here, one per Lua
function or key, read beside ``lua/occupancy.lua`` and ``keys.py``.

Redis calls are queued on a `Batch` by the ``queue_*`` functions and sent in
one round trip by the caller: the gateway applies a whole batch of events with
one `Batch` per phase. Each queued call is one single-slot function call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)

from parking.occupancy import keys
from parking.occupancy.model import LiveCount
from parking.redisclient import ClusterUnavailable, cluster_of
from parking.redisline import Reply, line_of

LIBRARY: Final = (
    resources.files("parking.occupancy").joinpath("lua/occupancy.lua").read_text("utf-8")
)

Arg = bytes | str | int


class Batch:
    """Commands packed once (RESP) and sent in one write; replies read back in order.

    redis-py's pipeline encodes every argument through several Python layers and
    arms a timer per reply, about 60 us for one 26-argument FCALL: more than
    Redis spends running it. Here a command is packed with a few bytes joins, and
    one deadline covers the whole round trip (a stalled Redis fails the batch,
    matrix R6). Error replies come back as `ResponseError` values, not raised.

    On a Redis Cluster (`parking.redisclient`) the commands are grouped by the node
    serving their key's slot, each group sent in one write to its node, all groups
    at once; the replies come back in the order the commands were queued.
    """

    __slots__ = ("_parts", "_routes", "_starts", "count")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        #: per command: where its parts start, and the key that routes it on a cluster
        self._starts: list[int] = []
        self._routes: list[str | bytes] = []
        self.count = 0

    def command(self, *args: Arg) -> None:
        parts = self._parts
        self._starts.append(len(parts))
        name = args[0]
        route = args[3] if name in ("FCALL", "FCALL_RO") else args[1]
        self._routes.append(route if isinstance(route, str | bytes) else str(route))
        parts.append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode("utf-8")
            elif isinstance(arg, int):
                arg = b"%d" % arg
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        self.count += 1

    def fcall(self, function: str, keys_: list[str], *args: Arg) -> None:
        self.command("FCALL", function, len(keys_), *keys_, *args)

    def fcall_packed(self, head: PackedHead, *args: Arg) -> None:
        """FCALL whose name and keys were packed once (`packed_head`), followed by ``args``."""
        parts = self._parts
        self._starts.append(len(parts))
        self._routes.append(head.key)
        parts.append(b"*%d\r\n" % (head.nargs + len(args)))
        parts.append(head.data)
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode("utf-8")
            elif isinstance(arg, int):
                arg = b"%d" % arg
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
        self.count += 1

    async def execute(self, redis: aioredis.Redis, *, deadline_s: float = 10.0) -> list[Reply]:
        if not self.count:
            return []
        cluster = cluster_of(redis)
        if cluster is not None:
            return await self._on_cluster(cluster, deadline_s)
        pool = redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(deadline_s):
                await conn.send_packed_command(b"".join(self._parts), check_health=False)
                replies: list[Reply] = []
                for _ in range(self.count):
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as error:
                        replies.append(error)
        except BaseException:
            # Replies may be left unread on this connection: never reuse it.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return replies

    async def shared(self, redis: aioredis.Redis, *, deadline_s: float = 2.0) -> list[Reply]:
        """The same round trip on the client's shared connection when it has one
        (``parking.redisline``, the API's workers: no pool checkout, replies parsed as
        they arrive), else through its pool. For commands that answer at once only
        (never a blocking read)."""
        line = line_of(redis)
        if line is None:
            return await self.execute(redis, deadline_s=deadline_s)
        return await line.execute(b"".join(self._parts), self.count, deadline_s=deadline_s)

    def _command_bytes(self, index: int) -> bytes:
        end = self._starts[index + 1] if index + 1 < self.count else len(self._parts)
        return b"".join(self._parts[self._starts[index] : end])

    async def _on_cluster(self, cluster: RedisCluster, deadline_s: float) -> list[Reply]:
        try:
            return await self._routed(cluster, deadline_s)
        except RedisClusterException as error:
            raise ClusterUnavailable(str(error)) from error

    async def _routed(self, cluster: RedisCluster, deadline_s: float) -> list[Reply]:
        replies: list[Reply | None] = [None] * self.count
        todo = list(range(self.count))
        try:
            async with asyncio.timeout(deadline_s):
                for _ in range(CLUSTER_REDIRECTS):
                    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
                    nodes = cluster.nodes_manager
                    for index in todo:
                        node = nodes.get_node_from_slot(_slot(self._routes[index]))
                        groups.setdefault(node.name, (node, []))[1].append(index)
                    # Every group finishes (or fails) before anything else happens: the
                    # slot map is only rebuilt once no connection of it is in use.
                    failed = [
                        error
                        for error in await asyncio.gather(
                            *(
                                self._send(node, indices, replies)
                                for node, indices in groups.values()
                            ),
                            return_exceptions=True,
                        )
                        if isinstance(error, BaseException)
                    ]
                    if failed:
                        raise failed[0]
                    # A slot served elsewhere now (a failover, a resharding): the
                    # command did not run; ask the cluster again and resend it.
                    todo = [i for i in todo if isinstance(replies[i], MovedError | TryAgainError)]
                    if not todo:
                        break
                    await nodes.initialize()
        except BaseException:
            # A node gone or stalled: learn the cluster's shape again before the next
            # batch (a replica may be taking over its slots), then fail this one.
            with contextlib.suppress(Exception):
                await cluster.nodes_manager.initialize()
            raise
        for reply in replies:
            if isinstance(reply, ClusterDownError | MovedError | TryAgainError | MasterDownError):
                # The cluster cannot serve a slot yet: the whole batch waits and is
                # retried by its caller (nothing was confirmed to a device).
                raise reply
        return replies

    async def _send(
        self, node: ClusterNode, indices: list[int], replies: list[Reply | None]
    ) -> None:
        conn = node.acquire_connection()
        try:
            # A connection marked by a topology refresh is reconnected before use.
            await node.disconnect_if_needed(conn)
            await conn.send_packed_command(
                b"".join(self._command_bytes(i) for i in indices) + _WAIT_FOR_REPLICA,
                check_health=False,
            )
            for index in indices:
                try:
                    replies[index] = await conn.read_response(timeout=math.inf)
                except ResponseError as error:
                    replies[index] = error
            await conn.read_response(timeout=math.inf)  # WAIT's count of replicas
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            node.release(conn)


#: How often one batch follows MOVED replies before it gives up (and is retried).
CLUSTER_REDIRECTS: Final = 3

#: Each node's group ends with WAIT: its replica has what the batch wrote before the
#: gateway acknowledges the events to the broker, so a master killed right after is
#: replaced by a replica that has them (Redis replicates asynchronously otherwise).
#: Bounded: with the replica down, a batch waits this long and goes on, since the
#: master alone still keeps its AOF.
CLUSTER_WAIT_MS: Final = 50
_WAIT_FOR_REPLICA: Final = b"*3\r\n" + b"".join(
    b"$%d\r\n%b\r\n" % (len(a), a) for a in (b"WAIT", b"1", b"%d" % CLUSTER_WAIT_MS)
)


@functools.lru_cache(maxsize=65536)
def _slot(key: str | bytes) -> int:
    return key_slot(key.encode("utf-8") if isinstance(key, str) else key)


class PackedHead(NamedTuple):
    """``FCALL function numkeys keys...`` packed: the bytes, how many arguments, the
    first key (which routes the call on a cluster: every key of a call shares its tag)."""

    data: bytes
    nargs: int
    key: str


def _bulk(value: str) -> bytes:
    raw = value.encode("utf-8")
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


@functools.lru_cache(maxsize=65536)
def packed_head(function: str, keys_: tuple[str, ...]) -> PackedHead:
    """``FCALL function numkeys keys...`` packed once.

    A lot's and a device's keys are the same for every event: packing them once
    saves most of the per-event encoding of a 10-key call."""
    head = [_bulk("FCALL"), _bulk(function), _bulk(str(len(keys_)))]
    head.extend(_bulk(k) for k in keys_)
    return PackedHead(b"".join(head), 3 + len(keys_), keys_[0])


async def load_library(redis: aioredis.Redis) -> None:
    """Install (or replace) the function library; idempotent, safe while gateways run."""
    await redis.function_load(LIBRARY, replace=True)


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if value is None:
        return ""
    return str(value)


def texts(reply: object) -> list[str]:
    if isinstance(reply, list):
        return [text(v) for v in reply]
    return [text(reply)]


# ------------------------------------------------------------------ lot shards


@dataclass(frozen=True, slots=True)
class PassageCall:
    lot_id: str
    device_id: str
    seq: int
    now_ms: int
    plate: str | None
    mode: str
    session_id: str
    at_ms: int
    record: bytes
    command_id: str
    command_topic: str
    command_open: bytes
    command_hold: bytes
    command_expires_ms: int
    command_resend_ms: int
    #: the passage's event time plus the staleness window: no re-send after it
    command_stale_ms: int
    #: an exit: the id its session gets if it has no entry (remembered for a late entry)
    no_entry_session: str = ""
    #: an entry up to this long before an exit without entry here completes it
    late_within_ms: int = 0


def queue_passage(pipe: Batch, call: PassageCall) -> None:
    head = packed_head("occ_passage", tuple(keys.passage_keys(call.lot_id, call.device_id)))
    pipe.fcall_packed(
        head,
        call.device_id,
        str(call.seq),
        str(call.now_ms),
        call.plate or "",
        call.mode,
        call.session_id,
        str(call.at_ms),
        call.record,
        call.command_id,
        call.command_topic,
        call.command_open,
        call.command_hold,
        str(call.command_expires_ms),
        str(call.command_resend_ms),
        call.lot_id,
        str(call.command_stale_ms),
        call.no_entry_session,
        str(call.late_within_ms),
    )


@dataclass(frozen=True, slots=True)
class SpaceCall:
    lot_id: str
    device_id: str
    seq: int
    now_ms: int
    space_id: str
    occupied: bool
    observed_ms: int
    record: bytes
    flap_changes: int
    flap_window_ms: int


def queue_space(pipe: Batch, call: SpaceCall) -> None:
    head = packed_head("occ_space", tuple(keys.space_keys(call.lot_id, call.device_id)))
    pipe.fcall_packed(
        head,
        call.device_id,
        str(call.seq),
        str(call.now_ms),
        call.space_id,
        "1" if call.occupied else "0",
        str(call.observed_ms),
        call.record,
        str(call.flap_changes),
        str(call.flap_window_ms),
    )


@dataclass(frozen=True, slots=True)
class DeadCall:
    tag: str
    now_ms: int
    topic: str
    reason: str
    payload: bytes
    device_id: str | None
    seq: int | None


def queue_dead(pipe: Batch, call: DeadCall) -> None:
    trusted = call.device_id is not None and call.seq is not None
    ks = keys.dead_keys(call.tag, call.device_id if trusted else None)
    extra = [call.device_id or "", str(call.seq)] if trusted else []
    pipe.fcall(
        "occ_dead",
        ks,
        str(call.now_ms),
        call.topic,
        call.reason,
        call.payload,
        *extra,
    )


def queue_status(
    pipe: Batch,
    *,
    lot_id: str,
    device_id: str,
    online: bool,
    at_ms: int,
    now_ms: int,
    firmware: str | None,
    record: bytes,
) -> None:
    pipe.fcall(
        "occ_status",
        keys.status_keys(lot_id, device_id),
        device_id,
        "1" if online else "0",
        str(at_ms),
        str(now_ms),
        firmware or "",
        record,
    )


def queue_ack(
    pipe: Batch, *, lot_id: str, command_id: str, result: str, now_ms: int, record: bytes
) -> None:
    pipe.fcall("occ_ack", keys.ack_keys(lot_id), command_id, result, str(now_ms), record)


def queue_supersede(
    pipe: Batch,
    *,
    lot_id: str,
    plate: str,
    session_id: str,
    by_session: str,
    by_lot: str,
    now_ms: int,
    why: str,
) -> None:
    pipe.fcall(
        "occ_supersede",
        keys.supersede_keys(lot_id),
        lot_id,
        plate,
        session_id,
        by_session,
        by_lot,
        str(now_ms),
        why,
    )


def queue_lot(pipe: Batch, *, lot_id: str, capacity: int, kind: str) -> None:
    pipe.fcall("occ_lot", keys.lot_sync_keys(lot_id), str(capacity), kind)


def queue_watermark(pipe: Batch, *, tag: str, device_id: str, seq: int) -> None:
    pipe.fcall("occ_wm", [keys.device(tag, device_id)], str(seq))


def queue_followups_done(pipe: Batch, done: Sequence[tuple[str, str]]) -> None:
    """Drop finished follow-ups, given as (lot id, ``device:seq``): one HDEL per shard."""
    by_tag: dict[str, list[str]] = {}
    for lot_id, op in done:
        by_tag.setdefault(keys.lot_tag(lot_id), []).append(op)
    for tag, ops in by_tag.items():
        pipe.command("HDEL", keys.followups(tag), *ops)


#: A device silent this long loses its clock samples (a replaced or removed device
#: must not leave keys behind); a live device refills them with its next messages.
CLOCK_SAMPLES_TTL_MS: Final = 7 * 24 * 3600 * 1000


def queue_clock_sample(pipe: Batch, key: str, sample_ms: int, *, keep: int) -> None:
    """Add a clock offset sample (``keys.clock``), keeping the ``keep`` newest; three replies."""
    pipe.command("LPUSH", key, sample_ms)
    pipe.command("LTRIM", key, 0, keep - 1)
    pipe.command("PEXPIRE", key, CLOCK_SAMPLES_TTL_MS)


def queue_clock_read(pipe: Batch, key: str, count: int) -> None:
    """The ``count`` newest samples of ``keys.clock``; one reply."""
    pipe.command("LRANGE", key, 0, count - 1)


def clock_samples(reply: object) -> list[int]:
    out: list[int] = []
    for value in reply if isinstance(reply, list) else []:
        with contextlib.suppress(ValueError):
            out.append(int(text(value)))
    return out


def queue_session_of(pipe: Batch, *, lot_id: str, plate: str) -> None:
    pipe.command("HGET", keys.sessions(keys.lot_tag(lot_id), lot_id), plate)


def queue_gone_of(pipe: Batch, *, lot_id: str, plate: str) -> None:
    """The lot's exit without entry of ``plate`` (``keys.gone``), if it remembers one."""
    pipe.command("HGET", keys.gone(keys.lot_tag(lot_id), lot_id), plate)


#: what ``occ_due`` counts, in the order of its first reply
DROP_REASONS: Final = ("superseded", "stale", "attempts", "expired")


@dataclass(frozen=True, slots=True)
class DueCommands:
    #: (topic, payload) of each command to re-send now
    sends: list[tuple[str, bytes]]
    #: reason -> how many pending commands were dropped instead (``DROP_REASONS``)
    dropped: dict[str, int]


async def due_commands(
    redis: aioredis.Redis,
    tag: str,
    *,
    now_ms: int,
    first_ms: int,
    cap_ms: int,
    max_sends: int,
    limit: int,
) -> DueCommands:
    keys_ = keys.due_keys(tag)
    reply = await redis.fcall(
        "occ_due", len(keys_), *keys_, now_ms, first_ms, cap_ms, max_sends, limit
    )
    counts, items = reply
    return DueCommands(
        sends=[(text(items[i]), bytes(items[i + 1])) for i in range(0, len(items), 2)],
        dropped={why: int(n) for why, n in zip(DROP_REASONS, counts, strict=True) if int(n)},
    )


async def report_silent(
    redis: aioredis.Redis, tag: str, *, cutoff_ms: int, now_ms: int, limit: int
) -> int:
    return int(
        await redis.fcall(
            "occ_silence", 3, *keys.silence_keys(tag), str(cutoff_ms), str(now_ms), str(limit)
        )
    )


async def stale_followups(
    redis: aioredis.Redis, tag: str, *, made_before_ms: int, limit: int
) -> list[tuple[str, str]]:
    """(``device:seq``, follow-up) pairs of a shard made before ``made_before_ms``."""
    found: list[tuple[str, str]] = []
    async for field, value in redis.hscan_iter(keys.followups(tag), count=500):
        raw = text(value)
        try:
            made = int(raw.rsplit("|", 1)[1])
        except (IndexError, ValueError):
            continue
        if made < made_before_ms:
            found.append((text(field), raw))
            if len(found) >= limit:
                break
    return found


# ------------------------------------------------------------------ plate shards


def queue_plate_read(pipe: Batch, plate: str) -> None:
    ks = keys.plate_keys(plate)
    pipe.command("FCALL_RO", "plate_read", len(ks), *ks)


def queue_plate_claim(
    pipe: Batch, *, plate: str, session_id: str, lot_id: str, at_ms: int, op: str
) -> None:
    pipe.fcall("plate_claim", keys.plate_keys(plate), session_id, lot_id, str(at_ms), op)


def queue_plate_release(pipe: Batch, *, plate: str, session_id: str, at_ms: int) -> None:
    pipe.fcall("plate_release", keys.plate_keys(plate), session_id, str(at_ms))


def queue_plate_flags(pipe: Batch, plate: str, flags: Sequence[tuple[str, str]]) -> None:
    args = [part for pair in flags for part in pair]
    pipe.fcall("plate_flags", keys.plate_flag_keys(plate), plate, *args)


async def set_plate_flag(redis: aioredis.Redis, plate: str, field: str, value: str) -> str:
    return text(
        await redis.fcall("plate_flag", 3, *keys.plate_flag_keys(plate), plate, field, value)
    )


async def flagged_plates(redis: aioredis.Redis, tag: str) -> set[str]:
    return {text(p) for p in await redis.smembers(keys.flagged(tag))}


async def live_counts(redis: aioredis.Redis, lot_ids: Sequence[str]) -> dict[str, LiveCount]:
    """lot -> its counts in the core now, for the lots the core has (one pipeline)."""
    if not lot_ids:
        return {}
    pipe = redis.pipeline(transaction=False)
    for lot_id in lot_ids:
        pipe.hmget(
            keys.lot(keys.lot_tag(lot_id), lot_id), "capacity", "kind", "sessions", "occupied"
        )
    out = {}
    for lot_id, (capacity, kind, sessions, occupied) in zip(
        lot_ids, await pipe.execute(), strict=True
    ):
        if capacity is not None:
            out[lot_id] = LiveCount(
                capacity=int(capacity),
                kind=text(kind) if kind is not None else "",
                sessions=int(sessions or 0),
                occupied_spaces=int(occupied or 0),
            )
    return out


async def lot_counts(redis: aioredis.Redis, lot_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.lot(keys.lot_tag(lot_id), lot_id))
    return {text(k): text(v) for k, v in raw.items()}


async def lot_sessions(redis: aioredis.Redis, lot_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.sessions(keys.lot_tag(lot_id), lot_id))
    return {text(k): text(v) for k, v in raw.items()}


async def lot_spaces(redis: aioredis.Redis, lot_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.spaces(keys.lot_tag(lot_id), lot_id))
    return {text(k): text(v) for k, v in raw.items()}


async def plate_entry(redis: aioredis.Redis, plate: str) -> dict[str, str]:
    t = keys.plate_tag(plate)
    raw = await redis.hgetall(keys.plate(t, plate))
    return {text(k): text(v) for k, v in raw.items()}


async def device_marks(redis: aioredis.Redis, lot_id: str, device_id: str) -> dict[str, str]:
    t = keys.lot_tag(lot_id)
    raw = await redis.hgetall(keys.device(t, device_id))
    return {text(k): text(v) for k, v in raw.items()}


# ================================================================== PostgreSQL


# --- plate flags, from the tables of their owners (read-only here)


# --- rebuild


# --- persister writes (all run in the caller's transaction)


# --- reads for the CLI and tests


# --- sessions made by a driver's scan, and payments in the lot


async def open_account_session(
    redis: aioredis.Redis,
    *,
    lot_id: str,
    account_id: str,
    session_id: str,
    at_ms: int,
    full_policy: str = "hold",
) -> tuple[str, str]:
    """Let an unplated car in under the account that scanned it (``occ_account``);
    ``end_in_lot`` with ``keys.account_field(account)`` takes it out.

    Returns the outcome (opened, exists, full, nolot, notready) and the session's
    value in the lot's sessions hash (or '')."""
    # Packed once per lot and sent as a one-command Batch on the API's shared line:
    # redis-py's command path (encoding, retry, pool bookkeeping) was a fifth of a
    # scan's CPU.
    head = packed_head("occ_account", tuple(keys.account_keys(lot_id)))
    pipe = Batch()
    pipe.fcall_packed(head, lot_id, account_id, session_id, str(at_ms), full_policy)
    [reply] = await pipe.shared(redis, deadline_s=10.0)
    if isinstance(reply, ResponseError):
        if "function not found" in str(reply).lower():
            return "notready", ""  # a Redis that lost the library: the rebuild loads it
        raise reply
    if isinstance(reply, Exception):
        raise reply
    outcome, value = texts(reply)
    return outcome, value


def queue_prepaid_read(pipe: Batch, *, lot_id: str, plate: str) -> None:
    pipe.command("GET", keys.prepaid(lot_id, plate))


#: A payment made in the lot is shown at the exit for this long at most.
PREPAID_TTL_S: Final = 2 * 24 * 3600


async def set_prepaid(
    redis: aioredis.Redis,
    *,
    lot_id: str,
    plate: str,
    session_id: str,
    billed_fen: int,
    leave_by_ms: int | None,
) -> None:
    await redis.set(
        keys.prepaid(lot_id, plate),
        f"{session_id}|{billed_fen}|{leave_by_ms or 0}",
        ex=PREPAID_TTL_S,
    )


# --- an operator ends or corrects a session the lanes left open


async def end_in_lot(redis: aioredis.Redis, *, lot_id: str, field: str, session_id: str) -> str:
    """Take the session out of its lot's open sessions (the lot's count goes down by one)
    if ``field`` (its plate, or ``keys.account_field(account)``) still holds it.
    Idempotent; writes no event (the caller records the decision in PostgreSQL).

    Returns ``ended``, ``absent`` (not open there: nothing written) or ``notready``
    (the lot's shard is being rebuilt: nothing written)."""
    reply = await redis.fcall("occ_end", 3, *keys.account_keys(lot_id), lot_id, field, session_id)
    return texts(reply)[0]


async def rekey_in_lot(
    redis: aioredis.Redis, *, lot_id: str, wrong: str, right: str, session_id: str
) -> str:
    """Move the lot's open session from the misread plate to the right one, same value.

    Returns ``moved``, ``absent`` (``wrong`` does not hold it), ``taken`` (``right`` is
    open in this lot) or ``notready``."""
    reply = await redis.fcall(
        "occ_rekey", 3, *keys.account_keys(lot_id), lot_id, wrong, right, session_id
    )
    return texts(reply)[0]


async def claim_plate(
    redis: aioredis.Redis, *, plate: str, session_id: str, lot_id: str, at_ms: int, op: str
) -> str:
    """The plate's city-wide entry names the session (``plate_claim``): ``claimed``,
    ``same`` (this op already did), ``older`` (a later entry or exit of the plate is
    known) or ``notready``."""
    reply = await redis.fcall(
        "plate_claim", 2, *keys.plate_keys(plate), session_id, lot_id, str(at_ms), op
    )
    return texts(reply)[0]


async def release_plate(
    redis: aioredis.Redis, *, plate: str, session_id: str, out_at_ms: int
) -> str:
    """Release the plate's city-wide entry if it still names the session; a claim of an
    entry before ``out_at_ms`` that arrives later loses. Idempotent.

    Returns ``released``, ``absent`` (it names another session, or none) or
    ``notready`` (the plate's shard is being rebuilt: nothing written)."""
    reply = await redis.fcall(
        "plate_release", 2, *keys.plate_keys(plate), session_id, str(out_at_ms)
    )
    return text(reply)


# ------------------------------------------------------------------ a driver's open stays


async def open_stays(redis: aioredis.Redis, plates: list[str]) -> dict[str, tuple[str, str, int]]:
    """plate -> (session id, lot, entry ms) for plates whose shard is loaded.

    Raises ShardsNotLoaded (with what the loaded shards said) when a plate's shard is
    not loaded: its answer is in PostgreSQL. Raises RedisError when Redis does not answer.
    """
    # The core's own light pipeline (occupancy.store.Batch): redis-py's costs
    # more CPU per command than Redis spends answering it.
    pipe = Batch()
    for plate in plates:
        tag = keys.plate_tag(plate)
        pipe.command("EXISTS", keys.ready(tag))
        pipe.command("HMGET", keys.plate(tag, plate), "sid", "lot", "at")
    replies = await pipe.shared(redis, deadline_s=2.0)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    found: dict[str, tuple[str, str, int]] = {}
    unloaded: list[str] = []
    for n, plate in enumerate(plates):
        ready, fields = replies[2 * n], replies[2 * n + 1]
        assert isinstance(fields, list)
        sid, lot, at = fields
        if not ready:
            unloaded.append(plate)
            continue
        if sid and lot and at:
            found[plate] = (_decoded(sid), _decoded(lot), int(_decoded(at)))
    if unloaded:
        raise ShardsNotLoaded(unloaded, found)
    return found


class ShardsNotLoaded(Exception):
    def __init__(self, plates: list[str], found: dict[str, tuple[str, str, int]]) -> None:
        super().__init__("plate shards not loaded")
        self.plates = plates
        self.found = found


def _decoded(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def heard(redis: aioredis.Redis) -> dict[str, int]:
    """device -> when the core last heard it (ms), over every lot shard (a device
    reported silent is absent until heard again)."""
    pipe = redis.pipeline(transaction=False)
    for tag in keys.all_lot_tags():
        pipe.zrange(keys.seen(tag), 0, -1, withscores=True)
    out: dict[str, int] = {}
    for pairs in await pipe.execute():
        for member, score in pairs:
            out[text(member)] = int(score)
    return out


#: how long an hour's lane latency histogram is kept
LANE_LATENCY_TTL_S: Final = 3 * 24 * 3600


async def count_lane_latency(
    redis: aioredis.Redis, hour_epoch_s: int, counts: dict[int, int]
) -> None:
    """Add one batch's lane decisions to the hour's histogram (bucket index -> count)."""
    if not counts:
        return
    key = keys.lane_latency(hour_epoch_s)
    pipe = redis.pipeline(transaction=False)
    for bucket, n in counts.items():
        pipe.hincrby(key, str(bucket), n)
    pipe.expire(key, LANE_LATENCY_TTL_S)
    await pipe.execute()


async def lane_latency(redis: aioredis.Redis, hour_epoch_s: int, width: int) -> list[int] | None:
    """The hour's histogram as ``width`` counts (None: no decision in the hour)."""
    raw = await redis.hgetall(keys.lane_latency(hour_epoch_s))
    if not raw:
        return None
    counts = [0] * width
    for field, value in raw.items():
        index = int(text(field))
        if 0 <= index < width:
            counts[index] = int(text(value))
    return counts
