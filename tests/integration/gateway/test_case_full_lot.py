"""码上反映 opens its own case: a lot the core counts full (real broker, gateway and
persister) for over an hour becomes a case at the lot, once, and the case closes by
itself when a car leaves. Time for the hour is the clock job's injected ``now``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pipekit import DEMO, Pipeline, eventually
from test_gateway_walkthrough import _pub

from parking.auth.model import Principal, Role
from parking.cases import clocks, service
from parking.clock import SHANGHAI
from parking.lots import service as lots
from parking.lots.model import LotChange
from parking.occupancy import store as core

PLATE = "赣B7F001"


def _passage(gate_id: str, seq: int, direction: str) -> str:
    at = datetime.now(SHANGHAI).replace(microsecond=0)
    return json.dumps(
        {
            "device_id": gate_id,
            "seq": seq,
            "observed_at": at.isoformat(),
            "sent_at": at.isoformat(),
            "direction": direction,
            "plate": PLATE,
            "plate_color": "blue",
            "confidence": 0.97,
            "image_ref": f"gz-demo-01/{direction}/{seq}.jpg",
        },
        ensure_ascii=False,
    )


async def test_a_lot_full_for_over_an_hour_opens_a_case_which_closes_when_a_car_leaves(
    pipeline: Pipeline,
) -> None:
    city = Principal(subject="test", role=Role.CITY, token_id="t")
    # one space: the first car fills the lot (the gateway loads capacities at start)
    await lots.change_lot(
        pipeline.conn, DEMO, LotChange(capacity=1), by=city, now=datetime.now(UTC)
    )
    entry = await pipeline.add_gate("in1")
    leave = await pipeline.add_gate("out1")
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    notifier = service.LocalNotifier()
    t0 = datetime.now(UTC)
    assert await clocks.watch_full_lots(pipeline.conn, pipeline.redis, notifier, now=t0) == {
        "opened": 0, "closed": 0, "full": 0,
    }  # fmt: skip

    _pub(pipeline, entry, pipeline.topics.passages(DEMO, "in1"), _passage(entry.device_id, 1, "in"))

    async def full() -> bool:
        count = (await core.live_counts(pipeline.redis, [DEMO]))[DEMO]
        return count.free == 0

    await eventually(full, within=30, what="the car counted in the lot")
    seen = await clocks.watch_full_lots(pipeline.conn, pipeline.redis, notifier, now=t0)
    assert seen == {"opened": 0, "closed": 0, "full": 1}
    since = await pipeline.fetchval("SELECT full_since FROM case_full_lots WHERE lot_id = $1", DEMO)
    assert since == t0
    # 59 minutes full: nothing yet; the hour: a case, once however often the job looks
    almost = await clocks.watch_full_lots(
        pipeline.conn, pipeline.redis, notifier, now=t0 + timedelta(minutes=59)
    )
    assert almost["opened"] == 0
    hour = t0 + timedelta(minutes=60)
    assert (await clocks.watch_full_lots(pipeline.conn, pipeline.redis, notifier, now=hour))[
        "opened"
    ] == 1
    assert (
        await clocks.watch_full_lots(
            pipeline.conn, pipeline.redis, notifier, now=hour + timedelta(minutes=5)
        )
    )["opened"] == 0
    case = await pipeline.conn.fetchrow(
        "SELECT id, category, level, state, holder, received_at, text FROM cases "
        "WHERE source = 'lot_full' AND source_ref = $1",
        DEMO,
    )
    assert case is not None
    assert (case["category"], case["level"], case["state"], case["holder"]) == (
        "other", "small", "dispatched", f"lot_staff:{DEMO}",
    )  # fmt: skip
    assert case["received_at"] == hour
    assert "车场已满 60 分钟" in case["text"]
    told = await pipeline.fetchval(
        "SELECT recipient FROM case_notifications WHERE case_id = $1", case["id"]
    )
    assert told == f"lot_staff:{DEMO}"

    _pub(
        pipeline, leave, pipeline.topics.passages(DEMO, "out1"), _passage(leave.device_id, 1, "out")
    )

    async def free() -> bool:
        count = (await core.live_counts(pipeline.redis, [DEMO]))[DEMO]
        return count.free == 1

    await eventually(free, within=30, what="the car gone from the count")
    later = hour + timedelta(minutes=10)
    closed = await clocks.watch_full_lots(pipeline.conn, pipeline.redis, notifier, now=later)
    assert closed == {"opened": 0, "closed": 1, "full": 0}
    state = await pipeline.fetchval("SELECT state FROM cases WHERE id = $1", case["id"])
    assert state == "closed"
    assert await pipeline.fetchval("SELECT count(*) FROM case_full_lots") == 0
