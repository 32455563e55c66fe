"""The gate's HTTP fallback: a gate that cannot reach the MQTT broker reports over HTTPS.

The gate authenticates as itself (HTTP Basic: its device id and the secret the
broker would check, verified against the registry's hash; a revoked device is
refused), posts exactly the payload it would publish on its passages topic,
and gets back the command the MQTT gateway would have published on its
commands topic. The lane is the one the registry installs the device at, never
one named by the request, so a device can act only as itself.

The event goes through the same `Ingest` as MQTT traffic, so it is idempotent
on ``(device_id, seq)`` across both paths: a retry of a passage already applied
(over either transport) answers with the same command while the core still
holds it unacknowledged, and with ``duplicate`` and no command after that.
Commands answered here are acknowledged over ``POST /v1/gate/acks``, or the
core re-sends them over MQTT until they expire.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Request, post
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException

from parking.api.infra import Infra, connection, infra_of
from parking.api.routing import clock_of, problem_responses
from parking.auth.model import Principal, Role
from parking.devices import broker, messages
from parking.devices import service as devices
from parking.devices.messages import AckTopic, PassageTopic, Rejection, Topics
from parking.errors import InvalidInput
from parking.occupancy import batch, rebuild
from parking.occupancy import ingest as core_ingest
from parking.occupancy import keys as occupancy_keys
from parking.occupancy import store as occupancy_store
from parking.occupancy.batch import CoreUnavailable, Inbound, Recovery
from parking.occupancy.ingest import Ingest
from parking.occupancy.model import Directory

#: The MQTT contract's payload limit.
BODY_MAX: Final = 8 * 1024
_RETRY_AFTER_S: Final = "2"
#: The directory is reloaded at most this often for a device it does not know
#: yet; a device provisioned a moment ago is found on its first request.
_DIRECTORY_MAX_AGE_S: Final = 2.0
#: Known devices and lots are reloaded this often (capacity, full policy, new lanes).
_DIRECTORY_REFRESH_S: Final = 30.0
_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="gate", charset="UTF-8"'}


class GateCommand(msgspec.Struct, frozen=True, kw_only=True):
    """The command of contracts/mqtt.md, as the lane would have received it."""

    command_id: str
    action: Literal["open", "hold"]
    plate: str | None
    session_id: str | None
    display: str
    issued_at: str


class GateAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """``applied`` the first time, ``duplicate`` for a (device_id, seq) seen before.

    ``command`` is None when there is nothing to do at the lane (a duplicate
    whose command was acknowledged or expired, or a passage observed too long
    ago to act on). ``watermark`` is set when the system of record already
    covers the device's events up to it (the device may drop them from its outbox).
    """

    device_id: str
    seq: int
    outcome: Literal["applied", "duplicate"]
    command: GateCommand | None
    watermark: int | None


class AckBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    command_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    result: Literal["done", "failed"]
    at: str


class _Seq(msgspec.Struct, kw_only=True):
    device_id: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class _Gate:
    device_id: str
    lot_id: str
    lane_id: str


# ------------------------------------------------------------------ device auth

# The body is checked against the contract before the credentials: something
# that is not a passage is a 400 whoever sends it, and the registry is asked
# (and a hash computed) only for well-formed events.
_PASSAGE_SHAPE: Final = msgspec.json.Decoder(messages.Passage)
_ACK_SHAPE: Final = msgspec.json.Decoder(messages.CommandAck)


def _well_formed(body: bytes, shape: msgspec.json.Decoder[Any]) -> None:
    try:
        shape.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"not an event of contracts/mqtt.md: {exc}") from exc


async def _authenticate(request: Request[Any, Any, Any], infra: Infra) -> _Gate:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise NotAuthorizedException(
            "device credentials (HTTP Basic) are required", headers=_CHALLENGE
        )
    try:
        device_id, sep, password = (
            base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise NotAuthorizedException("malformed Basic credentials", headers=_CHALLENGE) from exc
    if not sep or not device_id or len(device_id) > 64:
        raise NotAuthorizedException("malformed Basic credentials", headers=_CHALLENGE)
    async with connection(infra) as conn:
        row = await devices.gate_login(conn, device_id)
    # One answer for unknown, revoked and wrong secret: nothing to probe for.
    if (
        row is None
        or row["revoked_at"] is not None
        or row["kind"] != "gate"
        or not broker.verify_password(password, row["password_hash"])
    ):
        raise NotAuthorizedException("unknown device, wrong secret or revoked", headers=_CHALLENGE)
    request.scope["user"] = Principal(subject=device_id, role=Role.DEVICE, token_id="basic")  # noqa: S106 (a marker, not a secret)
    return _Gate(device_id, row["lot_id"], row["lane_id"])


# ------------------------------------------------------------------ the shared Ingest


class _GateIngest:
    """One `Ingest` per API worker, its directory and pricer kept fresh."""

    def __init__(self) -> None:
        self._ingest: Ingest | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._pool: asyncpg.Pool | None = None

    async def _directory(self) -> Directory:
        assert self._pool is not None
        async with self._pool.acquire() as proxy:
            return await core_ingest.load_directory(proxy)  # type: ignore[arg-type]

    async def _refresh(self) -> Directory:
        assert self._ingest is not None
        if time.monotonic() - self._loaded_at < _DIRECTORY_MAX_AGE_S:
            return self._ingest.directory
        self._loaded_at = time.monotonic()
        return await self._directory()

    async def get(self, request: Request[Any, Any, Any], infra: Infra) -> Ingest:
        pricer = await request.app.state.pricer_cache.get(infra.pool)
        if self._ingest is None:
            async with self._lock:
                if self._ingest is None:
                    self._pool = infra.pool
                    await occupancy_store.load_library(infra.redis)
                    directory = await self._directory()
                    self._loaded_at = time.monotonic()
                    self._ingest = Ingest(
                        infra.redis,
                        topics=Topics(infra.settings.topic_prefix),
                        directory=directory,
                        pricer=pricer,
                        refresh_directory=self._refresh,
                    )
        self._ingest.pricer = pricer
        if time.monotonic() - self._loaded_at > _DIRECTORY_REFRESH_S:
            # Lots' capacity and policies change through the operator routes.
            self._loaded_at = time.monotonic()
            self._ingest.directory = await self._directory()
        return self._ingest


def _ingest_holder(request: Request[Any, Any, Any]) -> _GateIngest:
    state = request.app.state
    holder = getattr(state, "gate_ingest", None)
    if holder is None:
        holder = _GateIngest()
        state.gate_ingest = holder
    assert isinstance(holder, _GateIngest)
    return holder


async def _apply(
    request: Request[Any, Any, Any], infra: Infra, inbound: Inbound
) -> batch.BatchReport:
    """One event through the core's recovery ladder: a core that is not loaded is
    rebuilt once, missing functions loaded once; still failing, or busy, -> 503 (the
    gate retries with the same seq)."""
    ingest = await _ingest_holder(request).get(request, infra)
    clock = clock_of(request)

    async def rebuild_core() -> None:
        async with connection(infra) as conn:
            await rebuild.ensure_ready(conn, infra.redis, now=clock.now())

    try:
        return await ingest.handle_recovering(
            [inbound], clock.now, Recovery(rebuild=rebuild_core, attempts=2, busy_gives_up=True)
        )
    except CoreUnavailable as exc:
        what = "busy or unreachable" if exc.reason == "busy" else "loading"
        raise ServiceUnavailableException(
            detail=f"the occupancy core is {what}; retry with the same seq",
            headers={"Retry-After": _RETRY_AFTER_S},
        ) from exc


# ------------------------------------------------------------------ routes


@post(
    "/v1/gate/passages",
    opt={"exclude_from_auth": True},
    tags=["gate"],
    summary="A passage at my lane (HTTP fallback for MQTT); answers with the lane's command",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 413, 503),
)
async def report_passage(request: Request[Any, Any, Any]) -> GateAnswer:
    """HTTP Basic with the device id and secret. The body is the passage payload of
    contracts/mqtt.md; ``device_id`` in it must be the authenticated device."""
    infra = infra_of(request.app)
    body = await request.body()
    _well_formed(body, _PASSAGE_SHAPE)
    gate = await _authenticate(request, infra)
    topics = Topics(infra.settings.topic_prefix)
    decoded = messages.decode(
        PassageTopic(gate.lot_id, gate.lane_id), body, registered_device=gate.device_id
    )
    if isinstance(decoded, Rejection):
        raise InvalidInput(f"passage refused: {decoded.reason}")
    assert isinstance(decoded, messages.Passage)
    report = await _apply(
        request,
        infra,
        Inbound(topics.passages(gate.lot_id, gate.lane_id), body, clock_of(request).now()),
    )
    command_id = f"c-{decoded.device_id}-{decoded.seq}"
    command_topic = topics.commands(gate.lot_id, gate.lane_id)
    command: GateCommand | None = None
    watermark: int | None = None
    for published in report.publishes:
        if published.topic == command_topic:
            candidate = msgspec.json.decode(published.payload, type=GateCommand)
            if candidate.command_id == command_id:
                command = candidate
        elif published.topic == topics.watermark(gate.device_id):
            watermark = msgspec.json.decode(published.payload, type=messages.Watermark).seq
    duplicate = report.applied == 0
    if command is None and duplicate:
        command = await _pending_command(infra, gate.lot_id, command_id)
    return GateAnswer(
        device_id=gate.device_id,
        seq=decoded.seq,
        outcome="duplicate" if duplicate else "applied",
        command=command,
        watermark=watermark,
    )


async def _pending_command(infra: Infra, lot_id: str, command_id: str) -> GateCommand | None:
    """The command of a passage applied before, while the core still waits for its ack."""
    held = await infra.redis.hget(
        occupancy_keys.commands(occupancy_keys.lot_tag(lot_id)), command_id
    )
    if held is None:
        return None
    text = held.decode() if isinstance(held, bytes) else str(held)
    _expires, _topic, payload = text.split("|", 2)
    return msgspec.json.decode(payload.encode(), type=GateCommand)


@post(
    "/v1/gate/acks",
    opt={"exclude_from_auth": True},
    tags=["gate"],
    summary="Acknowledge a command my lane carried out (HTTP fallback for commands/ack)",
    status_code=204,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 413, 503),
)
async def acknowledge(request: Request[Any, Any, Any]) -> None:
    infra = infra_of(request.app)
    body = await request.body()
    _well_formed(body, _ACK_SHAPE)
    gate = await _authenticate(request, infra)
    decoded = messages.decode(
        AckTopic(gate.lot_id, gate.lane_id), body, registered_device=gate.device_id
    )
    if isinstance(decoded, Rejection):
        raise InvalidInput(f"ack refused: {decoded.reason}")
    topics = Topics(infra.settings.topic_prefix)
    await _apply(
        request,
        infra,
        Inbound(topics.command_ack(gate.lot_id, gate.lane_id), body, clock_of(request).now()),
    )


ROUTES = [report_passage, acknowledge]
