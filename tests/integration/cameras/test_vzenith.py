"""Vzenith/臻识 conformance: each fixture through the camera adapter against the real stack
(PostgreSQL, Redis, the persister and the adapter as processes), the reply checked byte
for byte against what the vendor documents (docs/protocol.md, "Vzenith")."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from camerakit import (
    Adapter,
    Camera,
    add_camera,
    fixture,
    passages,
    start_adapter,
    vzenith_heartbeat,
    vzenith_push,
    wait_rows,
)
from pipekit import DEMO, Pipeline, eventually

from gateways.cameras.simulator import jpeg
from parking.clock import SHANGHAI
from parking.devices import service as devices
from parking.devices.model import Vendor
from parking.occupancy import keys, plate_flags
from parking.pricing import Pricer

PLATE = "赣B12345"
GREEN = b"\x00\xff\x00\x00"
RED = b"\xff\x00\x00\x00"


def _modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def led(lines: list[str], voice: str, colour: bytes) -> bytes:
    """The 0x6E frame a Vzenith lane's LED board takes, built here from the protocol
    document's layout (independently of gateways.cameras.lane_display)."""
    data = bytes((0, len(lines)))
    for number, line in enumerate(lines):
        text = line.encode("gbk")
        end = b"\x0d" if number < len(lines) - 1 else b"\x00"
        data += bytes((number, 0, 0, 5, 1)) + colour + bytes((len(text),)) + text + end
    spoken = voice.encode("gbk")
    data += b"\x0a" + bytes((len(spoken),)) + spoken + b"\x00"
    packet = b"\x00\x64\xff\xff\x6e" + bytes((len(data),)) + data
    crc = _modbus(packet)
    return packet + bytes((crc & 0xFF, crc >> 8))


def expected_reply(info: str, plateid: int, frame: bytes) -> bytes:
    data = base64.b64encode(frame).decode()
    return (
        f'{{"Response_AlarmInfoPlate":{{"info":"{info}","plateid":{plateid},"channelNum":0,'
        f'"content":"retransfer_stop","serialData":[{{"serialChannel":0,"data":"{data}",'
        f'"dataLen":{len(frame)}}}]}}}}'
    ).encode()


def continue_offline(plateid: int) -> bytes:
    return (
        f'{{"Response_AlarmInfoPlate":{{"ContinuePushOffline":{{"plateid":{plateid},"continue":1}},'
        f'"content":"retransfer_stop"}}}}'
    ).encode()


async def rig(
    pipe: Pipeline, in_serial: str = "fe71e106-57263272", out_serial: str = "eff50e18-e3d3862b"
) -> tuple[Adapter, Camera, Camera]:
    pipe.persister().start()
    adapter = await start_adapter(pipe)
    entry = await add_camera(
        pipe, "in1", Vendor.VZENITH, in_serial, lot=DEMO, base_url=adapter.base_url
    )
    leave = await add_camera(
        pipe, "out1", Vendor.VZENITH, out_serial, lot=DEMO, base_url=adapter.base_url
    )
    return adapter, entry, leave


async def push(camera: Camera, body: bytes, **headers: str) -> httpx.Response:
    # Units send the JSON with a form content type; the adapter must not trust it.
    sent = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.post(camera.push_url, content=body, headers=sent)


