"""The gateway's use case: ingest device messages into the occupancy core.

Kept as one module over 600 lines for one class: ``Ingest``'s steps (decode, read
clocks, decide, queue, apply, settle, follow-ups) share the batch's state and the
order of one Redis pipeline, so they are methods in the order a batch goes through
them, not modules. The batch's types are in ``batch``.

`Ingest.handle` is the gateway's whole job for one batch of MQTT messages:
decode, decide, apply to Redis (pipelined single-slot function calls), run the
follow-ups in other slots, and return what to publish. When it returns, Redis
holds every message of the batch (applied, recognised as a duplicate, or kept
as a dead letter), so the caller may acknowledge them all. When it raises, the
caller acknowledges nothing and retries the same batch: every call is
idempotent on ``(device_id, seq)`` (or on its own key), so a retry converges.
``Ingest.handle_recovering`` is the one recovery ladder around it (the gateway's
and the HTTP gate fallback's).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import asyncpg
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from parking.devices import messages
from parking.devices.messages import (
    AckTopic,
    CommandAck,
    DeviceStatus,
    Passage,
    PassageTopic,
    Rejection,
    SpaceState,
    SpaceTopic,
    StatusTopic,
    Topics,
)
from parking.lots import service as lots
from parking.occupancy import keys, lane, logic, records, store
from parking.occupancy.batch import (
    Ack,
    BatchReport,
    CoreBusy,
    CoreUnavailable,
    Dead,
    Decoded,
    Gate,
    Inbound,
    Item,
    PricerLike,
    Publish,
    Recovery,
    Resends,
    Sensor,
    Status,
    StayCounter,
    Tuning,
    fallback_tag,
    plate_of,
    reason_code,
    record_encoder,
)
from parking.occupancy.model import (
    AckRecord,
    AnomalyKind,
    CoreNotReady,
    DeviceInfo,
    Directory,
    FollowUp,
    GoneExit,
    HoldReason,
    LotInfo,
    OpenSession,
    PassageWire,
    PlateFlags,
    Prepaid,
    PricedExit,
    SpaceWire,
    StatusRecord,
)
from parking.tariffs import quote_to_json

log = structlog.get_logger("parking.occupancy")


class Ingest:
    """Applies batches of device messages to the core. One instance per gateway process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        topics: Topics,
        directory: Directory,
        pricer: PricerLike,
        tuning: Tuning | None = None,
        refresh_directory: Callable[[], Awaitable[Directory]] | None = None,
        count_stays: StayCounter | None = None,
    ) -> None:
        self.redis = redis
        self.topics = topics
        self.directory = directory
        self.pricer = pricer
        self.tuning = tuning or Tuning()
        self._refresh = refresh_directory
        self._count_stays = count_stays

    # ---------------------------------------------------------- decode

    def _classify(self, inbound: Inbound) -> Item:
        parsed = self.topics.parse(inbound.topic)
        if parsed is None:
            return Dead(inbound, fallback_tag(inbound.topic), "unknown_topic: not a device topic")
        d = self.directory
        lot: LotInfo | None
        match parsed:
            case PassageTopic(lot_id, lane_id):
                lot, registered = d.lots.get(lot_id), d.gates.get((lot_id, lane_id))
            case SpaceTopic(lot_id, space_id):
                lot, registered = d.lots.get(lot_id), d.sensors.get((lot_id, space_id))
            case AckTopic(lot_id, lane_id):
                lot, registered = d.lots.get(lot_id), d.gates.get((lot_id, lane_id))
            case StatusTopic(device_id):
                info = d.devices.get(device_id)
                lot = d.lots.get(info.lot_id) if info is not None else None
                registered = device_id if info is not None else None
        tag = keys.lot_tag(lot.lot_id) if lot is not None else fallback_tag(inbound.topic)
        decoded = messages.decode(parsed, inbound.payload, registered_device=registered)
        if isinstance(decoded, Rejection):
            trusted = decoded.device_id is not None and decoded.seq is not None and lot is not None
            return Dead(
                inbound,
                tag,
                decoded.reason,
                decoded.device_id if trusted else None,
                decoded.seq if trusted else None,
            )
        assert lot is not None  # a registered device belongs to a known lot
        match decoded:
            case Passage():
                assert isinstance(parsed, PassageTopic)
                plate = plate_of(decoded.plate) if decoded.plate is not None else None
                return Gate(inbound, decoded, lot, parsed.lane_id, plate)
            case SpaceState():
                assert isinstance(parsed, SpaceTopic)
                return Sensor(inbound, decoded, lot, parsed.space_id)
            case DeviceStatus():
                return Status(inbound, decoded, lot.lot_id)
            case CommandAck():
                assert isinstance(parsed, AckTopic)
                return Ack(inbound, decoded, lot.lot_id, parsed.lane_id)
        raise AssertionError(f"unhandled message {decoded!r}")

    async def _classify_all(self, batch: Sequence[Inbound], report: BatchReport) -> list[Item]:
        items = [self._classify(m) for m in batch]
        unknown = [
            i
            for i, item in enumerate(items)
            # A device replaced on its lane (revoke + add) reads as a mismatch
            # until the directory is reloaded: look again before refusing it.
            if isinstance(item, Dead)
            and item.reason.startswith(("unregistered_", "device_mismatch"))
        ]
        report.unknown_devices = len(unknown)
        if unknown and self._refresh is not None:
            # A device provisioned since the last load: look again before refusing it.
            self.directory = await self._refresh()
            for i in unknown:
                items[i] = self._classify(batch[i])
        return items

    # ---------------------------------------------------------- clocks

    async def _read_clocks(self, items: Sequence[Item]) -> None:
        """Each gate and sensor event's time (contracts/mqtt.md "Clocks").

        Every ``sent_at`` adds a sample ``sent_at - received_at`` to its device's
        recent samples (unless the message may have waited in the broker's queue
        for us and looks late: ``logic.counts_as_sample``), kept in Redis under the
        device's lot tag (so every gateway of a shared subscription, and the HTTP
        fallback, sees the same ones: a device's messages are spread over all of
        them). The offset is their median after this batch's samples. A retried
        batch adds its samples again; the median shrugs that off, and only the
        first application of an event counts.
        """
        events = [i for i in items if isinstance(i, (Gate, Sensor))]
        sampled: dict[str, str] = {}
        pipe = store.Batch()
        for item in events:
            if item.msg.sent_at is not None:
                key = keys.clock(keys.lot_tag(item.lot.lot_id), item.msg.device_id)
                sample = logic.offset_sample(item.msg.sent_at, item.inbound.received_at)
                if logic.counts_as_sample(sample, held=item.inbound.held):
                    store.queue_clock_sample(pipe, key, sample, keep=logic.OFFSET_SAMPLES)
                sampled[item.msg.device_id] = key
        offsets: dict[str, int | None] = {}
        if sampled:
            for key in sampled.values():
                store.queue_clock_read(pipe, key, logic.OFFSET_SAMPLES)
            replies = await pipe.execute(self.redis)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            reads = replies[len(replies) - len(sampled) :]
            for device, reply in zip(sampled, reads, strict=True):
                offsets[device] = logic.median_offset(store.clock_samples(reply))
        for item in events:
            msg = item.msg
            item.clock = logic.read_clock(
                observed_at=msg.observed_at,
                sent_at=msg.sent_at,
                received_at=item.inbound.received_at,
                offset_ms=offsets.get(msg.device_id),
            )

    # ---------------------------------------------------------- decide

    async def _read_inputs(self, gates: Sequence[Gate]) -> None:
        """Plate flags for entries and the lot's exit without entry of the plate (a late
        entry completes it); for exits the lot's open session of the plate and what it
        paid in the lot (one round trip for the batch)."""
        wanted = [
            g for g in gates if g.plate is not None and (g.flags is None or g.current is None)
        ]
        if not wanted:
            return
        pipe = store.Batch()
        for g in wanted:
            assert g.plate is not None
            if g.msg.direction == "in":
                store.queue_plate_read(pipe, g.plate.text)
                store.queue_gone_of(pipe, lot_id=g.lot.lot_id, plate=g.plate.text)
            else:
                store.queue_session_of(pipe, lot_id=g.lot.lot_id, plate=g.plate.text)
                store.queue_prepaid_read(pipe, lot_id=g.lot.lot_id, plate=g.plate.text)
        replies = iter(await pipe.execute(self.redis))
        for g in wanted:
            reply = next(replies)
            if isinstance(reply, Exception):
                raise reply
            if g.msg.direction == "in":
                values = store.texts(reply)
                if values[0] != "ok":
                    raise CoreNotReady(f"plate shard of {g.plate} is not loaded")
                g.flags = logic.plate_flags(dict(zip(values[1::2], values[2::2], strict=True)))
                gone = next(replies)
                if isinstance(gone, Exception):
                    raise gone
                g.gone = GoneExit.parse(store.text(gone)) if gone else None
            else:
                paid = next(replies)
                if isinstance(paid, Exception):
                    raise paid
                g.current = OpenSession.parse(store.text(reply)) if reply else None
                g.prepaid = Prepaid.parse(store.text(paid)) if paid else None

    async def _read_stays_of_day(self, gates: Sequence[Gate]) -> None:
        """An exit (or a late entry) whose price depends on the stay's index of the day (a
        new-energy plate under ``nev.daily_grace``) gets it counted (PostgreSQL); only those
        pay the read.
        A count that fails prices the stay as the day's first and says so in the log."""
        if self._count_stays is None:
            return
        for g in gates:
            if g.plate is None:
                continue
            if g.msg.direction == "out" and g.current is not None:
                entry = logic.from_ms(g.current.entry_ms)
            elif g.msg.direction == "in" and self._completes(g) is not None:
                entry = g.at  # a late entry is priced here too
            else:
                continue
            count = self.pricer.daily_grace_count(
                lot_id=g.lot.lot_id, plate=g.plate.text, entry=entry
            )
            if count is None:
                continue
            try:
                g.stay_of_day = 1 + await self._count_stays(g.plate.text, count, entry)
            except Exception as error:  # the lane must not stop for a fee's detail
                log.warning(
                    "stay_of_day_unknown", device_id=g.msg.device_id, seq=g.msg.seq,
                    error=f"{type(error).__name__}: {error}",
                )  # fmt: skip

    def _command(
        self, g: Gate, *, action: str, session_id: str | None, display: str, now: datetime
    ) -> bytes:
        if now - g.at > self.tuning.command_ttl:
            return b""
        return messages.encode(
            messages.Command(
                command_id=f"c-{g.msg.device_id}-{g.msg.seq}",
                action=action,  # type: ignore[arg-type]
                plate=g.plate.text if g.plate is not None else g.msg.plate,
                session_id=session_id,
                display=display,
                issued_at=now,
            )
        )

    def _completes(self, g: Gate) -> GoneExit | None:
        """The exit without entry this entry completes (occ_passage's rule for ``late``)."""
        gone = g.gone
        if gone is None or g.plate is None:
            return None
        at_ms = logic.to_ms(g.at)
        if at_ms <= gone.exit_ms <= at_ms + _ms(self.tuning.late_entry_within):
            return gone
        return None

    def _price(
        self, g: Gate, session_id: str, entry_ms: int, exit: datetime | None = None
    ) -> PricedExit:
        assert g.plate is not None
        entry = logic.from_ms(entry_ms)
        try:
            stay = self.pricer.price(
                lot_id=g.lot.lot_id,
                plate=g.plate.text,
                entry=entry,
                exit=g.at if exit is None else exit,
                stay_of_day=g.stay_of_day,
            )
        except Exception as error:  # a fee we cannot compute must not stop the lane
            return PricedExit(
                session_id=session_id,
                entry_at=entry,
                fee_fen=0,
                tariff_id=None,
                tariff_version=None,
                vehicle_class=None,
                reason="pricing_failed",
                error=f"{type(error).__name__}: {error}",
            )
        return PricedExit(
            session_id=session_id,
            entry_at=entry,
            fee_fen=stay.fee_fen,
            tariff_id=stay.tariff_id,
            tariff_version=stay.tariff_version,
            vehicle_class=stay.vehicle_class,
            reason=stay.reason,
            quote=msgspec.Raw(quote_to_json(stay.quote) if stay.quote is not None else b"null"),
        )

    def _decide_gate(self, g: Gate, now: datetime) -> None:
        msg = g.msg
        at = g.at
        # A passage older than a command lives gets none (see Tuning.command_ttl).
        stale = now - at > self.tuning.command_ttl
        review: str | None = None
        mode: str
        anomalies: tuple[str, ...]
        priced: PricedExit | None = None
        hold_reason: HoldReason | None = None
        session_id = ""
        g.open_payload = g.hold_payload = b""  # a re-decided passage starts afresh
        if msg.direction == "in":
            decision = lane.decide_entry(
                plate=g.plate,
                raw_plate=msg.plate,
                confidence=msg.confidence,
                flags=g.flags or PlateFlags(),
                lot=g.lot,
                lane_id=g.lane_id,
                now=now,
            )
            mode, anomalies, hold_reason = decision.mode, decision.anomalies, decision.hold_reason
            completes = self._completes(g)
            if completes is not None:
                # The car has left: its entry completes the exit without entry, priced
                # from here; nothing opens, nothing is held, no command is sent.
                mode, hold_reason, session_id = "late", None, completes.session_id
                priced = self._price(
                    g, completes.session_id, logic.to_ms(at), logic.from_ms(completes.exit_ms)
                )
                if priced.error is not None:
                    anomalies = (*anomalies, AnomalyKind.PRICING_FAILED)
            elif mode != "hold":
                session_id = g.candidate
                g.open_payload = self._command(
                    g, action="open", session_id=g.candidate, display=decision.display_open, now=now
                )
            if mode != "late":
                g.hold_payload = self._command(
                    g, action="hold", session_id=None, display=decision.display_hold, now=now
                )
        else:
            exit_decision = lane.decide_exit(
                plate=g.plate,
                raw_plate=msg.plate,
                confidence=msg.confidence,
                lot_id=g.lot.lot_id,
                lane_id=g.lane_id,
            )
            mode, anomalies = exit_decision.mode, exit_decision.anomalies
            hold_reason = exit_decision.hold_reason
            if mode == "hold":
                g.hold_payload = self._command(
                    g, action="hold", session_id=None, display=exit_decision.display_hold, now=now
                )
            else:
                assert g.plate is not None
                if g.current is not None:
                    priced = self._price(g, g.current.session_id, g.current.entry_ms)
                    session_id = g.current.session_id
                    paid = g.prepaid
                    review = logic.needs_review(priced.entry_at, at, priced.fee_fen, g.lot.review)
                    if review is not None:
                        # Billed as usual, but never shown as owed before an
                        # operator confirmed it (mqtt.md "Clocks" 4).
                        anomalies = (*anomalies, AnomalyKind.FEE_REVIEW)
                        display = lane.review_exit_display(g.plate.text, priced.entry_at, at)
                    elif paid is not None and paid.session_id == session_id:
                        display = lane.prepaid_exit_display(
                            g.plate.text,
                            priced.entry_at,
                            at,
                            due_fen=paid.due_fen(priced.fee_fen, at),
                            prepaid_fen=paid.billed_fen,
                        )
                    else:
                        display = lane.exit_display(
                            g.plate.text, priced.entry_at, at, priced.fee_fen
                        )
                    if priced.error is not None:
                        anomalies = (*anomalies, AnomalyKind.PRICING_FAILED)
                    opens = session_id
                else:
                    display = lane.no_entry_display(g.plate.text, lane.NO_ENTRY_FEE_FEN)
                    opens = g.candidate
                g.open_payload = self._command(
                    g, action="open", session_id=opens, display=display, now=now
                )
                g.hold_payload = g.open_payload
        g.record = PassageWire(
            device_id=msg.device_id,
            seq=msg.seq,
            lot_id=g.lot.lot_id,
            lane_id=g.lane_id,
            direction=msg.direction,
            plate=g.plate.text if g.plate is not None else None,
            plate_raw=msg.plate,
            plate_color=msg.plate_color,
            confidence=msg.confidence,
            image_ref=msg.image_ref,
            observed_at=msg.observed_at,
            received_at=g.inbound.received_at,
            mode=mode,
            hold_reason=hold_reason.value if hold_reason is not None else None,
            session_candidate=(
                g.candidate
                if mode in ("open", "open_any") or (mode == "exit" and g.current is None)
                else None
            ),
            anomalies=anomalies,
            priced=priced,
            no_entry_fee_fen=lane.NO_ENTRY_FEE_FEN,
            event_at=at,
            sent_at=msg.sent_at,
            clock_offset_ms=g.clock.offset_ms if g.clock is not None else None,
            clock_skew=g.clock.skew if g.clock is not None else None,
            review=review,
        )
        now_ms = logic.to_ms(now)
        g.call = store.PassageCall(
            lot_id=g.lot.lot_id,
            device_id=msg.device_id,
            seq=msg.seq,
            now_ms=now_ms,
            plate=g.plate.text if g.plate is not None else None,
            mode=mode,
            session_id=session_id,
            at_ms=logic.to_ms(at),
            record=record_encoder.encode(g.record),
            command_id="" if stale or mode == "late" else f"c-{msg.device_id}-{msg.seq}",
            command_topic=self.topics.commands(g.lot.lot_id, g.lane_id),
            command_open=g.open_payload or g.hold_payload,
            command_hold=g.hold_payload or g.open_payload,
            command_expires_ms=now_ms + _ms(self.tuning.command_ttl),
            command_resend_ms=now_ms + _ms(self.tuning.command_resend_after),
            command_stale_ms=logic.to_ms(at) + _ms(self.tuning.command_stale_after),
            no_entry_session=(
                g.candidate if mode == "exit" and g.current is None and g.plate is not None else ""
            ),
            late_within_ms=_ms(self.tuning.late_entry_within),
        )

    def _queue(self, pipe: store.Batch, item: Item, now: datetime) -> None:
        now_ms = logic.to_ms(now)
        match item:
            case Dead():
                store.queue_dead(
                    pipe,
                    store.DeadCall(
                        tag=item.tag,
                        now_ms=now_ms,
                        topic=item.inbound.topic,
                        reason=item.reason,
                        payload=item.inbound.payload,
                        device_id=item.device_id,
                        seq=item.seq,
                    ),
                )
            case Gate():
                self._decide_gate(item, now)
                assert item.call is not None
                store.queue_passage(pipe, item.call)
            case Sensor():
                msg = item.msg
                record = SpaceWire(
                    device_id=msg.device_id,
                    seq=msg.seq,
                    lot_id=item.lot.lot_id,
                    space_id=item.space_id,
                    occupied=msg.occupied,
                    battery_pct=msg.battery_pct,
                    observed_at=msg.observed_at,
                    received_at=item.inbound.received_at,
                    event_at=item.at,
                    sent_at=msg.sent_at,
                    clock_offset_ms=item.clock.offset_ms if item.clock is not None else None,
                    clock_skew=item.clock.skew if item.clock is not None else None,
                )
                store.queue_space(
                    pipe,
                    store.SpaceCall(
                        lot_id=item.lot.lot_id,
                        device_id=msg.device_id,
                        seq=msg.seq,
                        now_ms=now_ms,
                        space_id=item.space_id,
                        occupied=msg.occupied,
                        observed_ms=logic.to_ms(item.at),
                        record=record_encoder.encode(record),
                        flap_changes=self.tuning.flap_changes,
                        flap_window_ms=int(self.tuning.flap_window.total_seconds() * 1000),
                    ),
                )
            case Status():
                status = item.msg
                store.queue_status(
                    pipe,
                    lot_id=item.lot_id,
                    device_id=status.device_id,
                    online=status.online,
                    at_ms=logic.to_ms(status.at),
                    now_ms=now_ms,
                    firmware=status.firmware,
                    record=record_encoder.encode(
                        StatusRecord(
                            device_id=status.device_id,
                            lot_id=item.lot_id,
                            online=status.online,
                            at=status.at,
                            firmware=status.firmware,
                            received_at=item.inbound.received_at,
                        )
                    ),
                )
            case Ack():
                ack = item.msg
                store.queue_ack(
                    pipe,
                    lot_id=item.lot_id,
                    command_id=ack.command_id,
                    result=ack.result,
                    now_ms=now_ms,
                    record=record_encoder.encode(
                        AckRecord(
                            command_id=ack.command_id,
                            lot_id=item.lot_id,
                            lane_id=item.lane_id,
                            result=ack.result,
                            at=ack.at,
                            received_at=item.inbound.received_at,
                        )
                    ),
                )

    # ---------------------------------------------------------- apply

    async def decode(self, batch: Sequence[Inbound]) -> Decoded:
        """``handle``'s first step alone: topics, payloads and the directory, no Redis
        (so the gateway decodes a batch while the one before is applied). For one
        ``handle(batch, now, decoded=...)`` of the same batch."""
        report = BatchReport()
        items = await self._classify_all(batch, report)
        return Decoded(items, report.unknown_devices)

    async def handle(
        self, batch: Sequence[Inbound], now: datetime, *, decoded: Decoded | None = None
    ) -> BatchReport:
        """Apply ``batch``; see the module docstring for what returning and raising mean."""
        report = BatchReport()
        if decoded is None:
            items = await self._classify_all(batch, report)
        else:
            items, report.unknown_devices = decoded.items, decoded.unknown_devices
        # Independent reads: one round trip's time for both (two connections).
        for outcome in await asyncio.gather(
            self._read_clocks(items),
            self._read_inputs([i for i in items if isinstance(i, Gate)]),
            return_exceptions=True,
        ):
            if isinstance(outcome, BaseException):
                raise outcome
        await self._read_stays_of_day([i for i in items if isinstance(i, Gate)])
        followups: list[tuple[str, FollowUp]] = []
        watermarks: dict[str, tuple[str, int]] = {}
        pending: list[Item] = list(items)
        for _ in range(self.tuning.stale_rounds + 1):
            if not pending:
                break
            pipe = store.Batch()
            for item in pending:
                self._queue(pipe, item, now)
            replies = await pipe.execute(self.redis)
            retry: list[Item] = []
            missing_lots: set[str] = set()
            for item, reply in zip(pending, replies, strict=True):
                again = self._settle(item, reply, report, followups, watermarks, missing_lots)
                if again is not None:
                    retry.append(again)
            if missing_lots:
                await self.sync_lots([self.directory.lots[lot] for lot in missing_lots])
            pending = retry
        if pending:
            raise CoreBusy(f"{len(pending)} events kept racing; retrying the batch")
        await self.run_followups(followups, now)
        for device, (_tag, wm) in watermarks.items():
            report.publishes.append(
                Publish(
                    self.topics.watermark(device),
                    messages.encode(messages.Watermark(seq=wm)),
                    qos=1,
                    retain=True,
                )
            )
        return report

    async def handle_recovering(
        self,
        batch: Sequence[Inbound],
        now: Callable[[], datetime],
        recovery: Recovery,
        *,
        decoded: Decoded | None = None,
    ) -> BatchReport:
        """``handle`` inside the core-recovery ladder, the one every caller uses:

        - the core is not loaded (``CoreNotReady``: Redis lost its state) -> rebuild it
          from PostgreSQL (``recovery.rebuild``), then the same batch again;
        - Redis lacks the library's functions -> load them, then again;
        - the core is busy or unreachable -> again after the backoff, or give up at once
          (``recovery.busy_gives_up``: ``CoreUnavailable("busy")``).

        A bounded ladder that runs out while the core is loading raises
        ``CoreUnavailable("loading")``. Every retry is the same batch with a fresh
        ``now()``: ``handle`` is idempotent on ``(device_id, seq)``, so retries converge.
        ``decoded`` (``decode`` of the batch) serves the first attempt; a retry decodes
        afresh, its items holding what the failed attempt read.
        """
        delay = recovery.first_delay
        attempt = 0
        while True:
            attempt += 1
            last = recovery.attempts is not None and attempt >= recovery.attempts
            started = time.perf_counter()
            try:
                first, decoded = decoded, None
                report = await self.handle(batch, now(), decoded=first)
            except CoreNotReady as error:
                if last:
                    raise CoreUnavailable("loading") from error
                if recovery.on_retry is not None:
                    recovery.on_retry("not_ready", error, delay)
                await recovery.rebuild()
            except ResponseError as error:
                if last or "function" not in str(error).lower():
                    raise
                if recovery.on_retry is not None:
                    recovery.on_retry("library", error, delay)
                if recovery.busy_gives_up:
                    await store.load_library(self.redis)
                else:
                    with contextlib.suppress(OSError, RedisError):
                        await store.load_library(self.redis)
            except (CoreBusy, RedisError, OSError) as error:
                if recovery.busy_gives_up:
                    raise CoreUnavailable("busy") from error
                if recovery.on_retry is not None:
                    recovery.on_retry("busy", error, delay)
            else:
                if recovery.on_done is not None:
                    recovery.on_done(time.perf_counter() - started)
                return report
            await asyncio.sleep(delay)
            delay = min(delay * 2, recovery.max_delay)

    async def free_counts(self, lot_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """lot -> (capacity, free): capacity minus open sessions (gated lots) or minus
        occupied spaces (on-street lots), never below 0. Lots the core lacks are left out."""
        counts = await store.live_counts(self.redis, lot_ids)
        return {lot_id: (count.capacity, count.free) for lot_id, count in counts.items()}

    def availability(self, lot_id: str, capacity: int, free: int, now: datetime) -> Publish:
        """The retained QoS 0 ``availability`` message of a lot (contracts/mqtt.md)."""
        payload = {"lot_id": lot_id, "capacity": capacity, "free": free, "at": now.isoformat()}
        return Publish(self.topics.availability(lot_id), msgspec.json.encode(payload), 0, True)

    def _settle(
        self,
        item: Item,
        reply: object,
        report: BatchReport,
        followups: list[tuple[str, FollowUp]],
        watermarks: dict[str, tuple[str, int]],
        missing_lots: set[str],
    ) -> Item | None:
        """Account for one reply; return the item to send again, if any."""
        if isinstance(reply, ResponseError):
            message = str(reply)
            if "BADARG" not in message:
                raise reply
            # The core refused what we built from a message that decoded: keep
            # the message, never loop on it.
            return Dead(item.inbound, self._tag_of(item), f"core_rejected: {message}")
        if isinstance(reply, Exception):
            raise reply
        values = store.texts(reply)
        status = values[0] if values else ""
        if status == "notready":
            raise CoreNotReady(f"shard {self._tag_of(item)} is not loaded")
        if status == "nolot" and isinstance(item, (Gate, Sensor)):
            missing_lots.add(item.lot.lot_id)
            return item
        match item:
            case Dead():
                report.dead_lettered += 1
                report.dead_reasons[reason_code(item.reason)] += 1
                if status == "dup" and item.device_id is not None:
                    self._note_watermark(watermarks, item.tag, item.device_id, item.seq, values[1])
            case Gate():
                if status == "stale":
                    if item.msg.direction == "in":
                        item.gone = GoneExit.parse(values[3]) if values[3] else None
                    else:
                        item.current = OpenSession.parse(values[3]) if values[3] else None
                    return item
                op = f"{item.msg.device_id}:{item.msg.seq}"
                if status == "dup":
                    report.duplicates += 1
                    self._note_watermark(
                        watermarks,
                        keys.lot_tag(item.lot.lot_id),
                        item.msg.device_id,
                        item.msg.seq,
                        values[4],
                    )
                    if values[5]:
                        followups.append((op, FollowUp.parse(values[5])))
                    return None
                report.applied += 1
                report.lots.add(item.lot.lot_id)
                outcome = values[1]
                report.outcomes[outcome] += 1
                if len(values) > 6 and values[6]:
                    report.gaps += 1
                if values[5]:
                    followups.append((op, FollowUp.parse(values[5])))
                if len(values) > 7 and values[7]:
                    report.commands_superseded += 1
                payload = item.hold_payload if outcome in ("full", "held") else item.open_payload
                if payload:
                    report.publishes.append(
                        Publish(
                            self.topics.commands(item.lot.lot_id, item.lane_id), payload, 1, False
                        )
                    )
            case Sensor():
                if status == "dup":
                    report.duplicates += 1
                    self._note_watermark(
                        watermarks,
                        keys.lot_tag(item.lot.lot_id),
                        item.msg.device_id,
                        item.msg.seq,
                        values[4],
                    )
                    return None
                report.applied += 1
                report.lots.add(item.lot.lot_id)
                report.outcomes[f"space_{values[1]}"] += 1
                if len(values) > 5 and values[5]:
                    report.gaps += 1
            case Status() | Ack():
                report.outcomes[values[0] if values else "?"] += 1
        return None

    @staticmethod
    def _note_watermark(
        watermarks: dict[str, tuple[str, int]], tag: str, device: str, seq: int | None, wm: str
    ) -> None:
        """A duplicate the system of record already covers: tell the device again.

        The device re-sent it because it has not seen a watermark covering it
        (lost, or published before it reconnected); without this its outbox
        would keep re-sending forever.
        """
        try:
            value = int(wm)
        except ValueError:
            return
        if value <= 0 or seq is None or value < seq:
            return
        best = watermarks.get(device)
        if best is None or best[1] < value:
            watermarks[device] = (tag, value)

    def _tag_of(self, item: Item) -> str:
        match item:
            case Dead():
                return item.tag
            case Gate() | Sensor():
                return keys.lot_tag(item.lot.lot_id)
            case Status() | Ack():
                return keys.lot_tag(item.lot_id)
        raise AssertionError(item)

    # ---------------------------------------------------------- follow-ups

    async def run_followups(self, followups: Sequence[tuple[str, FollowUp]], now: datetime) -> None:
        """Update the plate index for opened/closed sessions and supersede what a
        new entry replaced elsewhere; then drop the follow-ups. Idempotent."""
        if not followups:
            return
        now_ms = logic.to_ms(now)
        pipe = store.Batch()
        for op, fu in followups:
            if fu.kind == "claim":
                store.queue_plate_claim(
                    pipe,
                    plate=fu.plate,
                    session_id=fu.session_id,
                    lot_id=fu.lot_id,
                    at_ms=fu.at_ms,
                    op=op,
                )
            else:
                store.queue_plate_release(
                    pipe, plate=fu.plate, session_id=fu.session_id, at_ms=fu.at_ms
                )
        replies = await pipe.execute(self.redis)
        pipe = store.Batch()
        supersedes = 0
        for (_op, fu), reply in zip(followups, replies, strict=True):
            values = store.texts(reply)
            if values[0] == "notready":
                raise CoreNotReady(f"plate shard of {fu.plate} is not loaded")
            if fu.kind != "claim":
                continue
            result, other_sid, other_lot = values[0], values[1], values[2]
            if result in ("claimed", "same") and other_sid and other_sid != fu.session_id:
                store.queue_supersede(
                    pipe,
                    lot_id=other_lot,
                    plate=fu.plate,
                    session_id=other_sid,
                    by_session=fu.session_id,
                    by_lot=fu.lot_id,
                    now_ms=now_ms,
                    why=AnomalyKind.PLATE_ELSEWHERE,
                )
                supersedes += 1
            elif result == "older" and other_sid:
                store.queue_supersede(
                    pipe,
                    lot_id=fu.lot_id,
                    plate=fu.plate,
                    session_id=fu.session_id,
                    by_session=other_sid,
                    by_lot=other_lot or fu.lot_id,
                    now_ms=now_ms,
                    why=AnomalyKind.OLDER_ENTRY,
                )
                supersedes += 1
        if supersedes:
            for reply in await pipe.execute(self.redis):
                if isinstance(reply, Exception):
                    raise reply
                if store.texts(reply)[0] == "notready":
                    raise CoreNotReady("a lot shard is not loaded")
            pipe = store.Batch()
        store.queue_followups_done(pipe, [(fu.lot_id, op) for op, fu in followups])
        await pipe.execute(self.redis)

    async def finish_stale_followups(self, now: datetime, *, older_than: timedelta) -> int:
        """Run follow-ups a crashed gateway left behind (their MQTT message was acked
        or lost with a broker, so no redelivery will run them)."""
        cutoff = logic.to_ms(now - older_than)
        found: list[tuple[str, FollowUp]] = []
        for tag in keys.all_lot_tags():
            for op, value in await store.stale_followups(
                self.redis, tag, made_before_ms=cutoff, limit=1000
            ):
                try:
                    found.append((op, FollowUp.parse(value)))
                except ValueError:
                    continue
        await self.run_followups(found, now)
        return len(found)

    # ---------------------------------------------------------- housekeeping

    async def resend_due(self, now: datetime, *, limit: int = 500) -> Resends:
        """Commands whose gate has not acked them yet, due again now (the schedule:
        ``Tuning.command_resend_after`` and after), and how many the core stopped
        re-sending instead (superseded, stale, out of attempts, expired; each recorded)."""
        found = Resends([], Counter())
        for tag in keys.all_lot_tags():
            due = await store.due_commands(
                self.redis,
                tag,
                now_ms=logic.to_ms(now),
                first_ms=_ms(self.tuning.command_resend_after),
                cap_ms=_ms(self.tuning.command_resend_cap),
                max_sends=self.tuning.command_resends,
                limit=limit,
            )
            found.publishes.extend(
                Publish(topic, payload, 1, False) for topic, payload in due.sends
            )
            found.dropped.update(due.dropped)
        return found

    async def report_silent(self, now: datetime, *, silent_after: timedelta) -> int:
        cutoff = logic.to_ms(now - silent_after)
        total = 0
        for tag in keys.all_lot_tags():
            total += await store.report_silent(
                self.redis, tag, cutoff_ms=cutoff, now_ms=logic.to_ms(now), limit=1000
            )
        return total

    async def sync_lots(self, lots: Sequence[LotInfo]) -> None:
        """Create lots the core does not know yet, refresh capacity and kind of the others."""
        if not lots:
            return
        pipe = store.Batch()
        for lot in lots:
            store.queue_lot(pipe, lot_id=lot.lot_id, capacity=lot.capacity, kind=lot.kind)
        for reply in await pipe.execute(self.redis):
            if isinstance(reply, Exception):
                raise reply
            if store.text(reply) == "notready":
                raise CoreNotReady("a lot shard is not loaded")


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


async def load_directory(conn: asyncpg.Connection) -> Directory:
    directory = Directory()
    groups = await lots.groups_of_lots(conn)
    for lot in await lots.every_lot(conn):
        directory.lots[lot.id] = LotInfo(lot, groups.get(lot.id, frozenset()))
    for r in await records.live_devices(conn):
        directory.add_device(
            DeviceInfo(r["device_id"], r["lot_id"], r["kind"], r["lane_id"], r["space_id"])
        )
    return directory
