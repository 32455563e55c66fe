"""The camera adapter's HTTP side: where cameras push (``parking cameras serve``).

Routes (docs/protocol.md, "Cameras"):

- ``POST /cameras/vzenith/{device_id}/{secret}``, ``POST /cameras/hikvision/{device_id}/{secret}``:
  the push URLs ``parking devices add --vendor`` prints;
- the same without ``/{secret}`` with ``Authorization: Basic device_id:secret``, for a
  camera (or a proxy in front of it) that can send a header;
- ``GET /healthz``.

A push's path holds a secret, so nothing here logs a path: no access log, and errors
are logged by route, device and reason only. Bodies up to 4 MiB (a push's base64
pictures run to ~300 KB).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException

from gateways.cameras import hikvision, vzenith
from gateways.cameras.adapter import Applied, CameraAdapter, CameraMismatch
from gateways.cameras.isapi import Isapi
from gateways.cameras.model import BadPush, Heartbeat, Push, Recognition, Unmapped
from parking import config
from parking.clock import SystemClock
from parking.devices import cameras
from parking.devices.cameras import CameraRefused
from parking.devices.model import CameraLogin, Vendor
from parking.observability import configure_logging
from parking.occupancy.batch import CoreUnavailable

log = structlog.get_logger("gateways.cameras")

MAX_BODY: Final = 4 * 1024 * 1024
_RETRY_AFTER_S: Final = "2"
#: Housekeeping periods: the lost-seq sweep, the directory and tariffs, retention.
_REAPPLY_EVERY_S: Final = 30.0
_REFRESH_EVERY_S: Final = 30.0
_RETENTION_EVERY_S: Final = 3600.0
_PROBLEMS: Final = "https://changbo.example/problems/"


def _problem(status: int, title: str, detail: str, **headers: str) -> Response[bytes]:
    body = msgspec.json.encode(
        {
            "type": _PROBLEMS + title.lower().replace(" ", "-"),
            "title": title,
            "status": status,
            "detail": detail,
        }
    )
    return Response(
        content=body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _source(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


def _basic(request: Request[Any, Any, Any], device_id: str) -> str:
    """The secret of an ``Authorization: Basic`` header naming this device ("" otherwise)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        user, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""
    return secret if sep and user == device_id else ""


class _Controls:
    """The ISAPI credentials of Hikvision cameras, read again when their file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._found: dict[str, tuple[str, str]] = {}

    def of(self, device_id: str) -> tuple[str, str] | None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime != self._mtime:
            self._found = cameras.control_credentials(self.path)
            self._mtime = mtime
        return self._found.get(device_id)


class Service:
    """What the routes share: the adapter, the ISAPI client, the housekeeping tasks."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.adapter = CameraAdapter(settings, clock=SystemClock())
        self.isapi = Isapi()
        self.controls = _Controls(cameras.control_secrets_path(settings.stack_dir))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.adapter.start()
        self._tasks = [
            asyncio.create_task(self._every(_REAPPLY_EVERY_S, "reapply", self.adapter.reapply)),
            asyncio.create_task(self._every(_REFRESH_EVERY_S, "refresh", self.adapter.refresh)),
            asyncio.create_task(
                self._every(_RETENTION_EVERY_S, "retention", self.adapter.retention, first=5.0)
            ),
        ]
        log.info("camera_adapter_started", port=self.settings.camera_port)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.isapi.aclose()
        await self.adapter.stop()

    @staticmethod
    async def _every(
        period: float,
        what: str,
        action: Callable[[], Awaitable[object]],
        first: float | None = None,
    ) -> None:
        await asyncio.sleep(period if first is None else first)
        while True:
            try:
                await action()
            except Exception as error:  # housekeeping never takes the adapter down
                log.warning("housekeeping_failed", task=what, error=type(error).__name__)
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ a push

    async def push(
        self, request: Request[Any, Any, Any], vendor: Vendor, device_id: str, secret: str
    ) -> Response[bytes]:
        adapter = self.adapter
        received_at = adapter.clock.now()
        body = await request.body()
        source = _source(request)

        async def refuse(reason: str, device: str | None) -> None:
            await adapter.dead_letter(
                vendor=vendor,
                reason=reason,
                body=body,
                device_id=device,
                source=source,
                received_at=received_at,
            )

        try:
            camera = await adapter.login(vendor, device_id, secret, source)
        except CameraRefused as refused:
            await refuse(f"{refused.reason}: push to device {device_id[:64]!r}", refused.device_id)
            return _problem(
                401, "Unknown camera", "unknown camera, wrong secret, revoked or not allowed here"
            )
        try:
            push = await self._decode(request, vendor, body)
        except BadPush as bad:
            await refuse(bad.reason, camera.device_id)
            return _problem(400, "Bad push", bad.reason[:500])
        try:
            adapter.check_serial(camera, push.serials)
        except CameraMismatch as mismatch:
            await refuse(str(mismatch), camera.device_id)
            return _problem(403, "Another camera", "this push names another camera's serial")
        try:
            return await self._answer(vendor, camera, push, received_at)
        except CameraMismatch as mismatch:
            await refuse(str(mismatch), camera.device_id)
            return _problem(403, "Another camera", str(mismatch).split(":", 1)[0])
        except CoreUnavailable:
            return _problem(
                503,
                "Try again",
                "the occupancy core is busy or loading; send the record again",
                **{"Retry-After": _RETRY_AFTER_S},
            )

    @staticmethod
    async def _decode(request: Request[Any, Any, Any], vendor: Vendor, body: bytes) -> Push:
        multipart = request.content_type[0] == "multipart/form-data"
        form = await request.form() if multipart else None
        if vendor is Vendor.VZENITH:
            fields = (
                {k: v for k, v in form.items() if isinstance(v, str)} if form is not None else None
            )
            return vzenith.decode(body, fields)
        parts: list[tuple[str, str, bytes]] = []
        if form is None:
            parts.append(("body", request.content_type[0], body))
        else:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    parts.append((value.filename or name, value.content_type or "", data))
                else:
                    parts.append((name, "text/plain", str(value).encode()))
        return hikvision.decode(parts)

    async def _answer(
        self, vendor: Vendor, camera: CameraLogin, push: Push, received_at: datetime
    ) -> Response[bytes]:
        adapter = self.adapter
        if isinstance(push, Heartbeat):
            await adapter.heartbeat(camera, push, received_at)
            content = vzenith.heartbeat_reply() if vendor is Vendor.VZENITH else b""
            return _reply(vendor, content)
        if isinstance(push, Unmapped):
            log.info("camera_push_unmapped", device_id=camera.device_id, kind=push.kind)
            return _reply(vendor, vzenith.refusal() if vendor is Vendor.VZENITH else b"")
        applied = await adapter.recognition(camera, push, received_at)
        if vendor is Vendor.VZENITH:
            content = vzenith.reply(push, applied.command)
            if applied.command is not None:
                await adapter.acknowledge(camera, applied.command, done=True)
            return _reply(vendor, content)
        await self._hikvision_barrier(camera, push, applied)
        return _reply(vendor, b"")

    async def _hikvision_barrier(
        self, camera: CameraLogin, push: Recognition, applied: Applied
    ) -> None:
        """Open the barrier when the lane says so, for a real-time record, once: a retried
        push whose command was delivered already opens nothing (the car may be through,
        and the next one behind it)."""
        command = applied.command
        if command is None or (applied.duplicate and not applied.pending):
            return
        if command.action != "open" or not push.live:
            await self.adapter.acknowledge(camera, command, done=True)
            return
        credentials = self.controls.of(camera.device_id)
        if camera.control_url is None or credentials is None:
            log.warning("barrier_not_called", device_id=camera.device_id, why="no credentials")
            await self.adapter.acknowledge(camera, command, done=False)
            return
        result = await self.isapi.open_barrier(camera.control_url, *credentials)
        if not result.done:
            log.warning("barrier_call_failed", device_id=camera.device_id, detail=result.detail)
        await self.adapter.acknowledge(camera, command, done=result.done)


