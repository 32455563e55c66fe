"""Simulated cameras speaking their makers' exact formats (``parking cameras simulate``).

Beside the MQTT device simulators (``counterparts/devices``), these drive the lots
whose gates are cameras: cars arrive at the entry lanes and leave by the exit lanes,
each read pushed as the real unit pushes it.

- A Vzenith camera POSTs ``AlarmInfoPlate`` JSON (a small JPEG scene and plate crop in
  base64), a multipart heartbeat every 30 s, and obeys the reply: ``info: "ok"`` opens
  its barrier, ``serialData`` is checked as a 0x6E LED frame. A push that fails is
  kept (up to 9000, as the camera does) and sent again with ``isoffline: 1`` while
  the server answers ``ContinuePushOffline`` with ``continue: 1``.
- A Hikvision camera POSTs multipart ``anpr.xml`` + ``detectionPicture.jpg`` +
  ``licensePlatePicture.jpg``, an ``inactive`` heartbeat, and serves ISAPI with HTTP
  Digest: ``PUT /ISAPI/Parking/channels/1/barrierGate`` opens its barrier.

The payloads follow the fixtures of tests/integration/cameras (their sources there).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import io
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import httpx
import msgspec
from PIL import Image

from gateways.cameras import lane_display
from gateways.cameras.hikvision import BARRIER_PATH
from parking.clock import SHANGHAI
from parking.devices.model import FleetCamera, Vendor

#: The offline store of a Vzenith unit (document 2.1.2).
OFFLINE_MAX: Final = 9000
HEARTBEAT_EVERY_S: Final = 30.0
_PROVINCE_PLATES: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> bytes:
    """A small real JPEG (the adapter refuses anything that is not one)."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=70)
    return out.getvalue()


def random_plate(rng: random.Random) -> str:
    return "赣B" + "".join(rng.choice(_PROVINCE_PLATES) for _ in range(5))


# ------------------------------------------------------------------ Vzenith


def vzenith_record(
    *,
    serial: str,
    plate: str | None,
    plateid: int,
    at: datetime,
    offline: bool = False,
    confidence: int = 96,
    scene: bytes | None = None,
    crop: bytes | None = None,
) -> dict[str, Any]:
    """An ``AlarmInfoPlate`` as a Vzenith IVS unit pushes it (document 2.1.1)."""
    local = at.astimezone(SHANGHAI)
    scene_text = base64.b64encode(scene).decode() if scene else ""
    crop_text = base64.b64encode(crop).decode() if crop else ""
    return {
        "AlarmInfoPlate": {
            "channel": 0,
            "deviceName": "IVS",
            "ipaddr": "192.168.1.100",
            "result": {
                "PlateResult": {
                    "bright": 0,
                    "carBright": 0,
                    "carColor": 255,
                    "colorType": 1 if plate else 0,
                    "colorValue": 0,
                    "confidence": confidence if plate else 0,
                    "direction": 4,
                    "imageFile": scene_text,
                    "imageFileLen": len(scene) if scene else 0,
                    "imageFragmentFile": crop_text,
                    "imageFragmentFileLen": len(crop) if crop else 0,
                    "gioouts": [{"ctrltype": 0, "ionum": "0"}],
                    "is_fake_plate": 0,
                    "isoffline": 1 if offline else 0,
                    "license": plate or "_无_",
                    "plateid": plateid,
                    "timeStamp": {
                        "Timeval": {
                            "decday": local.day,
                            "dechour": local.hour,
                            "decmin": local.minute,
                            "decmon": local.month,
                            "decsec": local.second,
                            "decyear": local.year,
                            "sec": int(at.timestamp()),
                            "usec": at.microsecond,
                        }
                    },
                    "timeUsed": 0,
                    "triggerType": 8,
                    "type": 1 if plate else 31,
                }
            },
            "serialno": serial,
            "user_data": "",
        }
    }


def vzenith_heartbeat_form(serial: str) -> dict[str, str]:
    """The multipart fields of a Vzenith heartbeat (document 2.5.1)."""
    return {
        "device_name": "IVS",
        "ipaddr": "192.168.1.100",
        "port": "80",
        "user_name": "admin",
        "pass_wd": "simulated",
        "serialno": serial,
        "channel_num": "1",
    }


