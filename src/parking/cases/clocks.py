"""码上反映's clocks and numbers: the clock job that escalates what ran out and closes
what nobody answered (``parking cases tick``), and the response-time figures."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import asyncpg
import msgspec
import redis.asyncio as aioredis

from parking.anomalies import service as anomalies
from parking.auth.model import Principal, Role
from parking.bills import service as bills
from parking.cases import logic, service, store
from parking.cases.model import Case, Category, Level, Place, ResponseFigures, Source, State
from parking.cases.service import SYSTEM, Notifier, call_in, locked, rules_in_force
from parking.clock import SHANGHAI
from parking.devices import service as registry
from parking.devices.model import Device
from parking.lots import service as lots
from parking.occupancy import store as core
from parking.payments import anomalies as payment_anomalies
from parking.payments import disputes as payment_disputes
from parking.payments.model import AnomalyStatus, DisputeStatus

# --------------------------------------------------------------------------- clocks


async def place_of_case(conn: asyncpg.Connection, case: Case) -> Place:
    """The place a case is about, as it is now (its lot's owner may have changed)."""
    place = await place_at(conn, case.lot_id, case.lane_id, case.space_id)
    if place is None:  # the lot is gone: the case keeps its district, no owner
        return Place(
            lot_id=case.lot_id,
            district_code=case.district_code,
            company_id=None,
            lane_id=case.lane_id,
            space_id=case.space_id,
        )
    return place


async def tick(conn: asyncpg.Connection, notifier: Notifier, *, now: datetime) -> dict[str, int]:
    """Escalate every case whose clock ran out (one level up, to the next holder, with
    a fresh accept clock; a big one reminds its holders and sets the clock again), and
    close resolved cases nobody answered. One transaction per case."""
    escalated = reminded = closed = 0
    rules = (await rules_in_force(conn, now)).rules
    for case_id in await store.cases_due(conn, now, limit=500):
        async with conn.transaction():
            case = await locked(conn, case_id)
            breach = logic.breach(case, now)
            if breach is None:
                continue
            place = await place_of_case(conn, case)
            level = breach.to_level or case.level
            holder = str(logic.holder_for(level, place)) if breach.to_level else case.holder
            span = (
                logic.accept_due(rules, level, now) - now
                if breach.clock == "accept"
                else logic.resolve_due(rules, case.category, now) - now
            )
            updated = await store.update_case(
                conn,
                case.id,
                state=State.DISPATCHED if breach.to_level else case.state,
                level=level,
                holder=holder,
                now=now,
                accept_due_at=now + span if breach.clock == "accept" else None,
                resolve_due_at=now + span if breach.clock == "resolve" else None,
            )
            await store.add_event(
                conn, case.id, at=now, actor=SYSTEM, action="breach", from_state=case.state,
                to_state=updated.state, level=level, holder=holder,
                note=f"{breach.clock} clock ran out at {breach.due_at.isoformat()}",
            )  # fmt: skip
            if breach.to_level is not None:
                escalated += 1
                await call_in(conn, notifier, rules, updated, place, now)
            else:
                reminded += 1
                for recipient in [updated.holder] + [
                    t.holder for t in await store.tasks(conn, case.id) if t.state != "done"
                ]:
                    await notifier.notify(
                        conn, updated, recipient=recipient, kind="overdue",
                        message=f"case {case.id}: the {breach.clock} clock ran out", now=now,
                    )  # fmt: skip
    horizon = now - timedelta(minutes=rules.close_after_minutes)
    for case_id in await store.resolved_before(conn, horizon, limit=500):
        async with conn.transaction():
            case = await locked(conn, case_id)
            if not logic.closes_by_itself(case, rules, now):
                continue
            await store.update_case(
                conn, case.id, state=State.CLOSED, level=case.level, holder=case.holder,
                now=now, closed_at=now,
            )  # fmt: skip
            await store.add_event(
                conn, case.id, at=now, actor=SYSTEM, action="auto_close",
                from_state=case.state, to_state=State.CLOSED, level=case.level,
                holder=case.holder, note="no answer from the reporter",
            )  # fmt: skip
            closed += 1
    return {"escalated": escalated, "reminded": reminded, "closed": closed}


# --------------------------------------------------------------------------- figures


async def response_figures(
    conn: asyncpg.Connection, *, since: datetime, until: datetime, now: datetime
) -> ResponseFigures:
    """Response time (received -> accepted) p50 / p90 per level, district and business
    day, the share within the target, breaches and cases by category, for the cases
    received in [since, until)."""
    rules = (await rules_in_force(conn, now)).rules
    target = rules.accept_minutes[Level.SMALL]
    rows = [
        logic.Response(
            level=r["level"],
            district=r["district_code"],
            day=r["received_at"].astimezone(SHANGHAI).date().isoformat(),
            category=r["category"],
            minutes=None
            if r["accepted_at"] is None
            else logic.response_minutes(r["received_at"], r["accepted_at"]),
        )
        for r in await store.responses(conn, since=since, until=until)
    ]
    waiting_now, overdue_now = await store.waiting_now(conn, now)
    categories: dict[str, int] = {}
    for row in rows:
        categories[row.category] = categories.get(row.category, 0) + 1
    return ResponseFigures(
        since=since,
        until=until,
        target_minutes=target,
        overall=logic.group("city", rows, target),
        by_level=logic.grouped(rows, "level", target),
        by_district=logic.grouped(rows, "district", target),
        by_day=logic.grouped(rows, "day", target),
        by_category=dict(sorted(categories.items())),
        breaches=await store.breaches(conn, since=since, until=until),
        waiting=sum(1 for r in rows if r.minutes is None),
        waiting_now=waiting_now,
        overdue_now=overdue_now,
    )


# --------------------------------------------------------------------------- devices

#: the platform's own view, for reading every lot's anomalies
_WATCHER: Final = Principal(subject=SYSTEM, role=Role.CITY, token_id="cases-clock")  # noqa: S106


async def watch_devices(
    conn: asyncpg.Connection, redis: aioredis.Redis, notifier: Notifier, *, now: datetime
) -> dict[str, int]:
    """Devices the gateway reported silent (an open ``device_silent`` anomaly) and not
    heard since open cases, once: a gate's its own (``gate_fault`` at its lane), a lot's
    silent sensors one together (``sensor_fault`` at the lot, ref ``sensors:<lot>``,
    for the district's team to send one person round). A case closes when none of its
    devices is silent any more."""
    heard = await core.heard(redis)
    reported = await anomalies.queue(
        conn, _WATCHER, status="open", kind="device_silent", after=None, limit=1000
    )
    devices = {d.device_id: d for d in await registry.list_devices(conn, live_only=True)}
    silent: dict[str, list[Device]] = {}
    for anomaly in reported:
        device = devices.get(anomaly.device_id or "")
        if device is None or heard.get(device.device_id, -1) > _ms(anomaly.created_at):
            continue
        ref = f"sensors:{device.lot_id}" if device.kind == "sensor" else device.device_id
        silent.setdefault(ref, []).append(device)
    opened = closed = 0
    for ref, members in sorted(silent.items()):
        first = members[0]
        sensors = ref.startswith("sensors:")
        place = await place_at(
            conn,
            first.lot_id,
            None if sensors else first.lane_id,
            None if sensors else first.space_id,
        )
        if place is None:
            continue
        names = sorted(d.device_id for d in members)
        text = (
            f"{len(names)} 个地磁设备没有消息：{'、'.join(names[:20])}"
            + ("等" if len(names) > 20 else "")
            if sensors
            else f"设备 {first.device_id} 没有消息"
        )
        made = await service.open_by_platform(
            conn,
            notifier,
            source=Source.DEVICE_SILENT,
            source_ref=ref,
            place=place,
            category=Category.SENSOR_FAULT if sensors else Category.GATE_FAULT,
            text=text[:1000],
            now=now,
        )
        opened += made is not None
    if len(reported) < 1000:  # the whole list: a case none of whose devices is in it closes
        for case in await store.open_cases_of_source(conn, Source.DEVICE_SILENT.value):
            if case.source_ref is None or case.source_ref in silent:
                continue
            async with conn.transaction():
                done = await service.close_by_platform(
                    conn,
                    source=Source.DEVICE_SILENT,
                    source_ref=case.source_ref,
                    note="its devices were heard again",
                    now=now,
                )
            closed += done is not None
    return {"opened": opened, "closed": closed}


#: a lot full this long opens a case (``other`` at the lot: traffic to send elsewhere)
FULL_FOR: Final = timedelta(hours=1)


async def watch_full_lots(
    conn: asyncpg.Connection, redis: aioredis.Redis, notifier: Notifier, *, now: datetime
) -> dict[str, int]:
    """A lot the core counts full (no free space) since the clock job first saw it so,
    for ``FULL_FOR`` or more, opens a case at the lot, once; the case closes when the lot
    has a free space again. Since when a lot is full is kept in ``case_full_lots``."""
    every = await lots.every_lot(conn)
    counts = await core.live_counts(redis, [lot.id for lot in every])
    full = sorted(lot_id for lot_id, c in counts.items() if c.capacity > 0 and c.free == 0)
    since = await store.full_lots(conn)
    not_full = sorted(set(since) - set(full))
    async with conn.transaction():
        await store.mark_not_full(conn, not_full)
        await store.mark_full(conn, [lot_id for lot_id in full if lot_id not in since], now)
    opened = closed = 0
    for lot_id in full:
        began = since.get(lot_id, now)
        if now - began < FULL_FOR:
            continue
        minutes = int((now - began).total_seconds() // 60)
        opened += await _open_for(
            conn, notifier, Source.LOT_FULL, lot_id, lot_id, None, None, Category.OTHER,
            f"车场已满 {minutes} 分钟（自 {began.astimezone(SHANGHAI):%H:%M} 起），"
            "请引导车辆到附近车场", now,
        )  # fmt: skip
    for lot_id in not_full:
        async with conn.transaction():
            done = await service.close_by_platform(
                conn, source=Source.LOT_FULL, source_ref=lot_id,
                note="the lot has a free space again", now=now,
            )  # fmt: skip
        closed += done is not None
    return {"opened": opened, "closed": closed, "full": len(full)}


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def place_at(
    conn: asyncpg.Connection, lot_id: str, lane_id: str | None, space_id: str | None
) -> Place | None:
    lot = await lots.find_lot(conn, lot_id)
    if lot is None:
        return None
    return Place(
        lot_id=lot.id,
        district_code=lot.district_code,
        company_id=lot.company_id,
        lane_id=lane_id,
        space_id=space_id,
    )


# --------------------------------------------------------------------------- disputes


async def watch_disputes(
    conn: asyncpg.Connection, notifier: Notifier, *, now: datetime
) -> dict[str, int]:
    """A driver's dispute of a bill opens a case at the bill's lot (``wrong_charge``:
    the district's team, with its clocks), once; the case closes when finance decides
    the dispute (approved or rejected)."""
    opened = closed = 0
    open_disputes = await payment_disputes.disputes(conn, status=DisputeStatus.OPEN, limit=1000)
    for dispute in open_disputes:
        bill = await bills.get(conn, dispute.bill_id)
        place = await place_at(conn, bill.lot_id, None, None)
        if place is None:
            continue
        made = await service.open_by_platform(
            conn,
            notifier,
            source=Source.DISPUTE,
            source_ref=dispute.id,
            place=place,
            category=Category.WRONG_CHARGE,
            text=f"票据 {dispute.bill_id} 被申诉：{dispute.reason}"[:1000],
            now=now,
        )
        opened += made is not None
    still_open = {d.id for d in open_disputes}
    if len(open_disputes) >= 1000:  # not the whole list: decide nothing closed this time
        return {"opened": opened, "closed": 0}
    for case in await store.open_cases_of_source(conn, Source.DISPUTE.value):
        assert case.source_ref is not None
        if case.source_ref in still_open:
            continue
        decided = await payment_disputes.dispute_view(conn, case.source_ref)
        async with conn.transaction():
            done = await service.close_by_platform(
                conn,
                source=Source.DISPUTE,
                source_ref=case.source_ref,
                note=f"the dispute was {decided.status.value} by finance",
                now=now,
            )
        closed += done is not None
    return {"opened": opened, "closed": closed}


# --------------------------------------------------------------------------- other watchers

#: a lane whose commands failed this often within the hour opens a gate_fault case
GATE_FAILURES: Final = 3


async def watch_anomalies(
    conn: asyncpg.Connection, notifier: Notifier, *, now: datetime
) -> dict[str, int]:
    """Cases the platform opens from what it recorded: a payment anomaly with a bill (at
    the bill's lot, ``payment_problem``, closed when finance resolves it), a device clock
    out of line (``gate_fault``/``sensor_fault`` at the device, closed when the anomaly
    is resolved), a lane whose gate failed ``GATE_FAILURES`` commands within the hour
    (``gate_fault``, for staff to close)."""
    opened = closed = 0
    money = await payment_anomalies.anomalies(conn, status=AnomalyStatus.OPEN, limit=1000)
    for found in money:
        if found.bill_id is None:
            continue  # an order of nobody's bill: finance's alone, no place to send anyone
        bill = await bills.get(conn, found.bill_id)
        opened += await _open_for(
            conn, notifier, Source.PAYMENT_ANOMALY, found.id, bill.lot_id, None, None,
            Category.PAYMENT_PROBLEM, f"支付异常 {found.kind.value}：{found.detail}", now,
        )  # fmt: skip
    if len(money) < 1000:  # the whole list: a cause not in it is resolved
        closed += await _close_gone(conn, Source.PAYMENT_ANOMALY, {a.id for a in money}, now)

    skewed = await anomalies.queue(
        conn, _WATCHER, status="open", kind="device_clock_skew", after=None, limit=1000
    )
    devices = {d.device_id: d for d in await registry.list_devices(conn, live_only=True)}
    refs = set()
    for skew in skewed:
        device = devices.get(skew.device_id or "")
        if device is None:
            continue
        refs.add(device.device_id)
        kind = Category.SENSOR_FAULT if device.kind == "sensor" else Category.GATE_FAULT
        opened += await _open_for(
            conn, notifier, Source.DEVICE_CLOCK, device.device_id, device.lot_id,
            device.lane_id, device.space_id, kind, f"设备 {device.device_id} 的时钟偏差过大", now,
        )  # fmt: skip
    if len(skewed) < 1000:
        closed += await _close_gone(conn, Source.DEVICE_CLOCK, refs, now)

    failed = await anomalies.queue(
        conn, _WATCHER, status="open", kind="command_failed", after=None, limit=1000
    )
    per_lane: dict[tuple[str, str], int] = {}
    for fail in failed:
        lane = msgspec.json.decode(fail.details).get("lane_id")
        if fail.lot_id and lane and now - fail.created_at <= timedelta(hours=1):
            per_lane[(fail.lot_id, lane)] = per_lane.get((fail.lot_id, lane), 0) + 1
    for (lot_id, lane), count in sorted(per_lane.items()):
        if count >= GATE_FAILURES:
            opened += await _open_for(
                conn, notifier, Source.GATE_FAILING, f"{lot_id}:{lane}", lot_id, lane, None,
                Category.GATE_FAULT, f"车道 {lane} 的道闸一小时内 {count} 次未执行指令", now,
            )  # fmt: skip
    return {"opened": opened, "closed": closed}


async def _open_for(
    conn: asyncpg.Connection,
    notifier: Notifier,
    source: Source,
    ref: str,
    lot_id: str,
    lane_id: str | None,
    space_id: str | None,
    category: Category,
    text: str,
    now: datetime,
) -> int:
    place = await place_at(conn, lot_id, lane_id, space_id)
    if place is None:
        return 0
    made = await service.open_by_platform(
        conn,
        notifier,
        source=source,
        source_ref=ref,
        place=place,
        category=category,
        text=text[:1000],
        now=now,
    )
    return int(made is not None)


async def _close_gone(
    conn: asyncpg.Connection, source: Source, still: set[str], now: datetime
) -> int:
    """Close the open cases of ``source`` whose cause is no longer open."""
    closed = 0
    for case in await store.open_cases_of_source(conn, source.value):
        if case.source_ref is None or case.source_ref in still:
            continue
        async with conn.transaction():
            done = await service.close_by_platform(
                conn, source=source, source_ref=case.source_ref, note="its cause was resolved",
                now=now,
            )  # fmt: skip
        closed += done is not None
    return closed
