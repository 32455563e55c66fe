"""The README walkthrough as a test: mosquitto_pub in, mosquitto_sub watches, the CLI reports."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta

from pipekit import DEMO, Device, Pipeline, eventually

from parking.clock import SHANGHAI
from parking.pricing import Pricer


def _pub(pipe: Pipeline, device: Device, topic: str, payload: str) -> None:
    s = pipe.settings
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            s.mqtt_host,
            "-p",
            str(s.mqtt_port),
            "-u",
            device.device_id,
            "-P",
            device.password,
            "-i",
            device.device_id,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ],
        check=True,
        timeout=10,
    )


def _watch(pipe: Pipeline, device: Device, topic: str) -> subprocess.Popen[str]:
    s = pipe.settings
    return subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            s.mqtt_host,
            "-p",
            str(s.mqtt_port),
            # As the README: the gate's own second connection would take over
            # its first (the broker makes the client id the username).
            "-u",
            s.mqtt_username,
            "-P",
            s.mqtt_password,
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_walkthrough_entry_and_exit_with_mosquitto_clients(pipeline: Pipeline) -> None:
    # The entry comes from a camera's outbox 65 minutes after it saw the car (this
    # copy sent now: v1.1 sent_at); a passage that old gets no command. The exit is
    # now. (A gate clock 65 minutes on, as before v1.1, is corrected: mqtt.md "Clocks".)
    exit_at = datetime.now(SHANGHAI).replace(microsecond=0)
    entry_at = exit_at - timedelta(minutes=65)
    entry_gate = await pipeline.add_gate("in1")
    exit_gate = await pipeline.add_gate("out1")
    gateway = pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()

    _pub(
        pipeline,
        entry_gate,
        pipeline.topics.passages(DEMO, "in1"),
        json.dumps(
            {
                "device_id": entry_gate.device_id,
                "seq": 1,
                "observed_at": entry_at.isoformat(),
                "sent_at": exit_at.isoformat(),
                "direction": "in",
                "plate": "赣B12345",
                "plate_color": "blue",
                "confidence": 0.97,
                "image_ref": "gz-demo-01/in1/20261127080003.jpg",
            },
            ensure_ascii=False,
        ),
    )

    async def entered() -> bool:
        return (await pipeline.fetchval("SELECT count(*) FROM sessions WHERE status = 'open'")) == 1

    await eventually(entered, what=f"the entry to be stored\n{gateway.log()[-3000:]}")

    watch_out = _watch(pipeline, exit_gate, pipeline.topics.commands(DEMO, "out1"))
    await _settle()
    _pub(
        pipeline,
        exit_gate,
        pipeline.topics.passages(DEMO, "out1"),
        json.dumps(
            {
                "device_id": exit_gate.device_id,
                "seq": 1,
                "observed_at": exit_at.isoformat(),
                "sent_at": exit_at.isoformat(),
                "direction": "out",
                "plate": "赣B12345",
                "plate_color": "blue",
                "confidence": 0.95,
                "image_ref": "gz-demo-01/out1/20261127090503.jpg",
            },
            ensure_ascii=False,
        ),
    )
    out, err = watch_out.communicate(timeout=40)
    assert watch_out.returncode == 0, err
    closed = json.loads(out)
    pricer = await Pricer.load(pipeline.conn)
    fee = pricer.price(lot_id=DEMO, plate="赣B12345", entry=entry_at, exit=exit_at).fee_fen
    assert closed["action"] == "open"
    assert closed["display"] == (
        f"赣B12345 停车1小时05分 应缴{fee // 100}.{fee % 100:02d}元 已离场后付"
    )

    async def stored() -> bool:
        return (
            await pipeline.fetchval("SELECT count(*) FROM sessions WHERE status = 'closed'")
        ) == 1

    await eventually(stored, what="the persister to store the closed session")
    listed = pipeline.cli("sessions", "list", "--plate", "赣B12345", "--json")
    assert listed.returncode == 0, listed.stderr
    [session] = json.loads(listed.stdout)
    assert session["lot_id"] == DEMO
    assert session["status"] == "closed"
    assert session["fee_fen"] == fee
    assert datetime.fromisoformat(session["entry_at"]) == entry_at
    assert datetime.fromisoformat(session["exit_at"]) == exit_at


async def _settle() -> None:
    # mosquitto_sub needs a moment to subscribe before the passage is published.
    await asyncio.sleep(0.5)