def check_led_frame(data: str, length: int) -> bytes:
    """A serialData entry's bytes, checked as the board would (length, header, CRC)."""
    packet = base64.b64decode(data)
    if len(packet) != length or packet[:4] != b"\x00\x64\xff\xff":
        raise ValueError("not a LED board packet")
    crc = lane_display.crc16_modbus(packet[:-2])
    if packet[-2:] != bytes((crc & 0xFF, crc >> 8)):
        raise ValueError("LED packet CRC mismatch")
    return packet


# ------------------------------------------------------------------ Hikvision


def hikvision_event_xml(
    *,
    serial: str,
    plate: str | None,
    at: datetime,
    event_uuid: str,
    history: bool = False,
    confidence: int = 97,
    model: str = "DS-TCG405-E",
) -> bytes:
    """An ANPR ``EventNotificationAlert`` as a Chinese-firmware unit sends it (the colour
    before the plate), shaped after the fixtures' samples."""
    local = at.astimezone(SHANGHAI)
    stamp = local.isoformat(timespec="milliseconds")
    licence = f"蓝{plate}" if plate else "无车牌"
    colour = "blue" if plate else "unknown"
    abs_time = local.strftime("%Y%m%d%H%M%S") + f"{local.microsecond // 1000:03d}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">\n'
        "<ipAddress>192.168.1.64</ipAddress>\n<portNo>80</portNo>\n<protocol>HTTP</protocol>\n"
        "<macAddress>44:a6:42:f3:2a:d7</macAddress>\n<channelID>1</channelID>\n"
        f"<dateTime>{stamp}</dateTime>\n<activePostCount>1</activePostCount>\n"
        "<eventType>ANPR</eventType>\n<eventState>active</eventState>\n"
        "<eventDescription>ANPR</eventDescription>\n<channelName>Camera 01</channelName>\n"
        "<ANPR>\n"
        f"<licensePlate>{escape(licence)}</licensePlate>\n<line>1</line>\n"
        f"<direction>forward</direction>\n<confidenceLevel>{confidence}</confidenceLevel>\n"
        f"<plateType>92TypeCivil</plateType>\n<plateColor>{colour}</plateColor>\n"
        "<vehicleType>vehicle</vehicleType>\n"
        f"<alarmDataType>{1 if history else 0}</alarmDataType>\n"
        "<pictureInfoList>\n"
        "<pictureInfo>\n<fileName>licensePlatePicture.jpg</fileName>\n"
        f"<type>licensePlatePicture</type>\n<dataType>0</dataType>\n<absTime>{abs_time}</absTime>\n"
        "</pictureInfo>\n"
        "<pictureInfo>\n<fileName>detectionPicture.jpg</fileName>\n"
        f"<type>detectionPicture</type>\n<dataType>0</dataType>\n<absTime>{abs_time}</absTime>\n"
        "</pictureInfo>\n</pictureInfoList>\n<listType>temporary</listType>\n</ANPR>\n"
        f"<UUID>{event_uuid}</UUID>\n<picNum>2</picNum>\n"
        f"<deviceUUID>{escape(model)} {escape(serial)}</deviceUUID>\n"
        "</EventNotificationAlert>\n"
    ).encode()


def hikvision_heartbeat_xml(serial: str, at: datetime, model: str = "DS-TCG405-E") -> bytes:
    stamp = at.astimezone(SHANGHAI).isoformat(timespec="seconds")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">\n'
        "<ipAddress>192.168.1.64</ipAddress>\n<portNo>80</portNo>\n<protocol>HTTP</protocol>\n"
        "<macAddress>44:a6:42:f3:2a:d7</macAddress>\n<channelID>1</channelID>\n"
        f"<dateTime>{stamp}</dateTime>\n<activePostCount>0</activePostCount>\n"
        "<eventType>videoloss</eventType>\n<eventState>inactive</eventState>\n"
        "<eventDescription>videoloss alarm</eventDescription>\n"
        f"<deviceUUID>{escape(model)} {escape(serial)}</deviceUUID>\n"
        "</EventNotificationAlert>\n"
    ).encode()


