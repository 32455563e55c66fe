"""The camera adapter's use case: a vendor push in, the platform's ingest path, the lane's
command out (to be put in the vendor's reply or call).

A recognition becomes the contract's ``Passage`` (contracts/mqtt.md) of the camera's
device and goes through ``parking.occupancy.ingest.Ingest``, the MQTT gateway's and
the HTTP gate fallback's own path: the same ``(device_id, seq)`` idempotency, clock
rules, decisions, dead letters and anomalies, the same command. In order:

1. its pictures are stored (content-addressed files), the first is its ``image_ref``;
2. its seq is granted in PostgreSQL (``parking.devices.cameras.grant_seq``), committed
   with the passage it became: a retry of the vendor record gets the same seq;
3. the passage is applied to the occupancy core (Redis: AOF, the gateway's guarantee);
4. the lane's command is remembered for the command's lifetime (a retry whose first
   answer was lost gets the same one), the caller delivers it (Vzenith: in the reply;
   Hikvision: the barrier call), and acknowledges it to the core (nothing is resent
   over MQTT to a camera that has no MQTT).

The camera is answered only after 3, so nothing it was told is lost; an adapter that
dies between 2 and 3 leaves a seq the sweep (``reapply``) applies from PostgreSQL until
the device's watermark covers it, whether or not the camera ever retries.

A live record's ``sent_at`` is its ``observed_at``: a camera pushes a read the moment
it makes it, so its clock's offset is measured on every live push (mqtt.md "Clocks":
a camera a year off is corrected and flagged, never billed a year). A backlog record
(Vzenith ``isoffline``, Hikvision ``alarmDataType`` 1) has no ``sent_at``: its time in
the past stands, as for any v1 device.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, cast

import asyncpg
import msgspec
import structlog
from redis.exceptions import RedisError

from gateways.cameras.model import Heartbeat, Recognition
from parking import config, redisclient
from parking.clock import Clock
from parking.devices import cameras, messages
from parking.devices.images import ImageRefused, ImageStore
from parking.devices.messages import Command, Passage, Topics
from parking.devices.model import CameraLogin, Vendor
from parking.lots import service as lots
from parking.occupancy import ingest as core_ingest
from parking.occupancy import keys as core_keys
from parking.occupancy import rebuild, records
from parking.occupancy import store as core_store
from parking.occupancy.batch import BatchReport, CoreUnavailable, Inbound, Recovery
from parking.occupancy.ingest import Ingest
from parking.occupancy.model import DeviceInfo, Directory
from parking.pricing import Pricer
from parking.retention import service as retention

log = structlog.get_logger("gateways.cameras")

#: A lane's command lives this long (``parking.occupancy.batch.Tuning.command_ttl``):
#: a retry whose first answer was lost within it gets the same command.
COMMAND_TTL_S: Final = 60
#: A heartbeat is passed to the core (device "heard from", online) at most this often:
#: Vzenith units beat every 5 s with offline checking on, and the core needs no more
#: than the silence limit (30 minutes) allows.
HEARTBEAT_EVERY_S: Final = 60.0
#: A seq granted this long ago and still above its device's watermark was lost between
#: PostgreSQL and the core (an adapter died): applied again. Long enough for the
#: persister to have written a healthy event (it batches within a second).
REAPPLY_AFTER: Final = timedelta(minutes=2)
#: ... back to here: older ones are the persister's to explain, not ours to replay.
REAPPLY_WITHIN: Final = timedelta(days=7)
#: A vendor's retries and backlog (Vzenith keeps 9000 records) come within days; the
#: record of a push is kept a month, beyond which a repeat would be a new event.
KEEP_PUSHES: Final = timedelta(days=30)
#: The same refusal of the same body from the same camera is dead-lettered once a
#: minute: a camera retries a refused push (Vzenith up to 4 times, then from its
#: backlog), and a revoked one forever. Each one is still answered and logged.
DEAD_LETTER_EVERY_S: Final = 60.0
#: The dead-letter store keeps the body verbatim up to this; a push's pictures are
#: most of it and say nothing about why it was refused. A sender that proved no camera
#: (unknown device, wrong secret) gets the MQTT contract's 8 KiB: enough to see what it
#: was, too little to fill the database from the internet.
DEAD_PAYLOAD_MAX: Final = 256 * 1024
DEAD_PAYLOAD_MAX_UNKNOWN: Final = 8 * 1024
#: ... and at most this many dead letters a minute from one source address.
DEAD_LETTERS_PER_SOURCE: Final = 30

_COMMAND: Final = msgspec.json.Decoder(Command)


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of a recognition: its seq, whether it was new, the lane's command
    (None when there is nothing to do at the lane: a record too old to act on)."""

    seq: int
    duplicate: bool
    command: Command | None
    image_ref: str | None
    #: the command was not delivered yet (applied now, or held by the core unacknowledged
    #: because an earlier answer never went out); False for a retry of a delivered one
    pending: bool = True


