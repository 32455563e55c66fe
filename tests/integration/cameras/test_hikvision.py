"""Hikvision ISAPI conformance: each fixture pushed as the unit pushes it (multipart, the XML
part and its pictures) through the camera adapter against the real stack; the barrier is
opened the way the units take it (PUT /ISAPI/Parking/channels/1/barrierGate, HTTP Digest),
checked byte for byte on a simulated unit's ISAPI (docs/protocol.md, "Hikvision")."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from camerakit import (
    Adapter,
    Camera,
    add_camera,
    fixture,
    hikvision_event,
    hikvision_parts,
    isapi_server,
    passages,
    start_adapter,
    trust,
    wait_rows,
)
from pipekit import DEMO, Pipeline, eventually

from gateways.cameras.simulator import IsapiServer, jpeg
from parking.clock import SHANGHAI
from parking.devices.model import Vendor
from parking.occupancy import keys, plate_flags
from parking.pricing import Pricer

PLATE = "赣B12345"
OPEN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><BarrierGate><ctrlMode>open</ctrlMode></BarrierGate>'
)


@pytest.fixture
async def isapi() -> AsyncIterator[tuple[IsapiServer, int]]:
    server, port = await isapi_server()
    try:
        yield server, port
    finally:
        await server.stop()


async def rig(
    pipe: Pipeline,
    isapi: tuple[IsapiServer, int],
    in_serial: str = "20220323AIJ67694167",
    out_serial: str = "20220323AIJ67694168",
) -> tuple[Adapter, Camera, Camera]:
    server, port = isapi
    pipe.persister().start()
    adapter = await start_adapter(pipe)
    made = []
    for lane, serial in (("in1", in_serial), ("out1", out_serial)):
        camera = await add_camera(
            pipe,
            lane,
            Vendor.HIKVISION,
            serial,
            lot=DEMO,
            base_url=adapter.base_url,
            isapi_port=port,
        )
        trust(server, camera)
        made.append(camera)
    return adapter, made[0], made[1]


async def push(
    camera: Camera, xml: bytes, *, scene: bytes | None = None, crop: bytes | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.post(camera.push_url, files=hikvision_parts(xml, scene=scene, crop=crop))


def opened(server: IsapiServer, camera: Camera) -> int:
    return server.opened[camera.prefix]


async def test_a_live_entry_opens_the_barrier_by_isapi_and_keeps_the_pictures(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    server, _ = isapi
    adapter, entry, _ = await rig(pipeline, isapi)
    scene, crop = jpeg((90, 110, 120)), jpeg((20, 60, 180))
    now = datetime.now(UTC)
    reply = await push(
        entry, hikvision_event(entry, plate=f"蓝{PLATE}", at=now), scene=scene, crop=crop
    )
    assert reply.status_code == 200, reply.text
    assert reply.content == b""
    assert opened(server, entry) == 1
    # The body as the units take it, signed with HTTP Digest (the server refused the
    # unsigned first try, as a unit does).
    assert server.bodies == [OPEN_BODY]
    assert server.refused >= 1

    await wait_rows(pipeline, "SELECT count(*) FROM passages WHERE device_id = $1", entry.device_id)
    [stored] = await passages(pipeline, entry.device_id)
    assert (stored["plate"], stored["direction"]) == (PLATE, "in")
    assert stored["confidence"] == pytest.approx(0.98)
    day = now.astimezone(SHANGHAI).strftime("%Y%m%d")
    assert stored["image_ref"] == f"cam/{DEMO}/{day}/{hashlib.sha256(scene).hexdigest()}.jpg"
    assert (adapter.image_dir / day / f"{hashlib.sha256(crop).hexdigest()}.jpg").exists()
    assert await pipeline.redis.hgetall(keys.commands(keys.lot_tag(DEMO))) == {}


async def test_an_exit_an_hour_after_a_history_entry_opens_and_bills_the_stay(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    server, _ = isapi
    _, entry, leave = await rig(pipeline, isapi)
    exit_at = datetime.now(SHANGHAI).replace(microsecond=0)
    entry_at = exit_at - timedelta(minutes=65)
    # A record uploaded again after an outage (alarmDataType 1): no barrier call.
    history = await push(
        entry, hikvision_event(entry, plate=f"蓝{PLATE}", at=entry_at, history=True)
    )
    assert history.status_code == 200
    await wait_rows(pipeline, "SELECT count(*) FROM sessions WHERE status = 'open'")
    assert opened(server, entry) == 0

    await push(leave, hikvision_event(leave, plate=f"蓝{PLATE}", at=exit_at))
    assert opened(server, leave) == 1
    fee = (
        (await Pricer.load(pipeline.conn))
        .price(lot_id=DEMO, plate=PLATE, entry=entry_at, exit=exit_at)
        .fee_fen
    )
    await wait_rows(pipeline, "SELECT count(*) FROM bills WHERE plate = $1", PLATE)
    session = await pipeline.conn.fetchrow("SELECT * FROM sessions WHERE plate = $1", PLATE)
    assert session is not None
    assert (session["status"], session["fee_fen"]) == ("closed", fee)
    assert (session["entry_at"], session["exit_at"]) == (entry_at, exit_at)


async def test_arrears_hold_the_car_no_barrier_call(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    server, _ = isapi
    await pipeline.conn.execute(
        "UPDATE lots SET arrears_hold_after = interval '0' WHERE id = $1", DEMO
    )
    _, entry, leave = await rig(pipeline, isapi)
    left = datetime.now(SHANGHAI) - timedelta(minutes=5)
    await push(
        entry,
        hikvision_event(entry, plate=f"蓝{PLATE}", at=left - timedelta(hours=2), history=True),
    )
    await wait_rows(pipeline, "SELECT count(*) FROM sessions WHERE status = 'open'")
    await push(leave, hikvision_event(leave, plate=f"蓝{PLATE}", at=left, history=True))
    await wait_rows(
        pipeline, "SELECT count(*) FROM bills WHERE plate = $1 AND status = 'open'", PLATE
    )
    await plate_flags.FlagSync().run(pipeline.conn, pipeline.redis, datetime.now(UTC))

    reply = await push(entry, hikvision_event(entry, plate=f"蓝{PLATE}", at=datetime.now(UTC)))
    assert reply.status_code == 200
    assert opened(server, entry) == 0
    await wait_rows(
        pipeline,
        "SELECT count(*) FROM passages WHERE device_id = $1 AND hold_reason = 'arrears'",
        entry.device_id,
    )


async def test_a_replayed_event_opens_the_barrier_once_and_is_applied_once(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    server, _ = isapi
    _, entry, _ = await rig(pipeline, isapi)
    xml = hikvision_event(
        entry, plate=f"蓝{PLATE}", at=datetime.now(UTC), event_uuid=str(uuid.uuid4())
    )
    first = await push(entry, xml)
    again = await push(entry, xml)
    assert first.status_code == again.status_code == 200
    # The car went through on the first: a re-POST must not lift the barrier for the next.
    assert opened(server, entry) == 1
    await wait_rows(
        pipeline, "SELECT count(*) FROM device_events WHERE device_id = $1", entry.device_id
    )
    assert len(await passages(pipeline, entry.device_id)) == 1
    assert await pipeline.fetchval("SELECT count(*) FROM camera_pushes") == 1


async def test_a_camera_clock_eight_years_ahead_is_corrected_and_flagged(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    # The Chinese-firmware capture: 蓝苏A8HK52 at 2034-01-04T15:57:03+08:00, deviceID 123456789.
    server, _ = isapi
    _, entry, _ = await rig(pipeline, isapi, in_serial="123456789")
    received = datetime.now(UTC)
    reply = await push(entry, fixture("hikvision/anpr-chinese-2034.xml.fixture"))
    assert reply.status_code == 200, reply.text
    assert opened(server, entry) == 1
    await wait_rows(
        pipeline,
        "SELECT count(*) FROM anomalies WHERE kind = 'device_clock_skew' AND device_id = $1",
        entry.device_id,
    )
    [stored] = await passages(pipeline, entry.device_id)
    assert (stored["plate"], stored["plate_color"]) == ("苏A8HK52", "blue")
    assert stored["observed_at"] == datetime(2034, 1, 4, 15, 57, 3, tzinfo=SHANGHAI)
    assert abs(stored["event_at"] - received) < timedelta(seconds=30)


async def test_an_event_in_the_hikvision_namespace_is_read_the_same(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    # 蓝皖A7XG66 in www.hikvision.com/ver20, macAddress 08:54:11:ed:6d:90 as the serial.
    server, _ = isapi
    _, entry, _ = await rig(pipeline, isapi, in_serial="08:54:11:ED:6D:90")
    reply = await push(entry, fixture("hikvision/anpr-hikvision-namespace.xml.fixture"))
    assert reply.status_code == 200, reply.text
    await wait_rows(pipeline, "SELECT count(*) FROM passages WHERE device_id = $1", entry.device_id)
    [stored] = await passages(pipeline, entry.device_id)
    assert (stored["plate"], stored["plate_color"]) == ("皖A7XG66", "blue")
    assert stored["confidence"] == pytest.approx(0.97)
    assert opened(server, entry) == 1


async def test_a_heartbeat_marks_the_camera_alive(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    _, entry, _ = await rig(pipeline, isapi)
    beat = fixture(
        "hikvision/heartbeat.xml.fixture",
        dateTime=datetime.now(SHANGHAI).isoformat(timespec="seconds"),
    )
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        reply = await http.post(
            entry.push_url, content=beat, headers={"Content-Type": "application/xml"}
        )
    assert reply.status_code == 200, reply.text
    assert await pipeline.redis.zscore(keys.seen(keys.lot_tag(DEMO)), entry.device_id) is not None
    assert await pipeline.fetchval("SELECT count(*) FROM camera_pushes") == 0


async def test_an_entity_declaration_is_refused_and_dead_lettered(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    _, entry, _ = await rig(pipeline, isapi)
    body = fixture("hikvision/entity-bomb.xml.fixture")
    reply = await push(entry, body)
    assert reply.status_code == 400
    row = await pipeline.conn.fetchrow("SELECT reason, device_id FROM dead_letters")
    assert row is not None
    assert (row["reason"].split(":")[0], row["device_id"]) == ("bad_xml", entry.device_id)


async def test_a_barrier_call_that_fails_is_an_anomaly_of_the_lane(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    server, _ = isapi
    _, entry, _ = await rig(pipeline, isapi)
    server.credentials[entry.prefix] = ("changbo", "a password the platform does not know")
    reply = await push(entry, hikvision_event(entry, plate=f"蓝{PLATE}", at=datetime.now(UTC)))
    assert reply.status_code == 200
    assert opened(server, entry) == 0
    await wait_rows(pipeline, "SELECT count(*) FROM anomalies WHERE kind = 'command_failed'")


async def test_an_unknown_camera_is_refused_and_dead_lettered(
    pipeline: Pipeline, isapi: tuple[IsapiServer, int]
) -> None:
    adapter, entry, _ = await rig(pipeline, isapi)
    xml = hikvision_event(entry, plate=f"蓝{PLATE}", at=datetime.now(UTC))
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        reply = await http.post(
            f"{adapter.base_url}/cameras/hikvision/not-a-camera/secret",
            files=hikvision_parts(xml),
        )
        # A Vzenith URL for a Hikvision camera is not this camera either.
        vendor = await http.post(
            entry.push_url.replace("/hikvision/", "/vzenith/"), files=hikvision_parts(xml)
        )
    assert (reply.status_code, vendor.status_code) == (401, 401)
    reasons = [
        r["reason"].split(":")[0]
        for r in await pipeline.conn.fetch("SELECT reason FROM dead_letters ORDER BY id")
    ]
    assert reasons == ["unknown_camera", "wrong_vendor"]

    async def nothing() -> bool:
        return await pipeline.fetchval("SELECT count(*) FROM passages") == 0

    await eventually(nothing, what="no passage")