class IsapiServer:
    """The ISAPI side of simulated Hikvision cameras on one port, each under
    ``/cam/<serial>``: HTTP Digest (MD5, qop=auth) as the units ask, and
    ``PUT .../ISAPI/Parking/channels/1/barrierGate`` opening that camera's barrier."""

    def __init__(self, credentials: dict[str, tuple[str, str]]) -> None:
        #: path prefix -> (user, password)
        self.credentials = credentials
        self.opened: collections.Counter[str] = collections.Counter()
        self.refused: int = 0
        self.bodies: list[bytes] = []
        self._realm = "IP Camera(C12345678)"
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer, extra = self._handle(method, path, headers, body)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                    f"Content-Length: {len(answer)}\r\n{extra}\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, bytes, str]:
        prefix, sep, rest = path.partition("/ISAPI/")
        credential = self.credentials.get(prefix)
        if not sep or credential is None or f"/ISAPI/{rest}" != BARRIER_PATH or method != "PUT":
            return "404 Not Found", _status(4, "Invalid Operation"), ""
        if not self._authorised(method, path, headers.get("authorization", ""), credential):
            self.refused += 1
            nonce = secrets.token_hex(16)
            challenge = (
                f'WWW-Authenticate: Digest realm="{self._realm}", qop="auth", nonce="{nonce}"\r\n'
            )
            return "401 Unauthorized", b"", challenge
        self.bodies.append(body)
        if b"<ctrlMode>open</ctrlMode>" in body:
            self.opened[prefix] += 1
        return "200 OK", _status(1, "OK"), ""

    def _authorised(self, method: str, uri: str, header: str, credential: tuple[str, str]) -> bool:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "digest":
            return False
        fields = {}
        for part in rest.split(","):
            key, _, value = part.strip().partition("=")
            fields[key.lower()] = value.strip('"')
        user, password = credential
        if fields.get("username") != user or fields.get("uri") != uri:
            return False
        ha1 = _md5(f"{user}:{fields.get('realm', '')}:{password}")
        ha2 = _md5(f"{method}:{uri}")
        expected = _md5(
            f"{ha1}:{fields.get('nonce', '')}:{fields.get('nc', '')}:{fields.get('cnonce', '')}"
            f":{fields.get('qop', '')}:{ha2}"
        )
        return secrets.compare_digest(expected, fields.get("response", ""))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _status(code: int, text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ResponseStatus version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">\n'
        f"<requestURL>{BARRIER_PATH}</requestURL>\n<statusCode>{code}</statusCode>\n"
        f"<statusString>{text}</statusString>\n</ResponseStatus>\n"
    ).encode()


# ------------------------------------------------------------------ cameras


@dataclass
class SimulatedCamera:
    camera: FleetCamera
    push_url: str
    plateid: int = 0
    offline: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=OFFLINE_MAX)
    )
    last_beat: float = 0.0

    @property
    def device_id(self) -> str:
        return self.camera.device.device_id


@dataclass
class SimTotals:
    pushes: int = 0
    opened: int = 0
    held: int = 0
    offline_sent: int = 0
    failed: int = 0
    heartbeats: int = 0
    bad_replies: int = 0


