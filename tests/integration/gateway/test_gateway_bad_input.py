"""Bad input from devices: matrix rows M6 (malformed payloads) and M7 (the broker refuses)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pipekit import DEMO, Device, Pipeline, eventually

from parking.devices import service as devices

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC).isoformat()


def _passage(device: str, seq: object, /, **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "device_id": device,
        "seq": seq,
        "observed_at": NOW,
        "direction": "in",
        "plate": "赣B12345",
        "plate_color": "blue",
        "confidence": 0.9,
        "image_ref": "x.jpg",
    }
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}, ensure_ascii=False).encode()


def corpus(device: str, other: str) -> list[tuple[str, bytes]]:
    """(expected reason code, payload): every way the contract can be broken, and noise."""
    cases: list[tuple[str, bytes]] = [
        ("bad_json", b"{"),
        ("bad_json", b"not json at all"),
        ("bad_json", b""),
        ("bad_json", b'{"device_id": "' + device.encode() + b'", "seq": 1,}'),
        ("*", b"[" * 5000),
        ("invalid_utf8", b'{"device_id": "\xff\xfe", "seq": 1}'),
        ("invalid_utf8", _passage(device, 40)[:-2] + b'\xc3\x28"}'),
        ("wrong_type", b"[1, 2, 3]"),
        ("wrong_type", b"null"),
        ("wrong_type", b"42"),
        ("wrong_type", _passage(device, "41")),
        ("seq_out_of_range", _passage(device, 0)),
        ("seq_out_of_range", _passage(device, -3)),
        ("seq_out_of_range", _passage(device, 2**53 + 1)),
        ("wrong_type", _passage(device, 1.5)),
        ("wrong_type", _passage(device, 42, plate=12345)),
        ("wrong_type", _passage(device, 43, direction="sideways")),
        ("wrong_type", _passage(device, 44, confidence=1.7)),
        ("wrong_type", _passage(device, 45, plate="赣" * 40)),
        ("wrong_type", _passage(device, 46, plate_color="purple")),
        ("missing_field", _passage(device, 47, direction=...)),
        ("missing_field", _passage(device, ..., observed_at=NOW)),
        ("unknown_field", _passage(device, 48, status="paid")),
        ("unknown_field", _passage(device, 49, amount=0)),
        ("time_without_offset", _passage(device, 50, observed_at="2026-11-27T08:00:00")),
        ("wrong_type", _passage(device, 51, observed_at="yesterday")),
        ("device_mismatch", _passage(other, 52)),
        ("device_mismatch", _passage("gz-nobody", 53)),
        ("too_large", _passage(device, 54, image_ref="x" * 9000)),
        ("too_large", b'{"pad": "' + b"a" * (1024 * 1024) + b'"}'),
    ]
    rng = random.Random(6)
    for n in range(60):
        size = rng.choice([1, 7, 64, 700, 5000])
        noise = bytes(rng.getrandbits(8) for _ in range(size))
        cases.append(("*", noise))
        # Valid JSON, broken in one random field.
        field = rng.choice(["seq", "plate", "direction", "observed_at", "confidence", "device_id"])
        # values no field accepts (a string could be a valid, if unreadable, plate)
        value = rng.choice([[], {}, True, 2**64, -1.5, [None]])
        cases.append(("*", _passage(device, 100 + n, **{field: value})))
    return cases


class Publisher:
    """A device's own MQTT connection that waits for each PUBACK."""

    def __init__(self, pipe: Pipeline, device: Device) -> None:
        self._done = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device.device_id, protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(device.device_id, device.password)
        self.client.connect(pipe.settings.mqtt_host, pipe.settings.mqtt_port)
        self.client.loop_start()

    def send(self, topic: str, payloads: list[bytes]) -> None:
        infos = [self.client.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_m6_every_malformed_payload_is_acked_dead_lettered_verbatim_and_counted(
    pipeline: Pipeline,
) -> None:
    gate = await pipeline.add_gate("in1")
    other = await pipeline.add_gate("out1")
    gateway = pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()
    cases = corpus(gate.device_id, other.device_id)
    publisher = await asyncio.to_thread(Publisher, pipeline, gate)
    try:
        topic = pipeline.topics.passages(DEMO, "in1")
        await asyncio.to_thread(publisher.send, topic, [p for _, p in cases])

        async def all_kept() -> bool:
            n = await pipeline.fetchval("SELECT count(*) FROM dead_letters")
            return n == len(cases)

        await eventually(all_kept, what="every malformed payload in the dead letters", within=60)
        rows = await pipeline.conn.fetch("SELECT reason, payload, topic FROM dead_letters")
        assert sorted(r["payload"] for r in rows) == sorted(p for _, p in cases)
        assert all(r["reason"] and r["topic"] == topic for r in rows)
        by_payload = {bytes(r["payload"]): r["reason"].split(":", 1)[0] for r in rows}
        for expected, payload in cases:
            if expected != "*":
                assert by_payload[payload] == expected, (payload[:80], by_payload[payload])
        # The pipeline is alive and well after the corpus.
        await asyncio.to_thread(publisher.send, topic, [_passage(gate.device_id, 1)])

        async def one_stored() -> bool:
            return await pipeline.fetchval("SELECT count(*) FROM passages") == 1

        await eventually(one_stored, what="a valid passage after the corpus")
        assert gateway.alive()
        listed = pipeline.cli("deadletters", "list", "--json", "--limit", "500")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == len(cases)
        # Counted: the gateway's metric and the log agree with the store.
        assert "dead_lettered" in gateway.log()
    finally:
        await asyncio.to_thread(publisher.close)


def _pub(
    pipe: Pipeline, user: str, password: str, topic: str, payload: bytes
) -> subprocess.CompletedProcess[str]:
    s = pipe.settings
    return subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            s.mqtt_host,
            "-p",
            str(s.mqtt_port),
            "-u",
            user,
            "-P",
            password,
            "-i",
            f"{user}-acl-test",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            topic,
            "-s",
        ],
        input=payload.decode(),
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )


