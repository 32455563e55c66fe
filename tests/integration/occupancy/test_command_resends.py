"""Re-sending unacknowledged lane commands (issue 20): backing off, one per lane, never
for a stale passage, cleaned up on ack and drop. Real Redis and PostgreSQL, time
driven by the injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
from corekit import DEMO, Core, minutes

from parking.occupancy import batch, keys
from parking.occupancy.batch import Tuning

TAG = keys.lot_tag(DEMO)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def command_id(report: batch.BatchReport) -> str:
    [command] = [p for p in report.publishes if p.topic.endswith("/commands")]
    return str(msgspec.json.decode(command.payload)["command_id"])


def ids_of(publishes: list[batch.Publish]) -> list[str]:
    return [str(msgspec.json.decode(p.payload)["command_id"]) for p in publishes]


async def resends_over(core: Core, span: timedelta) -> tuple[dict[int, list[str]], dict[str, int]]:
    """Step the clock one second at a time through ``span``, as the gateway's re-send
    loop would: the offsets (seconds from the start) that re-sent, and what was dropped."""
    start = core.clock.now()
    sent: dict[int, list[str]] = {}
    dropped: dict[str, int] = {}
    for _ in range(int(span.total_seconds())):
        core.clock.advance(seconds(1))
        due = await core.ingest.resend_due(core.clock.now())
        if due.publishes:
            sent[int((core.clock.now() - start).total_seconds())] = ids_of(due.publishes)
        for why, n in due.dropped.items():
            dropped[why] = dropped.get(why, 0) + n
    return sent, dropped


async def pending(core: Core) -> tuple[int, int, int]:
    """Entries of the shard's commands, re-send queue and lane index."""
    return (
        await core.redis.hlen(keys.commands(TAG)),
        await core.redis.zcard(keys.command_queue(TAG)),
        await core.redis.hlen(keys.command_lanes(TAG)),
    )


async def ack(core: Core, lane: str, command: str) -> batch.BatchReport:
    body = msgspec.json.encode(
        {"command_id": command, "result": "done", "at": core.clock.now().isoformat()}
    )
    return await core.handle(
        batch.Inbound(core.topics.command_ack(DEMO, lane), body, core.clock.now())
    )


async def why_expired(core: Core) -> list[str]:
    await core.persist()
    rows = await core.conn.fetch(
        "SELECT details->>'why' AS why FROM anomalies WHERE kind = 'command_expired' ORDER BY id"
    )
    return [r["why"] for r in rows]


async def test_an_unacked_command_is_resent_after_3_9_21_45_75_s_and_no_more(core: Core) -> None:
    # A long staleness window and TTL, so the number of re-sends is what stops it.
    core.ingest.tuning = Tuning(command_ttl=minutes(10), command_stale_after=minutes(10))
    first = command_id(await core.handle(core.passage("in1", "赣B10001")))
    sent, dropped = await resends_over(core, minutes(3))
    assert sent == {3: [first], 9: [first], 21: [first], 45: [first], 75: [first]}
    assert dropped == {"attempts": 1}
    assert await pending(core) == (0, 0, 0)
    assert await why_expired(core) == ["attempts"]


async def test_the_backoff_is_capped_and_the_tunables_set_it(core: Core) -> None:
    core.ingest.tuning = Tuning(
        command_ttl=minutes(10),
        command_stale_after=minutes(10),
        command_resend_after=seconds(2),
        command_resend_cap=seconds(5),
        command_resends=4,
    )
    first = command_id(await core.handle(core.passage("in1", "赣B10002")))
    sent, dropped = await resends_over(core, minutes(1))
    # waits 2, 4, 5 (capped), 5: offsets 2, 6, 11, 16; dropped a capped wait later
    assert sent == {2: [first], 6: [first], 11: [first], 16: [first]}
    assert dropped == {"attempts": 1}
    assert await pending(core) == (0, 0, 0)