async def test_a_live_entry_with_pictures_opens_with_the_welcome_on_the_led_and_keeps_them(
    pipeline: Pipeline,
) -> None:
    adapter, entry, _ = await rig(pipeline)
    scene, crop = jpeg((90, 110, 120)), jpeg((20, 60, 180))
    now = datetime.now(UTC)
    reply = await push(
        entry, vzenith_push(entry, plate=PLATE, plateid=7, at=now, scene=scene, crop=crop)
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    frame = led([PLATE, "欢迎光临"], f"{PLATE},欢迎光临", GREEN)
    assert reply.content == expected_reply("ok", 7, frame)

    await wait_rows(pipeline, "SELECT count(*) FROM passages WHERE device_id = $1", entry.device_id)
    [stored] = await passages(pipeline, entry.device_id)
    assert (stored["plate"], stored["plate_color"], stored["direction"]) == (PLATE, "blue", "in")
    assert stored["confidence"] == pytest.approx(0.96)
    day = now.astimezone(SHANGHAI).strftime("%Y%m%d")
    digest = hashlib.sha256(scene).hexdigest()
    assert stored["image_ref"] == f"cam/{DEMO}/{day}/{digest}.jpg"
    assert (adapter.image_dir / day / f"{digest}.jpg").read_bytes() == scene
    images = await pipeline.fetchval(
        "SELECT images FROM camera_pushes WHERE device_id = $1", entry.device_id
    )
    assert images == [
        stored["image_ref"],
        f"cam/{DEMO}/{day}/{hashlib.sha256(crop).hexdigest()}.jpg",
    ]
    # The command went out in the reply: the core holds nothing to resend over MQTT.
    held = await pipeline.redis.hgetall(keys.commands(keys.lot_tag(DEMO)))
    assert held == {}
    record = await pipeline.fetchval(
        "SELECT vendor_record FROM camera_pushes WHERE device_id = $1", entry.device_id
    )
    assert base64.b64encode(scene).decode() not in bytes(record).decode()


async def test_an_exit_an_hour_after_a_backlog_entry_opens_with_the_fee_and_bills_it(
    pipeline: Pipeline,
) -> None:
    _, entry, leave = await rig(pipeline)
    exit_at = datetime.now(SHANGHAI).replace(microsecond=0)
    entry_at = exit_at - timedelta(minutes=65)
    backlog = await push(
        entry, vzenith_push(entry, plate=PLATE, plateid=1, at=entry_at, offline=True)
    )
    assert backlog.status_code == 200, backlog.text
    assert backlog.content == continue_offline(1)

    await wait_rows(pipeline, "SELECT count(*) FROM sessions WHERE status = 'open'")
    reply = await push(leave, vzenith_push(leave, plate=PLATE, plateid=1, at=exit_at))
    fee = (
        (await Pricer.load(pipeline.conn))
        .price(lot_id=DEMO, plate=PLATE, entry=entry_at, exit=exit_at)
        .fee_fen
    )
    owed = f"应缴{fee // 100}.{fee % 100:02d}元"
    frame = led(
        [PLATE, "停车1小时05分", owed, "已离场后付"],
        f"{PLATE},停车1小时05分,{owed},已离场后付",
        GREEN,
    )
    assert reply.content == expected_reply("ok", 1, frame)

    await wait_rows(pipeline, "SELECT count(*) FROM bills WHERE plate = $1", PLATE)
    session = await pipeline.conn.fetchrow("SELECT * FROM sessions WHERE plate = $1", PLATE)
    assert session is not None
    assert (session["status"], session["fee_fen"]) == ("closed", fee)
    assert (session["entry_at"], session["exit_at"]) == (entry_at, exit_at)
    assert await pipeline.fetchval("SELECT amount_fen FROM bills WHERE plate = $1", PLATE) == fee


async def test_arrears_hold_the_car_at_the_entry_with_the_pay_reference_on_the_led(
    pipeline: Pipeline,
) -> None:
    await pipeline.conn.execute(
        "UPDATE lots SET arrears_hold_after = interval '0' WHERE id = $1", DEMO
    )
    _, entry, leave = await rig(pipeline)
    exit_at = datetime.now(SHANGHAI).replace(microsecond=0) - timedelta(minutes=1)
    await push(
        entry,
        vzenith_push(entry, plate=PLATE, plateid=1, at=exit_at - timedelta(hours=2), offline=True),
    )
    await wait_rows(pipeline, "SELECT count(*) FROM sessions WHERE status = 'open'")
    await push(leave, vzenith_push(leave, plate=PLATE, plateid=1, at=exit_at, offline=True))
    await wait_rows(
        pipeline, "SELECT count(*) FROM bills WHERE plate = $1 AND status = 'open'", PLATE
    )
    # What the gateway's bill watch does when the bill commits.
    await plate_flags.FlagSync().run(pipeline.conn, pipeline.redis, datetime.now(UTC))

    reply = await push(entry, vzenith_push(entry, plate=PLATE, plateid=2, at=datetime.now(UTC)))
    display = [PLATE, "有欠费未缴", "请扫码缴费后入场", f"PAY:{PLATE}"]
    frame = led(display, f"{PLATE},有欠费未缴,请扫码缴费后入场", RED)
    assert reply.content == expected_reply("no", 2, frame)


async def test_a_replayed_push_gets_the_same_reply_and_is_applied_once(
    pipeline: Pipeline,
) -> None:
    _, entry, _ = await rig(pipeline)
    now = datetime.now(UTC)
    body = vzenith_push(entry, plate=PLATE, plateid=41, at=now)
    first = await push(entry, body)
    again = await push(entry, body)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    # The camera's backlog sends the same record once more (isoffline 1): same event.
    backlog = await push(entry, vzenith_push(entry, plate=PLATE, plateid=41, at=now, offline=True))
    assert backlog.content == continue_offline(41)
    await wait_rows(
        pipeline, "SELECT count(*) FROM device_events WHERE device_id = $1", entry.device_id
    )
    await eventually(
        lambda: _watermark(pipeline, entry.device_id), what="the camera's watermark to cover seq 1"
    )
    assert (
        await pipeline.fetchval(
            "SELECT count(*) FROM device_events WHERE device_id = $1", entry.device_id
        )
        == 1
    )
    assert len(await passages(pipeline, entry.device_id)) == 1
    assert await pipeline.fetchval("SELECT count(*) FROM sessions") == 1


async def _watermark(pipe: Pipeline, device_id: str) -> bool:
    seq = await pipe.fetchval("SELECT seq FROM device_watermarks WHERE device_id = $1", device_id)
    return seq == 1


async def test_a_camera_clock_a_year_behind_is_corrected_and_flagged(pipeline: Pipeline) -> None:
    _, entry, _ = await rig(pipeline)
    received = datetime.now(UTC)
    wrong = received - timedelta(days=365)
    reply = await push(entry, vzenith_push(entry, plate=PLATE, plateid=3, at=wrong))
    assert json.loads(reply.content)["Response_AlarmInfoPlate"]["info"] == "ok"
    await wait_rows(
        pipeline,
        "SELECT count(*) FROM anomalies WHERE kind = 'device_clock_skew' AND device_id = $1",
        entry.device_id,
    )
    [stored] = await passages(pipeline, entry.device_id)
    assert abs(stored["observed_at"] - wrong) < timedelta(seconds=1)
    assert abs(stored["event_at"] - received) < timedelta(seconds=30)
    session_entry = await pipeline.fetchval("SELECT entry_at FROM sessions WHERE plate = $1", PLATE)
    assert abs(session_entry - received) < timedelta(seconds=30)


async def test_a_read_without_a_plate_holds_the_car_and_shows_the_lane_code(
    pipeline: Pipeline,
) -> None:
    # The document's own sample (serial eff50e18-e3d3862b, plateid 123, license _无_), at
    # an entry lane.
    _, entry, _ = await rig(pipeline, in_serial="eff50e18-e3d3862b", out_serial="out-serial-1")
    reply = await push(entry, fixture("vzenith/no-plate.json.fixture"))
    display = ["无牌车", "请扫描车道二维码入场", f"LANE:{DEMO}/in1"]
    frame = led(display, "无牌车,请扫描车道二维码入场", RED)
    assert reply.content == expected_reply("no", 123, frame)
    await wait_rows(
        pipeline,
        "SELECT count(*) FROM anomalies WHERE kind = 'unplated' AND device_id = $1",
        entry.device_id,
    )


async def test_heartbeats_in_either_shape_mark_the_camera_alive(pipeline: Pipeline) -> None:
    _, entry, leave = await rig(
        pipeline, in_serial="d85b1269-8f942256", out_serial="QFX2182310150262"
    )
    body, content_type = vzenith_heartbeat()
    form = await push(entry, body, **{"Content-Type": content_type})
    assert form.status_code == 200, form.text
    assert form.content == b'{"Response_Heartbeat":{"info":"no"}}'
    alphadigi = await push(leave, fixture("vzenith/heartbeat-alphadigi.json.fixture"))
    assert alphadigi.content == b'{"Response_Heartbeat":{"info":"no"}}'
    seen = keys.seen(keys.lot_tag(DEMO))
    assert await pipeline.redis.zscore(seen, entry.device_id) is not None
    assert await pipeline.redis.zscore(seen, leave.device_id) is not None


async def test_an_io_trigger_push_is_answered_and_is_no_event(pipeline: Pipeline) -> None:
    _, entry, _ = await rig(pipeline, in_serial="d85b1269-8f942256")
    reply = await push(entry, fixture("vzenith/io-trigger.json.fixture"))
    assert reply.status_code == 200
    assert reply.content == b'{"Response_AlarmInfoPlate":{"info":"no","content":"retransfer_stop"}}'
    assert await pipeline.fetchval("SELECT count(*) FROM camera_pushes") == 0


async def test_garbage_is_refused_with_a_problem_and_dead_lettered_verbatim(
    pipeline: Pipeline,
) -> None:
    _, entry, _ = await rig(pipeline)
    body = fixture("vzenith/garbage.fixture")
    reply = await push(entry, body)
    assert reply.status_code == 400
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["detail"].startswith("bad_json")
    row = await pipeline.conn.fetchrow("SELECT * FROM dead_letters")
    assert row is not None
    assert (row["reason"].split(":")[0], row["device_id"]) == ("bad_json", entry.device_id)
    assert bytes(row["payload"]) == body
    assert row["topic"] == f"cameras/vzenith/{entry.device_id}"


async def test_unknown_wrong_secret_and_revoked_cameras_are_refused_and_dead_lettered(
    pipeline: Pipeline,
) -> None:
    adapter, entry, leave = await rig(pipeline)
    now = datetime.now(UTC)
    body = vzenith_push(entry, plate=PLATE, plateid=1, at=now)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        unknown = await http.post(f"{adapter.base_url}/cameras/vzenith/no-such-cam/x", content=body)
        wrong = await http.post(entry.push_url.rsplit("/", 1)[0] + "/not-the-secret", content=body)
        header = await http.post(
            entry.push_url.rsplit("/", 1)[0],
            content=body,
            auth=(entry.device_id, "not-the-secret-either"),
        )
    await devices.revoke_device(pipeline.conn, leave.device_id, at=now, broker=None)
    revoked = await push(leave, vzenith_push(leave, plate=PLATE, plateid=1, at=now))
    assert [r.status_code for r in (unknown, wrong, header, revoked)] == [401, 401, 401, 401]
    # One answer for all: nothing to probe for.
    assert unknown.json()["detail"] == revoked.json()["detail"]
    rows = await pipeline.conn.fetch(
        "SELECT reason, device_id, topic FROM dead_letters ORDER BY id"
    )
    assert [(r["reason"].split(":")[0], r["device_id"]) for r in rows] == [
        ("unknown_camera", None),
        ("wrong_secret", None),
        ("revoked_camera", leave.device_id),
    ]
    assert await pipeline.fetchval("SELECT count(*) FROM camera_pushes") == 0
    # A push URL's secret is in no log line.
    assert entry.secret not in adapter.proc.log()
    assert leave.secret not in adapter.proc.log()


async def test_the_header_login_is_the_same_camera_as_the_push_url(pipeline: Pipeline) -> None:
    _, entry, _ = await rig(pipeline)
    body = vzenith_push(entry, plate=PLATE, plateid=9, at=datetime.now(UTC))
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        reply = await http.post(
            entry.push_url.rsplit("/", 1)[0], content=body, auth=(entry.device_id, entry.secret)
        )
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.content)["Response_AlarmInfoPlate"]["info"] == "ok"