async def test_m7_the_broker_refuses_foreign_topics_wrong_passwords_and_revoked_devices(
    pipeline: Pipeline,
) -> None:
    gate = await pipeline.add_gate("in1")
    other_lot = await pipeline.fetchval(
        "SELECT lot_id FROM lanes WHERE lot_id <> $1 ORDER BY lot_id LIMIT 1", DEMO
    )
    victim = await pipeline.add_gate("in1", str(other_lot))
    pipeline.gateway().start()
    pipeline.persister().start()
    await pipeline.subscribed()

    # Another lot's lane, and another device's status topic: published, never delivered.
    foreign = _pub(
        pipeline,
        gate.device_id,
        gate.password,
        pipeline.topics.passages(str(other_lot), "in1"),
        _passage(victim.device_id, 1),
    )
    spoofed_status = _pub(
        pipeline,
        gate.device_id,
        gate.password,
        pipeline.topics.status(victim.device_id),
        json.dumps({"device_id": victim.device_id, "online": False, "at": NOW}).encode(),
    )
    wrong = _pub(
        pipeline, gate.device_id, "not-the-password", pipeline.topics.passages(DEMO, "in1"), b"{}"
    )
    assert wrong.returncode != 0
    assert "not authori" in (wrong.stderr + wrong.stdout).lower()
    await devices.revoke_device(
        pipeline.conn, victim.device_id, at=datetime.now(UTC), broker=pipeline.broker
    )
    await asyncio.sleep(0.5)  # the broker reloads its files on SIGHUP
    revoked = _pub(
        pipeline,
        victim.device_id,
        victim.password,
        pipeline.topics.passages(str(other_lot), "in1"),
        _passage(victim.device_id, 2),
    )
    assert revoked.returncode != 0, revoked
    # A legitimate event afterwards arrives, so the pipeline was listening all along.
    ok = _pub(
        pipeline,
        gate.device_id,
        gate.password,
        pipeline.topics.passages(DEMO, "in1"),
        _passage(gate.device_id, 1),
    )
    assert ok.returncode == 0, ok.stderr

    async def control_stored() -> bool:
        return await pipeline.fetchval("SELECT count(*) FROM device_events") == 1

    await eventually(control_stored, what="the legitimate event")
    await asyncio.sleep(1.0)
    assert await pipeline.fetchval("SELECT count(*) FROM device_events") == 1
    assert await pipeline.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert (
        await pipeline.fetchval("SELECT count(*) FROM anomalies WHERE kind = 'device_offline'") == 0
    )
    assert await pipeline.fetchval("SELECT device_id FROM device_events") == gate.device_id
    del foreign, spoofed_status
