"""The Lua dedup and gap detection behave like the reference model, for any delivery order."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parking.config import Settings
from parking.occupancy import keys, store
from parking.occupancy.logic import DeviceSeqs

LOT = "PROP-LOT"
DEVICE = "prop-gate"

deliveries = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=80)


async def _run(client: aioredis.Redis, order: list[int]) -> None:
    tag = keys.lot_tag(LOT)
    await client.delete(*list(keys.space_keys(LOT, DEVICE)))
    await client.set(keys.ready(tag), "1")
    await client.hset(keys.lot(tag, LOT), mapping={"capacity": 10, "kind": "on_street"})
    model = DeviceSeqs()
    pipe = store.Batch()
    for seq in order:
        store.queue_space(
            pipe,
            store.SpaceCall(
                lot_id=LOT,
                device_id=DEVICE,
                seq=seq,
                now_ms=1,
                space_id="S1",
                occupied=seq % 2 == 0,
                observed_ms=seq * 1000,
                record=b"{}",
                flap_changes=1000,
                flap_window_ms=1,
            ),
        )
    replies = [store.texts(r) for r in await pipe.execute(client)]
    for seq, reply in zip(order, replies, strict=True):
        duplicate = model.seen(seq)
        gap = None if duplicate else model.apply(seq)
        assert reply[0] == ("dup" if duplicate else "applied"), (seq, reply)
        if not duplicate:
            assert reply[5] == ("" if gap is None else f"{gap[0]}-{gap[1]}"), (seq, reply)
    marks = await store.device_marks(client, LOT, DEVICE)
    assert int(marks.get("hw", "0")) == model.hw
    assert int(marks.get("max", "0")) == model.max
    above = {int(v) for v in await client.smembers(keys.device_above(tag, DEVICE))}
    assert above == model.above
    # The latest reading by seq is the space's state, whatever the order.
    state = (await store.lot_spaces(client, LOT))["S1"]
    assert state.split("|")[1] == str(max(order))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(order=deliveries)
def test_lua_dedup_matches_the_reference_model(settings: Settings, order: list[int]) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            await store.load_library(client)
            await _run(client, order)
        finally:
            await client.aclose()

    asyncio.run(go())