class CameraMismatch(Exception):
    """An authenticated push that names another camera (its serial): the push URL was
    copied to the wrong unit. Refused and dead-lettered as ``serial_mismatch``."""


class CameraAdapter:
    """One per adapter process: its PostgreSQL pool, its Redis client, its ``Ingest``."""

    def __init__(self, settings: config.Settings, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.topics = Topics(settings.topic_prefix)
        self.images = ImageStore(settings.image_dir)
        self.redis = redisclient.connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            socket_timeout=10,
            socket_connect_timeout=5,
        )
        self._pool: asyncpg.Pool | None = None
        self._ingest: Ingest | None = None
        self._pricer: Pricer | None = None
        self._loaded_at = 0.0
        self._directions: dict[tuple[str, str], str] = {}
        self._heard: dict[str, float] = {}
        self._dead: dict[str, float] = {}

    # ---------------------------------------------------------- life

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "start() first"
        return self._pool

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection typed as a Connection (the pool's proxy forwards every call)."""
        async with self.pool.acquire() as proxy:
            yield cast(asyncpg.Connection, proxy)

    @property
    def ingest(self) -> Ingest:
        assert self._ingest is not None, "start() first"
        return self._ingest

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.settings.database_url, min_size=1, max_size=8, timeout=10
        )
        await core_store.load_library(self.redis)
        async with self._conn() as conn:
            await rebuild.ensure_ready(conn, self.redis, now=self.clock.now())
            directory = await core_ingest.load_directory(conn)
            self._pricer = await Pricer.load(conn)
        self._loaded_at = time.monotonic()
        self._ingest = Ingest(
            self.redis,
            topics=self.topics,
            directory=directory,
            pricer=self._pricer,
            refresh_directory=self._refresh_directory,
        )
        await self._ingest.sync_lots(list(directory.lots.values()))

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self.redis.aclose()

    async def _refresh_directory(self) -> Directory:
        # At most every 2 s: a camera that is really unknown must not make each of its
        # pushes wait for PostgreSQL.
        if time.monotonic() - self._loaded_at < 2.0:
            return self.ingest.directory
        self._loaded_at = time.monotonic()
        async with self._conn() as conn:
            return await core_ingest.load_directory(conn)

    async def refresh(self) -> None:
        """Lots, devices and tariffs read again (capacity, policies, new cameras)."""
        async with self._conn() as conn:
            self.ingest.directory = await core_ingest.load_directory(conn)
            if self._pricer is not None:
                await self._pricer.refresh(conn)
        self._loaded_at = time.monotonic()
        self._directions.clear()

    # ---------------------------------------------------------- identity

    async def login(
        self, vendor: Vendor, device_id: str, secret: str, source: str | None
    ) -> CameraLogin:
        """The camera of a push (raises ``parking.devices.cameras.CameraRefused``)."""
        async with self._conn() as conn:
            return await cameras.login(
                conn, vendor=vendor, device_id=device_id, secret=secret, source=source
            )

    @staticmethod
    def check_serial(camera: CameraLogin, serials: Sequence[str]) -> None:
        """A push that names a camera must name this one (case aside: MAC addresses and
        serials are written both ways). A push that names none is this device's by its
        secret."""
        if not serials:
            return
        wanted = camera.serial.strip().lower()
        if wanted not in {s.strip().lower() for s in serials}:
            raise CameraMismatch(
                f"serial_mismatch: the push names {', '.join(s[:64] for s in serials)}; "
                f"device {camera.device_id} is {camera.serial}"
            )

    async def _know(self, camera: CameraLogin) -> None:
        """The core's directory names this camera at its lane: the login just read it from
        the registry, so one added a moment ago is not refused as unregistered while the
        directory waits for its next reload."""
        directory = self.ingest.directory
        if directory.gates.get((camera.lot_id, camera.lane_id)) == camera.device_id:
            return
        if camera.lot_id not in directory.lots:
            await self.refresh()
            directory = self.ingest.directory
        directory.add_device(
            DeviceInfo(camera.device_id, camera.lot_id, "gate", camera.lane_id, None)
        )

    async def _direction(self, camera: CameraLogin) -> str:
        key = (camera.lot_id, camera.lane_id)
        if key not in self._directions:
            async with self._conn() as conn:
                lane = await lots.find_lane(conn, camera.lot_id, camera.lane_id)
            if lane is None:
                raise CameraMismatch(f"unknown_lane: {camera.lane_id} of {camera.lot_id}")
            self._directions[key] = lane.direction
        return self._directions[key]

    # ---------------------------------------------------------- events

    def _store_pictures(self, camera: CameraLogin, rec: Recognition, at: datetime) -> list[str]:
        refs: list[str] = []
        for picture in sorted(rec.pictures, key=lambda p: p.kind != "scene"):
            try:
                refs.append(self.images.put(picture.data, lot_id=camera.lot_id, at=at).text)
            except ImageRefused as error:
                log.warning("picture_refused", device_id=camera.device_id, reason=str(error))
        for reason in rec.refused_pictures:
            log.warning("picture_refused", device_id=camera.device_id, reason=reason)
        return refs

    async def recognition(
        self, camera: CameraLogin, rec: Recognition, received_at: datetime
    ) -> Applied:
        """Apply a recognition once (a retry is recognised) and return the lane's command.

        Raises CoreUnavailable when the occupancy core cannot take it now (the camera is
        told to retry: its seq is kept, the retry and the sweep converge on it)."""
        direction = await self._direction(camera)
        await self._know(camera)
        refs = self._store_pictures(camera, rec, received_at)
        image_ref = refs[0] if refs else None

        def passage_for(seq: int) -> bytes:
            return messages.encode(
                Passage(
                    device_id=camera.device_id,
                    seq=seq,
                    observed_at=rec.observed_at,
                    sent_at=rec.observed_at if rec.live else None,
                    direction=direction,  # type: ignore[arg-type]
                    plate=rec.plate,
                    plate_color=rec.plate_color,
                    confidence=rec.confidence,
                    image_ref=image_ref,
                )
            )

        async with self._conn() as conn:
            granted = await cameras.grant_seq(
                conn,
                camera=camera,
                push_key=rec.push_key,
                received_at=received_at,
                passage_for=passage_for,
                vendor_record=rec.record,
                images=refs,
            )
        topic = self.topics.passages(camera.lot_id, camera.lane_id)
        report = await self._apply([Inbound(topic, granted.passage, received_at)])
        command_id = f"c-{camera.device_id}-{granted.seq}"
        command = self._command_in(report, camera, command_id)
        pending = True
        if command is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.set(
                    _remembered(camera.device_id, granted.seq),
                    messages.encode(command),
                    ex=COMMAND_TTL_S,
                )
        elif report.applied == 0:
            command, pending = await self._earlier_command(camera, granted.seq, command_id)
        stored = msgspec.json.decode(granted.passage, type=Passage)
        log.info(
            "camera_passage",
            device_id=camera.device_id,
            seq=granted.seq,
            duplicate=report.applied == 0,
            live=rec.live,
            action=command.action if command else None,
            dead_lettered=report.dead_lettered,
        )
        return Applied(
            seq=granted.seq,
            duplicate=report.applied == 0,
            command=command,
            image_ref=stored.image_ref,
            pending=pending,
        )

    def _command_in(
        self, report: BatchReport, camera: CameraLogin, command_id: str
    ) -> Command | None:
        topic = self.topics.commands(camera.lot_id, camera.lane_id)
        for published in report.publishes:
            if published.topic != topic:
                continue
            command = _COMMAND.decode(published.payload)
            if command.command_id == command_id:
                return command
        return None

    async def _earlier_command(
        self, camera: CameraLogin, seq: int, command_id: str
    ) -> tuple[Command | None, bool]:
        """A retry's command and whether it is still undelivered: the one the core holds
        unacknowledged (an adapter died before answering), else the one answered first
        (while it lives)."""
        try:
            held = await self.redis.hget(
                core_keys.commands(core_keys.lot_tag(camera.lot_id)), command_id
            )
            kept = (
                None
                if held is not None
                else await self.redis.get(_remembered(camera.device_id, seq))
            )
        except (RedisError, OSError):
            return None, False
        if held is not None:
            text = held.decode() if isinstance(held, bytes) else str(held)
            _expires, _topic, payload = text.split("|", 2)
            return _COMMAND.decode(payload.encode()), True
        if kept is not None:
            return _COMMAND.decode(kept), False
        return None, False

    async def acknowledge(self, camera: CameraLogin, command: Command, *, done: bool) -> None:
        """The command is delivered (in the reply, or by the barrier call): the core stops
        holding it (no resend over MQTT, where a camera listens to nothing), and a failed
        barrier call counts as the gate failing a command."""
        ack = messages.CommandAck(
            command_id=command.command_id,
            result="done" if done else "failed",
            at=self.clock.now(),
        )
        topic = self.topics.command_ack(camera.lot_id, camera.lane_id)
        try:
            await self._apply([Inbound(topic, messages.encode(ack), self.clock.now())])
        except CoreUnavailable:
            # The core re-sends it over MQTT to nobody until it expires: recorded there.
            log.warning("command_ack_not_applied", device_id=camera.device_id)

    async def heartbeat(self, camera: CameraLogin, beat: Heartbeat, received_at: datetime) -> bool:
        """Note that the camera is alive (online, heard from); at most once a minute.
        Returns whether it was passed to the core."""
        last = self._heard.get(camera.device_id)
        if last is not None and time.monotonic() - last < HEARTBEAT_EVERY_S:
            return False
        await self._know(camera)
        status = messages.DeviceStatus(
            device_id=camera.device_id, online=True, at=received_at, firmware=beat.firmware
        )
        await self._apply(
            [Inbound(self.topics.status(camera.device_id), messages.encode(status), received_at)]
        )
        self._heard[camera.device_id] = time.monotonic()
        return True

    async def _apply(self, batch: list[Inbound]) -> BatchReport:
        """The core's recovery ladder as the HTTP gate fallback runs it: a core not loaded
        is rebuilt once; still failing, or busy -> CoreUnavailable (the camera retries)."""

        async def rebuild_core() -> None:
            async with self._conn() as conn:
                await rebuild.ensure_ready(conn, self.redis, now=self.clock.now())

        return await self.ingest.handle_recovering(
            batch,
            self.clock.now,
            Recovery(rebuild=rebuild_core, attempts=2, busy_gives_up=True),
        )

    # ---------------------------------------------------------- refusals

    async def dead_letter(
        self,
        *,
        vendor: Vendor,
        reason: str,
        body: bytes,
        device_id: str | None,
        source: str | None,
        received_at: datetime,
    ) -> bool:
        """Keep a refused push with its reason (``parking deadletters list``); once a minute
        for the same refusal of the same body. Returns whether it was written."""
        code = reason.split(":", 1)[0]
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        key = f"{vendor.value}|{code}|{device_id or source or '-'}|{digest}"
        now = time.monotonic()
        self._dead = {k: t for k, t in self._dead.items() if now - t < DEAD_LETTER_EVERY_S}
        from_source = sum(1 for k in self._dead if k.startswith(f"@{source}|"))
        if key in self._dead or from_source >= DEAD_LETTERS_PER_SOURCE:
            return False
        self._dead[key] = now
        self._dead[f"@{source}|{key}"] = now
        limit = DEAD_PAYLOAD_MAX if device_id is not None else DEAD_PAYLOAD_MAX_UNKNOWN
        payload = body
        if len(body) > limit:
            payload = body[:limit]
            reason = f"{reason} (payload cut at {limit} of {len(body)} bytes)"
        topic = f"cameras/{vendor.value}" + (f"/{device_id}" if device_id else "")
        async with self._conn() as conn:
            await records.insert_dead_letters(
                conn,
                [
                    (
                        f"camera:{uuid.uuid4().hex}",
                        received_at,
                        topic,
                        device_id,
                        None,
                        reason[:2000],
                        payload,
                    )
                ],
            )
        log.info("camera_push_refused", vendor=vendor.value, reason=code, device_id=device_id)
        return True

    # ---------------------------------------------------------- housekeeping

    async def reapply(self, *, limit: int = 500) -> int:
        """Apply again the camera events the system of record does not hold a while after
        their seq was granted (idempotent: the core recognises what it has)."""
        now = self.clock.now()
        async with self._conn() as conn:
            lost = await cameras.unconfirmed(
                conn,
                received_before=now - REAPPLY_AFTER,
                received_after=now - REAPPLY_WITHIN,
                limit=limit,
            )
        if not lost:
            return 0
        batch = [
            Inbound(self.topics.passages(p.lot_id, p.lane_id), p.passage, p.received_at)
            for p in lost
        ]
        report = await self._apply(batch)
        if report.applied:
            log.warning("camera_events_reapplied", applied=report.applied, seen=len(lost))
        return report.applied

    async def retention(self) -> tuple[int, list[str]]:
        """Forget pushes older than a month; remove pictures past their retention."""
        now = self.clock.now()
        async with self._conn() as conn:
            forgotten = await cameras.forget_pushes(conn, received_before=now - KEEP_PUSHES)
            # a picture of a stay under an open dispute is evidence: kept until decided
            held = await retention.evidence_pictures(conn)
        removed = self.images.sweep(
            now, keep=timedelta(days=self.settings.image_retention_days), hold=held
        )
        if forgotten or removed:
            log.info("camera_retention", pushes_forgotten=forgotten, picture_days_removed=removed)
        return forgotten, removed


def _remembered(device_id: str, seq: int) -> str:
    return f"camera:command:{device_id}:{seq}"