async def test_resends_stop_once_the_passage_is_older_than_the_staleness_window(
    core: Core,
) -> None:
    first = command_id(await core.handle(core.passage("in1", "赣B10003")))
    sent, dropped = await resends_over(core, minutes(2))
    # The default window is 30 s from the passage: the re-send due at 45 s never goes.
    assert sent == {3: [first], 9: [first], 21: [first]}
    assert dropped == {"stale": 1}
    assert await pending(core) == (0, 0, 0)
    assert await why_expired(core) == ["stale"]


async def test_a_passage_observed_long_ago_gets_its_command_once_and_no_resend(
    core: Core,
) -> None:
    observed: datetime = core.clock.now() - seconds(40)
    report = await core.handle(core.passage("in1", "赣B10004", at=observed))
    assert command_id(report)
    sent, dropped = await resends_over(core, minutes(2))
    assert sent == {}
    assert dropped == {"stale": 1}
    assert await pending(core) == (0, 0, 0)


async def test_a_newer_passage_at_the_lane_supersedes_the_older_commands_resends(
    core: Core,
) -> None:
    first = command_id(await core.handle(core.passage("in1", "赣B10005")))
    exit_lane = command_id(await core.handle(core.passage("out1", "赣B10099")))
    core.clock.advance(seconds(1))
    report = await core.handle(core.passage("in1", "赣B10006"))
    second = command_id(report)
    assert report.commands_superseded == 1
    # One pending command per lane: the newer one of in1, and out1's own.
    assert await pending(core) == (2, 2, 2)
    sent, _ = await resends_over(core, seconds(4))
    assert sent == {2: [exit_lane], 3: [second]}
    # The superseded command's ack finds nothing to stop; the newer one's does.
    assert (await ack(core, "in1", first)).outcomes["unknown"] == 1
    assert (await ack(core, "in1", second)).outcomes["acked"] == 1
    assert (await ack(core, "out1", exit_lane)).outcomes["acked"] == 1
    assert await pending(core) == (0, 0, 0)
    # Superseded is no fault of the gate: no anomaly, and the persister takes the record.
    assert await why_expired(core) == []


async def test_an_older_passage_applied_late_does_not_supersede_the_newer_command(
    core: Core,
) -> None:
    newer = command_id(await core.handle(core.passage("in1", "赣B10007")))
    # Observed before the newer one (delivered late from the gate's outbox).
    late = await core.handle(core.passage("in1", "赣B10008", at=core.clock.now() - seconds(5)))
    assert command_id(late) != newer
    assert late.commands_superseded == 1
    sent, _ = await resends_over(core, seconds(3))
    assert sent == {3: [newer]}
    persisted = await core.persist()
    assert persisted.poison == []


async def test_an_ack_stops_the_resends_and_clears_the_lane(core: Core) -> None:
    first = command_id(await core.handle(core.passage("in1", "赣B10009")))
    sent, _ = await resends_over(core, seconds(3))
    assert sent == {3: [first]}
    assert await pending(core) == (1, 1, 1)
    assert (await ack(core, "in1", first)).outcomes["acked"] == 1
    assert await pending(core) == (0, 0, 0)
    sent, dropped = await resends_over(core, minutes(2))
    assert (sent, dropped) == ({}, {})
    # A repeated ack changes nothing.
    assert (await ack(core, "in1", first)).outcomes["unknown"] == 1


async def test_a_command_queued_before_lanes_were_tracked_is_resent_and_then_dropped(
    core: Core,
) -> None:
    """A library upgrade leaves commands queued the old way (no lane entry): they keep
    being re-sent, with the new schedule, until their TTL."""
    now_ms = int(core.clock.now().timestamp() * 1000)
    topic = core.topics.commands(DEMO, "in1")
    payload = b'{"command_id":"c-old-1","action":"open"}'
    await core.redis.hset(
        keys.commands(TAG), "c-old-1", f"{now_ms + 60_000}|{topic}|".encode() + payload
    )
    await core.redis.zadd(keys.command_queue(TAG), {"c-old-1": now_ms + 3000})
    sent, dropped = await resends_over(core, minutes(2))
    assert sent == {3: ["c-old-1"], 9: ["c-old-1"], 21: ["c-old-1"], 45: ["c-old-1"]}
    assert dropped == {"expired": 1}
    assert await pending(core) == (0, 0, 0)