async def test_a_push_naming_another_cameras_serial_is_refused(pipeline: Pipeline) -> None:
    _, entry, _ = await rig(pipeline)
    body = vzenith_push(
        entry, plate=PLATE, plateid=1, at=datetime.now(UTC), serial="ffffffff-00000000"
    )
    reply = await push(entry, body)
    assert reply.status_code == 403
    reason = await pipeline.fetchval("SELECT reason FROM dead_letters")
    assert str(reason).startswith("serial_mismatch")
    assert await pipeline.fetchval("SELECT count(*) FROM camera_pushes") == 0


async def test_a_lot_that_allows_other_networks_refuses_pushes_from_elsewhere(
    pipeline: Pipeline,
) -> None:
    _, entry, _ = await rig(pipeline)
    listed = pipeline.cli("cameras", "sources", "--lot", DEMO, "--allow", "10.20.0.0/24")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"lot_id": DEMO, "networks": ["10.20.0.0/24"]}
    refused = await push(entry, vzenith_push(entry, plate=PLATE, plateid=1, at=datetime.now(UTC)))
    assert refused.status_code == 401
    reason = await pipeline.fetchval("SELECT reason FROM dead_letters")
    assert str(reason).startswith("source_not_allowed")
    opened = pipeline.cli("cameras", "sources", "--lot", DEMO, "--allow", "127.0.0.0/8")
    assert opened.returncode == 0, opened.stderr
    taken = await push(entry, vzenith_push(entry, plate=PLATE, plateid=1, at=datetime.now(UTC)))
    assert taken.status_code == 200, taken.text