def _reply(vendor: Vendor, content: bytes) -> Response[bytes]:
    media = MediaType.JSON if vendor is Vendor.VZENITH else MediaType.TEXT
    return Response(content=content, status_code=200, media_type=media)


def _service(request: Request[Any, Any, Any]) -> Service:
    service = request.app.state.cameras
    assert isinstance(service, Service)
    return service


@post(
    "/cameras/{vendor:str}/{device_id:str}/{secret:str}",
    request_max_body_size=MAX_BODY,
    status_code=200,
)
async def push_with_secret(
    request: Request[Any, Any, Any], vendor: str, device_id: str, secret: str
) -> Response[bytes]:
    return await _route(request, vendor, device_id, secret)


@post("/cameras/{vendor:str}/{device_id:str}", request_max_body_size=MAX_BODY, status_code=200)
async def push_with_header(
    request: Request[Any, Any, Any], vendor: str, device_id: str
) -> Response[bytes]:
    return await _route(request, vendor, device_id, _basic(request, device_id))


async def _route(
    request: Request[Any, Any, Any], vendor: str, device_id: str, secret: str
) -> Response[bytes]:
    try:
        chosen = Vendor(vendor)
    except ValueError:
        return _problem(404, "Not found", "no such camera vendor")
    return await _service(request).push(request, chosen, device_id, secret)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _on_error(_: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    """Every error as a problem, and never the path in a log line (it holds a secret)."""
    if isinstance(error, HTTPException):
        return _problem(error.status_code, "Refused", str(error.detail)[:300])
    log.error("camera_push_failed", error=type(error).__name__)
    return _problem(500, "Internal error", "the push was not taken; send it again")


def create_app(settings: config.Settings | None = None) -> Litestar:
    settings = settings or config.load()
    # JSON lines like every process, each scrubbed of plates and phones
    configure_logging(settings.log_level, settings.log_format, process="camera-adapter")
    service = Service(settings)

    async def started(app: Litestar) -> None:
        app.state.cameras = service
        await service.start()

    async def stopped(_: Litestar) -> None:
        with contextlib.suppress(Exception):
            await service.stop()

    return Litestar(
        route_handlers=[push_with_secret, push_with_header, healthz],
        on_startup=[started],
        on_shutdown=[stopped],
        exception_handlers={Exception: _on_error},
        logging_config=None,
        openapi_config=None,
        debug=False,
    )
