"""码上反映 opens its own case: a sensor the gateway reports silent (real broker, gateway
and persister) becomes a case at its place, once, and the case closes by itself when
the sensor is heard again."""

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


async def test_a_silent_sensor_opens_a_case_which_closes_when_it_is_heard_again(
    pipeline: Pipeline,
) -> None:
    pipeline.env["PARKING_DEVICE_SILENT_AFTER_S"] = str(SILENT_AFTER_S)
    street = (await lots.street_lot_ids(pipeline.conn))[0]
    space = (await lots.spaces_of(pipeline.conn, [street]))[0].space_id
    sensor = await pipeline.add_sensor(space, lot=street)
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    _heartbeat(pipeline, sensor)

    async def heard() -> bool:
        return sensor.device_id in await core.heard(pipeline.redis)

    await eventually(heard, within=20, what="the sensor heard")

    async def reported_silent() -> bool:
        count = await pipeline.fetchval(
            "SELECT count(*) FROM anomalies WHERE kind = 'device_silent' AND device_id = $1 "
            "AND status = 'open'",
            sensor.device_id,
        )
        return bool(count)

    await eventually(reported_silent, within=60, what="the gateway to report the sensor silent")
    notifier = service.LocalNotifier()
    watched = await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    )
    assert watched == {"opened": 1, "closed": 0}
    case = await pipeline.conn.fetchrow(
        "SELECT id, category, level, state, holder, lot_id, space_id, district_code "
        "FROM cases WHERE source = 'device_silent' AND source_ref = $1",
        sensor.device_id,
    )
    assert case is not None
    assert (case["category"], case["level"], case["state"]) == (
        "sensor_fault", "middle", "dispatched",
    )  # fmt: skip
    assert (case["lot_id"], case["space_id"]) == (street, space)
    assert case["holder"] == f"district_team:{case['district_code']}"
    # once per device however often the job looks
    again = await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    )
    assert again == {"opened": 0, "closed": 0}

    await asyncio.sleep(0.01)
    _heartbeat(pipeline, sensor)
    await eventually(heard, within=20, what="the sensor heard again")
    closed = await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    )
    assert closed == {"opened": 0, "closed": 1}
    state = await pipeline.fetchval("SELECT state FROM cases WHERE id = $1", case["id"])
    assert state == "closed"
    last = await pipeline.fetchval(
        "SELECT action FROM case_events WHERE case_id = $1 ORDER BY id DESC LIMIT 1", case["id"]
    )
    assert last == "closed_by_platform"
    # heard again: the still-open silence anomaly opens nothing new
    assert await clocks.watch_devices(
        pipeline.conn, pipeline.redis, notifier, now=datetime.now(UTC)
    ) == {"opened": 0, "closed": 0}