def test_the_documents_sample_record_decodes_to_its_values() -> None:
    from gateways.cameras import vzenith
    from gateways.cameras.model import Recognition

    decoded = vzenith.decode(fixture("vzenith/plate-result-verbatim.json.fixture"), None)
    assert isinstance(decoded, Recognition)
    assert (decoded.plate, decoded.plate_color, decoded.confidence) == ("粤Z9065澳", "black", 0.96)
    assert decoded.observed_at == datetime(2023, 6, 9, 8, 39, 54, 687772, tzinfo=UTC)
    assert (decoded.serials, decoded.record_id, decoded.live) == (
        ("fe71e106-57263272",),
        21085,
        True,
    )
    assert decoded.push_key == "vz:21085@1686299994.687772"


async def test_a_camera_pushing_over_https_is_answered_the_same(pipeline: Pipeline) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = pipeline.tmp / "cert.pem", pipeline.tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pipeline.persister().start()
    adapter = await start_adapter(pipeline, PARKING_CAMERA_TLS=f"{cert_file},{key_file}")
    secure = adapter.base_url.replace("http://", "https://")
    entry = await add_camera(
        pipeline, "in1", Vendor.VZENITH, "fe71e106-57263272", lot=DEMO, base_url=secure
    )
    async with httpx.AsyncClient(trust_env=False, timeout=30, verify=False) as http:
        reply = await http.post(
            entry.push_url, content=vzenith_push(entry, plate=PLATE, plateid=5, at=now)
        )
    assert entry.push_url.startswith("https://")
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.content)["Response_AlarmInfoPlate"]["info"] == "ok"
