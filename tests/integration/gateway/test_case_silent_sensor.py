"""码上反映 opens its own case: sensors the gateway reports silent (real broker, gateway
and persister) become one case at their lot, once, and the case closes by itself when
every one of them is heard again."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from pipekit import Device, Pipeline, eventually
from test_gateway_walkthrough import _pub

from parking.cases import clocks, service
from parking.lots import service as lots
from parking.occupancy import store as core

SILENT_AFTER_S = 3


def _heartbeat(pipeline: Pipeline, sensor: Device) -> None:
    _pub(
        pipeline,
        sensor,
        pipeline.topics.status(sensor.device_id),
        json.dumps(
            {"device_id": sensor.device_id, "online": True, "at": datetime.now(UTC).isoformat()}
        ),
    )


async def test_a_lots_silent_sensors_open_one_case_which_closes_when_all_are_heard_again(
    pipeline: Pipeline,
) -> None:
    pipeline.env["PARKING_DEVICE_SILENT_AFTER_S"] = str(SILENT_AFTER_S)
    street = (await lots.street_lot_ids(pipeline.conn))[0]
    first, second = [s.space_id for s in (await lots.spaces_of(pipeline.conn, [street]))[:2]]
    sensors = [
        await pipeline.add_sensor(first, lot=street),
        await pipeline.add_sensor(second, lot=street),
    ]
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    for sensor in sensors:
        _heartbeat(pipeline, sensor)

    async def heard() -> bool:
        return {s.device_id for s in sensors} <= set(await core.heard(pipeline.redis))

    await eventually(heard, within=20, what="the sensors heard")

    async def reported_silent() -> bool:
        count = await pipeline.fetchval(
            "SELECT count(*) FROM anomalies WHERE kind = 'device_silent' "
            "AND device_id = ANY($1::text[]) AND status = 'open'",
            [s.device_id for s in sensors],
        )
        return count == 2

    await eventually(reported_silent, within=60, what="the gateway to report both silent")
    notifier = service.LocalNotifier()
    watched = await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    )
    assert watched == {"opened": 1, "closed": 0}
    ref = f"sensors:{street}"
    case = await pipeline.conn.fetchrow(
        "SELECT id, category, level, state, holder, lot_id, space_id, district_code, text "
        "FROM cases WHERE source = 'device_silent' AND source_ref = $1",
        ref,
    )
    assert case is not None
    assert (case["category"], case["level"], case["state"]) == (
        "sensor_fault", "middle", "dispatched",
    )  # fmt: skip
    assert (case["lot_id"], case["space_id"]) == (street, None)
    assert case["holder"] == f"district_team:{case['district_code']}"
    assert case["text"].startswith("2 个地磁设备没有消息")
    assert all(s.device_id in case["text"] for s in sensors)
    # one case for the lot however often the job looks
    again = await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    )
    assert again == {"opened": 0, "closed": 0}

    # one sensor heard again: the other is still silent, the case stays open
    await asyncio.sleep(0.01)
    _heartbeat(pipeline, sensors[0])

    async def first_heard() -> bool:
        anomaly_at = await pipeline.fetchval(
            "SELECT max(created_at) FROM anomalies WHERE device_id = $1", sensors[0].device_id
        )
        assert isinstance(anomaly_at, datetime)
        at = (await core.heard(pipeline.redis)).get(sensors[0].device_id, -1)
        return at > anomaly_at.timestamp() * 1000

    await eventually(first_heard, within=20, what="the first sensor heard again")
    still = await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    )
    assert still == {"opened": 0, "closed": 0}

    _heartbeat(pipeline, sensors[1])

    async def both_heard() -> bool:
        return await clocks.watch_devices(
            pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
        ) == {"opened": 0, "closed": 1}

    await eventually(both_heard, within=20, what="the case closed once both are heard")
    state = await pipeline.fetchval("SELECT state FROM cases WHERE id = $1", case["id"])
    assert state == "closed"
    last = await pipeline.fetchval(
        "SELECT action FROM case_events WHERE case_id = $1 ORDER BY id DESC LIMIT 1", case["id"]
    )
    assert last == "closed_by_platform"
    # heard again: the still-open silence anomalies open nothing new
    assert await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    ) == {"opened": 0, "closed": 0}