class CameraCity:
    """Cars through the simulated cameras' lots at ``rate`` reads a second."""

    def __init__(
        self,
        cameras: Sequence[SimulatedCamera],
        *,
        rate: float,
        seed: int,
        isapi: IsapiServer | None,
        http: httpx.AsyncClient,
    ) -> None:
        self.cameras = list(cameras)
        self.rate = rate
        self.rng = random.Random(seed)
        self.isapi = isapi
        self.http = http
        self.totals = SimTotals()
        self.inside: dict[str, list[str]] = collections.defaultdict(list)
        self.scene = jpeg((90, 110, 120))
        self.crop = jpeg((20, 60, 180), (140, 44))

    async def run(self, duration: float | None) -> SimTotals:
        started = time.monotonic()
        while duration is None or time.monotonic() - started < duration:
            await self.beat()
            await self.step()
            await asyncio.sleep(1.0 / self.rate)
        return self.totals

    async def beat(self) -> None:
        now = time.monotonic()
        for cam in self.cameras:
            if now - cam.last_beat >= HEARTBEAT_EVERY_S:
                cam.last_beat = now
                await self.heartbeat(cam)

    async def step(self) -> None:
        cam = self.rng.choice(self.cameras)
        lot = cam.camera.device.lot_id
        inside = self.inside[lot]
        if cam.camera.device.direction == "out":
            if not inside:
                return
            plate: str | None = inside.pop(self.rng.randrange(len(inside)))
        else:
            plate = random_plate(self.rng) if self.rng.random() > 0.02 else None
        opened = await self.read(cam, plate, datetime.now(UTC))
        if opened and plate and cam.camera.device.direction == "in":
            inside.append(plate)

    async def heartbeat(self, cam: SimulatedCamera) -> None:
        try:
            if cam.camera.vendor is Vendor.VZENITH:
                body, content_type = multipart_form(vzenith_heartbeat_form(cam.camera.serial))
                response = await self.http.post(
                    cam.push_url, content=body, headers={"Content-Type": content_type}
                )
            else:
                response = await self.http.post(
                    cam.push_url,
                    content=hikvision_heartbeat_xml(cam.camera.serial, datetime.now(UTC)),
                    headers={"Content-Type": "application/xml"},
                )
        except httpx.HTTPError:
            self.totals.failed += 1
            return
        if response.status_code == 200:
            self.totals.heartbeats += 1

    async def read(self, cam: SimulatedCamera, plate: str | None, at: datetime) -> bool:
        """One read pushed as the camera pushes it; True when its barrier opened."""
        self.totals.pushes += 1
        if cam.camera.vendor is Vendor.VZENITH:
            return await self._vzenith(cam, plate, at)
        return await self._hikvision(cam, plate, at)

    async def _vzenith(self, cam: SimulatedCamera, plate: str | None, at: datetime) -> bool:
        cam.plateid += 1
        record = vzenith_record(
            serial=cam.camera.serial,
            plate=plate,
            plateid=cam.plateid,
            at=at,
            scene=self.scene,
            crop=self.crop,
        )
        reply = await self._post_json(cam.push_url, record)
        if reply is None:
            record["AlarmInfoPlate"]["result"]["PlateResult"]["isoffline"] = 1
            cam.offline.append(record)
            return False
        await self._drain(cam)
        return self._obey(reply)

    async def _drain(self, cam: SimulatedCamera) -> None:
        while cam.offline:
            reply = await self._post_json(cam.push_url, cam.offline[0])
            go_on = (reply or {}).get("Response_AlarmInfoPlate", {}).get("ContinuePushOffline", {})
            if reply is None or go_on.get("continue") != 1:
                return
            cam.offline.popleft()
            self.totals.offline_sent += 1

    async def _post_json(self, url: str, record: dict[str, Any]) -> dict[str, Any] | None:
        try:
            # The units send JSON with a form content type; the adapter reads the body.
            response = await self.http.post(
                url,
                content=msgspec.json.encode(record),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError:
            self.totals.failed += 1
            return None
        if response.status_code != 200:
            self.totals.failed += 1
            return None
        try:
            reply = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            self.totals.bad_replies += 1
            return None
        return reply if isinstance(reply, dict) else None

    def _obey(self, reply: dict[str, Any]) -> bool:
        answer = reply.get("Response_AlarmInfoPlate", {})
        for entry in answer.get("serialData") or ():
            try:
                check_led_frame(entry["data"], entry["dataLen"])
            except (KeyError, ValueError):
                self.totals.bad_replies += 1
        if answer.get("info") == "ok":
            self.totals.opened += 1
            return True
        self.totals.held += 1
        return False

    async def _hikvision(self, cam: SimulatedCamera, plate: str | None, at: datetime) -> bool:
        prefix = _isapi_prefix(cam.camera.control_url)
        before = self.isapi.opened[prefix] if self.isapi and prefix else 0
        xml = hikvision_event_xml(
            serial=cam.camera.serial, plate=plate, at=at, event_uuid=str(uuid.uuid4())
        )
        try:
            response = await self.http.post(
                cam.push_url,
                files=[
                    ("anpr.xml", ("anpr.xml", xml, "application/xml")),
                    (
                        "licensePlatePicture.jpg",
                        ("licensePlatePicture.jpg", self.crop, "image/jpeg"),
                    ),
                    ("detectionPicture.jpg", ("detectionPicture.jpg", self.scene, "image/jpeg")),
                ],
            )
        except httpx.HTTPError:
            self.totals.failed += 1
            return False
        if response.status_code != 200:
            self.totals.failed += 1
            return False
        opened = bool(self.isapi and prefix and self.isapi.opened[prefix] > before)
        if opened:
            self.totals.opened += 1
        else:
            self.totals.held += 1
        return opened


def _isapi_prefix(control_url: str | None) -> str | None:
    """The path a simulated camera's ISAPI lives under (``http://host:port/cam/<id>``)."""
    if not control_url:
        return None
    return urlsplit(control_url).path.rstrip("/")


def multipart_form(fields: dict[str, str]) -> tuple[bytes, str]:
    """Text fields as multipart/form-data (a Vzenith heartbeat): (body, content type)."""
    boundary = "----------------------------" + secrets.token_hex(6)
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    body = ("".join(chunks) + f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"
