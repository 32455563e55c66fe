"""The camera conformance tests' kit: fixtures as cameras send them, cameras registered in
the device registry, and the camera adapter as a process beside the persister (pipekit)."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pipekit import Pipeline, Proc, eventually

from gateways.cameras.simulator import IsapiServer
from parking.clock import SHANGHAI
from parking.devices import cameras as camera_service
from parking.devices import service as devices
from parking.devices.model import Vendor

FIXTURES = Path(__file__).parent / "fixtures"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def fixture(name: str, **values: object) -> bytes:
    """A fixture's body (header of ``#`` lines and the blank line after it dropped, the
    file's final newline too), its ``${name}`` filled in; every one must be."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    assert lines[start] == "", f"{name}: a blank line must follow the header"
    body = "\n".join(lines[start + 1 :])
    body = body.removesuffix("\n")

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        assert key in values, f"{name}: no value for ${{{key}}}"
        return str(values[key])

    return _PLACEHOLDER.sub(fill, body).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Camera:
    device_id: str
    secret: str
    lot_id: str
    lane_id: str
    vendor: Vendor
    serial: str
    push_url: str
    control_url: str | None = None
    control: tuple[str, str] | None = None

    @property
    def prefix(self) -> str:
        """The path its simulated ISAPI lives under (Hikvision)."""
        assert self.control_url is not None
        return "/" + self.control_url.split("/", 3)[3]


async def add_camera(
    pipe: Pipeline,
    lane: str,
    vendor: Vendor,
    serial: str,
    *,
    lot: str,
    base_url: str,
    isapi_port: int | None = None,
) -> Camera:
    device_id = f"{lot}-{lane}-{pipe.run}-cam".lower()
    control_url = (
        f"http://127.0.0.1:{isapi_port}/cam/{device_id}" if vendor is Vendor.HIKVISION else None
    )
    made = await devices.add_device(
        pipe.conn,
        lot_id=lot,
        lane_id=lane,
        device_id=device_id,
        broker=None,
        camera=devices.CameraSpec(
            vendor=vendor,
            serial=serial,
            push_base_url=base_url,
            control_secrets=camera_service.control_secrets_path(pipe.settings.stack_dir),
            control_url=control_url,
        ),
    )
    assert made.push_url is not None
    control = None
    if made.control_user is not None and made.control_password is not None:
        control = (made.control_user, made.control_password)
    return Camera(
        made.device_id,
        made.password,
        lot,
        lane,
        vendor,
        serial,
        made.push_url,
        control_url,
        control,
    )


@dataclass
class Adapter:
    proc: Proc
    base_url: str
    image_dir: Path


async def start_adapter(pipe: Pipeline, **extra_env: str) -> Adapter:
    """``parking cameras serve`` on a free port, once it answers."""
    port = free_port()
    image_dir = pipe.tmp / "images"
    proc = pipe.process(
        "camera-adapter",
        "cameras",
        "serve",
        PARKING_CAMERA_PORT=str(port),
        PARKING_IMAGE_DIR=str(image_dir),
        **extra_env,
    ).start()
    scheme = "https" if "PARKING_CAMERA_TLS" in extra_env else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=5, verify=False) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, within=60, what=f"the camera adapter: {proc.log()[-3000:]}")
    return Adapter(proc, base, image_dir)


def vzenith_push(
    camera: Camera,
    *,
    plate: str | None,
    plateid: int,
    at: datetime,
    offline: bool = False,
    confidence: int = 96,
    scene: bytes | None = None,
    crop: bytes | None = None,
    serial: str | None = None,
) -> bytes:
    """The §2.1.1 recognition of a car at ``at`` (the camera's clock)."""
    import base64

    local = at.astimezone(SHANGHAI)
    return fixture(
        "vzenith/plate-result.json.fixture",
        serialno=serial or camera.serial,
        license=plate or "_无_",
        colorType=1 if plate else 0,
        confidence=confidence,
        plateid=plateid,
        isoffline=1 if offline else 0,
        decday=local.day,
        dechour=local.hour,
        decmin=local.minute,
        decmon=local.month,
        decsec=local.second,
        decyear=local.year,
        sec=int(at.timestamp()),
        usec=at.microsecond,
        imageFile=base64.b64encode(scene).decode() if scene else "",
        imageFileLen=len(scene) if scene else 0,
        imageFragmentFile=base64.b64encode(crop).decode() if crop else "",
        imageFragmentFileLen=len(crop) if crop else 0,
    )


def vzenith_heartbeat() -> tuple[bytes, str]:
    """The §2.5.1 heartbeat, multipart/form-data with the document's boundary shape."""
    text = fixture("vzenith/heartbeat.form.fixture").decode()
    boundary = "------------------------caa771fe4a61f3d9"
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, _, value in (line.partition("=") for line in text.splitlines() if line)
    )
    return (body + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def hikvision_parts(
    xml: bytes, *, scene: bytes | None = None, crop: bytes | None = None, xml_name: str = "xml_file"
) -> list[tuple[str, tuple[str, bytes, str]]]:
    """A push's multipart parts as the DS-TCG405-E mock sends them."""
    parts: list[tuple[str, tuple[str, bytes, str]]] = [
        (xml_name, ("anpr.xml", xml, "application/xml"))
    ]
    if scene is not None:
        parts.append(("image_file", ("detectionPicture.jpg", scene, "image/jpeg")))
    if crop is not None:
        parts.append(("image_file", ("licensePlatePicture.jpg", crop, "image/jpeg")))
    return parts


def hikvision_event(
    camera: Camera,
    *,
    plate: str,
    at: datetime,
    history: bool = False,
    event_uuid: str | None = None,
) -> bytes:
    return fixture(
        "hikvision/anpr-ds-tcg405e.xml.fixture",
        serial=camera.serial,
        licensePlate=plate,
        dateTime=at.astimezone(SHANGHAI).isoformat(timespec="milliseconds"),
        UUID=event_uuid or str(uuid.uuid4()),
        alarmDataType=1 if history else 0,
    )


async def isapi_server() -> tuple[IsapiServer, int]:
    """Simulated Hikvision units' ISAPI on a free port; ``trust(camera)`` gives one its
    credentials once it is registered (its control URL names the port)."""
    server = IsapiServer({})
    port = await server.start("127.0.0.1", 0)
    return server, port


def trust(server: IsapiServer, camera: Camera) -> None:
    assert camera.control is not None
    server.credentials[camera.prefix] = camera.control


def random_plate() -> str:
    return "赣B" + "".join(secrets.choice("ACDEFHJKLMNPQRSTUVWXYZ0123456789") for _ in range(5))


async def passages(pipe: Pipeline, device_id: str) -> list[dict[str, Any]]:
    rows = await pipe.conn.fetch(
        "SELECT * FROM passages WHERE device_id = $1 ORDER BY seq", device_id
    )
    return [dict(r) for r in rows]


async def wait_rows(pipe: Pipeline, sql: str, *args: object, count: int = 1) -> None:
    async def enough() -> bool:
        return int(await pipe.fetchval(sql, *args) or 0) >= count  # type: ignore[call-overload]

    await eventually(enough, what=f"{count} rows of {sql}")


async def settle() -> None:
    await asyncio.sleep(0.2)
