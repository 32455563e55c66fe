"""A car through real cameras' protocols is the same car as through the MQTT contract: the
same passages, session, bill and lane text, because both go through one ingest path."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from datetime import datetime, timedelta
from typing import Any

import httpx
from camerakit import add_camera, start_adapter, vzenith_push, wait_rows
from pipekit import DEMO, Device, Pipeline

from gateways.cameras import lane_display
from parking.clock import SHANGHAI
from parking.devices import service as devices
from parking.devices.model import Vendor

MQTT_CAR = "赣B11111"
CAMERA_CAR = "赣B22222"


def _publish(pipe: Pipeline, device: Device, topic: str, payload: dict[str, Any]) -> None:
    s = pipe.settings
    subprocess.run(
        [
            "mosquitto_pub", "-h", s.mqtt_host, "-p", str(s.mqtt_port), "-u", device.device_id,
            "-P", device.password, "-i", device.device_id, "-V", "mqttv5", "-q", "1",
            "-t", topic, "-m", json.dumps(payload, ensure_ascii=False),
        ],
        check=True,
        timeout=10,
    )  # fmt: skip


def _watch(pipe: Pipeline, topic: str) -> subprocess.Popen[str]:
    s = pipe.settings
    return subprocess.Popen(
        [
            "mosquitto_sub", "-h", s.mqtt_host, "-p", str(s.mqtt_port), "-u", s.mqtt_username,
            "-P", s.mqtt_password, "-V", "mqttv5", "-q", "1", "-t", topic, "-C", "1", "-W", "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _passage(
    device: Device, direction: str, plate: str, observed: datetime, sent: datetime
) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "seq": 1,
        "observed_at": observed.isoformat(),
        "sent_at": sent.isoformat(),
        "direction": direction,
        "plate": plate,
        "plate_color": "blue",
        "confidence": 0.96,
    }


async def test_a_car_through_vzenith_cameras_is_the_car_the_mqtt_gates_see(
    pipeline: Pipeline,
) -> None:
    # The MQTT gates first, as the README walkthrough drives them.
    entry_gate = await pipeline.add_gate("in1")
    exit_gate = await pipeline.add_gate("out1")
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    mqtt_exit = datetime.now(SHANGHAI).replace(microsecond=0)
    _publish(
        pipeline,
        entry_gate,
        pipeline.topics.passages(DEMO, "in1"),
        _passage(entry_gate, "in", MQTT_CAR, mqtt_exit - timedelta(minutes=65), mqtt_exit),
    )
    await wait_rows(pipeline, "SELECT count(*) FROM sessions WHERE plate = $1", MQTT_CAR)
    watch = _watch(pipeline, pipeline.topics.commands(DEMO, "out1"))
    await asyncio.sleep(0.5)
    _publish(
        pipeline,
        exit_gate,
        pipeline.topics.passages(DEMO, "out1"),
        _passage(exit_gate, "out", MQTT_CAR, mqtt_exit, mqtt_exit),
    )
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    mqtt_command = json.loads(out)
    await wait_rows(pipeline, "SELECT count(*) FROM bills WHERE plate = $1", MQTT_CAR)

    # The lot's gates are replaced by Vzenith cameras; another car, the same stay.
    now = datetime.now(SHANGHAI)
    for gate in (entry_gate, exit_gate):
        await devices.revoke_device(pipeline.conn, gate.device_id, at=now, broker=pipeline.broker)
    adapter = await start_adapter(pipeline)
    in_cam = await add_camera(
        pipeline, "in1", Vendor.VZENITH, "fe71e106-00000001", lot=DEMO, base_url=adapter.base_url
    )
    out_cam = await add_camera(
        pipeline, "out1", Vendor.VZENITH, "fe71e106-00000002", lot=DEMO, base_url=adapter.base_url
    )
    camera_exit = datetime.now(SHANGHAI).replace(microsecond=0)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        await http.post(
            in_cam.push_url,
            content=vzenith_push(
                in_cam,
                plate=CAMERA_CAR,
                plateid=1,
                at=camera_exit - timedelta(minutes=65),
                offline=True,
            ),
        )
        await wait_rows(pipeline, "SELECT count(*) FROM sessions WHERE plate = $1", CAMERA_CAR)
        reply = await http.post(
            out_cam.push_url,
            content=vzenith_push(out_cam, plate=CAMERA_CAR, plateid=1, at=camera_exit),
        )
    await wait_rows(pipeline, "SELECT count(*) FROM bills WHERE plate = $1", CAMERA_CAR)

    # The lane said the same thing: open, the same text (the plate aside), on the LED.
    answer = json.loads(reply.content)["Response_AlarmInfoPlate"]
    assert (answer["info"], mqtt_command["action"]) == ("ok", "open")
    display = mqtt_command["display"].replace(MQTT_CAR, CAMERA_CAR)
    [serial] = answer["serialData"]
    assert (
        base64.b64decode(serial["data"]) == lane_display.lines_and_voice(display, opens=True).packet
    )

    # The system of record holds the same stay and bill.
    sessions = {
        r["plate"]: r
        for r in await pipeline.conn.fetch(
            "SELECT plate, status, fee_fen, tariff_id, tariff_version, exit_at - entry_at AS stay "
            "FROM sessions"
        )
    }
    same = ("status", "fee_fen", "tariff_id", "tariff_version", "stay")
    assert [sessions[CAMERA_CAR][k] for k in same] == [sessions[MQTT_CAR][k] for k in same]
    assert sessions[CAMERA_CAR]["stay"] == timedelta(minutes=65)
    bills = {
        r["plate"]: (r["amount_fen"], r["status"])
        for r in await pipeline.conn.fetch("SELECT plate, amount_fen, status FROM bills")
    }
    assert bills[CAMERA_CAR] == bills[MQTT_CAR]
    passages = {
        (r["plate"], r["direction"]): r
        for r in await pipeline.conn.fetch(
            "SELECT plate, direction, plate_color, confidence, outcome, hold_reason FROM passages"
        )
    }
    for direction in ("in", "out"):
        mqtt_row, camera_row = passages[(MQTT_CAR, direction)], passages[(CAMERA_CAR, direction)]
        assert [camera_row[k] for k in ("plate_color", "confidence", "outcome", "hold_reason")] == [
            mqtt_row[k] for k in ("plate_color", "confidence", "outcome", "hold_reason")
        ]
