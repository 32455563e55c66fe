"""Ground truth: what the platform holds after a replay against what the replay sent.

Reads PostgreSQL, Redis and the API with its own queries (no platform store or
service is asked), and prices every closed stay a second time with ``fees``
(from the tariff documents, calendars and class overrides the platform keeps:
those are inputs, not answers). Every difference is a ``Mismatch`` of a named
kind; the report groups them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
import redis.asyncio as aioredis

from counterparts.replay import fees
from counterparts.replay.model import Payer, Stay
from counterparts.replay.truth import ExpectedSession, Truth
from parking.clock import SHANGHAI
from parking.occupancy import keys

#: mismatches kept verbatim per kind in the report (the counts are complete)
EXAMPLES_PER_KIND = 20


@dataclass(slots=True)
class Mismatch:
    kind: str
    what: str
    expected: object = None
    actual: object = None


@dataclass(slots=True)
class CheckResult:
    mismatches: list[Mismatch] = field(default_factory=list)
    #: what was compared, by kind of thing
    compared: dict[str, int] = field(default_factory=dict)
    #: figures the report shows (money, anomalies by kind, ...)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, what: str, expected: object = None, actual: object = None) -> None:
        self.mismatches.append(Mismatch(kind, what, expected, actual))

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(m.kind for m in self.mismatches))

    @property
    def passed(self) -> bool:
        return not self.mismatches


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(SHANGHAI).isoformat()


# ------------------------------------------------------------------ pricing


def vehicle(plate: str) -> tuple[int, bool]:
    """(vehicle class, new energy) of a plate as GA 36 writes it: 8 characters with D or F
    third is a small new-energy car, with D or F last a large one; 7 characters are
    an ordinary plate, a small car unless an operator says otherwise."""
    if len(plate) == 8 and plate[-1] in "DF":
        return 2, True
    if len(plate) == 8 and plate[2] in "DF":
        return 1, True
    return 1, False


@dataclass(slots=True)
class Pricing:
    lot_tariffs: dict[tuple[str, int], str]
    versions: dict[str, list[tuple[datetime, int, fees.Tariff]]]
    overrides: dict[str, int]
    day_types: fees.DayTypes
    #: plates with an exemption or a pass: priced by rules this checker does not redo
    special: set[str]

    def owes(self, stay: Stay) -> bool:
        """Does a stay as it happened cost anything (its first stay of the day)?"""
        if stay.plate is None or stay.exit_ms is None or stay.plate in self.special:
            return False
        session = ExpectedSession(stay.lot, stay.plate, ("", 0), stay.entry_ms, stay.exit_ms)
        try:
            return self.fee(session, 1)[0] > 0
        except (fees.FeeError, KeyError, IndexError):
            return True

    def fee(self, s: ExpectedSession, stay_of_day: int) -> tuple[int, str]:
        """(fee, tariff id) of a closed stay."""
        assert s.entry_ms is not None
        assert s.exit_ms is not None
        cls, nev = vehicle(s.plate)
        cls = self.overrides.get(s.plate, cls)
        tariff_id = self.lot_tariffs[(s.lot, cls)]
        entry = datetime.fromtimestamp(s.entry_ms / 1000, UTC)
        exit = datetime.fromtimestamp(s.exit_ms / 1000, UTC)
        in_force = [v for v in self.versions[tariff_id] if v[0] <= entry]
        tariff = in_force[-1][2]
        return (
            fees.price(
                tariff, entry, exit, nev=nev, stay_of_day=stay_of_day, day_types=self.day_types
            ),
            tariff_id,
        )


async def load_pricing(
    conn: asyncpg.Connection, lots: Sequence[str], plates: Sequence[str]
) -> Pricing:
    rows = await conn.fetch(
        "SELECT lot_id, vehicle_class, tariff_id FROM lot_tariffs WHERE lot_id = ANY($1)",
        list(lots),
    )
    lot_tariffs = {(r["lot_id"], r["vehicle_class"]): r["tariff_id"] for r in rows}
    versions: dict[str, list[tuple[datetime, int, fees.Tariff]]] = defaultdict(list)
    for r in await conn.fetch(
        "SELECT tariff_id, version, effective_from, document::text AS doc FROM tariff_versions "
        "ORDER BY tariff_id, effective_from, version"
    ):
        versions[r["tariff_id"]].append(
            (r["effective_from"], r["version"], fees.read_tariff(msgspec.json.decode(r["doc"])))
        )
    calendars = [
        msgspec.json.decode(r["doc"])
        for r in await conn.fetch("SELECT document::text AS doc FROM calendars ORDER BY seq DESC")
    ]
    overrides = {
        r["plate"]: r["vehicle_class"]
        for r in await conn.fetch(
            "SELECT plate, vehicle_class FROM vehicle_class_overrides WHERE plate = ANY($1)",
            list(plates),
        )
    }
    special = {
        r["plate"]
        for r in await conn.fetch(
            "SELECT plate FROM plate_exemptions WHERE plate = ANY($1) "
            "UNION SELECT plate FROM monthly_passes WHERE plate = ANY($1)",
            list(plates),
        )
    }
    return Pricing(lot_tariffs, dict(versions), overrides,
                   fees.calendar_day_types(calendars), special)  # fmt: skip


# ------------------------------------------------------------------ the check


@dataclass(frozen=True, slots=True)
class Scope:
    """What belongs to the run: its devices (and the seq each started above), lots,
    topics, and when it started."""

    base: Mapping[str, int]
    lots: Sequence[str]
    street_lots: Sequence[str]
    topics: Sequence[str]
    started: datetime


@dataclass(frozen=True, slots=True)
class Payments:
    """What the drivers' side did: bills it paid (bill id -> provider), and stays of
    contactless drivers (their bills the platform deducts)."""

    paid: Mapping[str, str] = field(default_factory=dict)
    #: bills whose payment's outcome the drivers' side could not learn: paid or open
    uncertain: frozenset[str] = frozenset()
    contactless_plates: frozenset[str] = frozenset()


async def check(
    conn: asyncpg.Connection,
    redis: aioredis.Redis,
    *,
    truth: Truth,
    scope: Scope,
    stays: Sequence[Stay],
    payments: Payments,
    api: httpx.AsyncClient | None = None,
    city_token: str | None = None,
) -> CheckResult:
    result = CheckResult()
    devices = list(scope.base)
    bases = [scope.base[d] for d in devices]
    await _seqs(conn, truth, devices, bases, result)
    actual = await _sessions(conn, devices, bases, truth, result)
    plates = sorted({s.plate for s in truth.sessions})
    pricing = await load_pricing(conn, scope.lots, plates)
    expected_fee = _fees(truth, pricing, actual, result)
    await _bills(conn, actual, expected_fee, payments, stays, result)
    await _occupancy(conn, redis, truth, scope, result)
    if api is not None and city_token is not None:
        await _city_api(api, city_token, truth, scope, result)
    await _dead_letters(conn, truth, scope, result)
    await _ledger(conn, result)
    await _anomalies(conn, devices, bases, result)
    return result


async def _seqs(
    conn: asyncpg.Connection,
    truth: Truth,
    devices: list[str],
    bases: list[int],
    result: CheckResult,
) -> None:
    rows = await conn.fetch(
        """SELECT e.device_id, count(*) AS n, min(e.seq) AS lo, max(e.seq) AS hi
           FROM device_events e
           JOIN unnest($1::text[], $2::bigint[]) AS b(device_id, base) USING (device_id)
           WHERE e.seq > b.base GROUP BY e.device_id""",
        devices,
        bases,
    )
    stored = {r["device_id"]: (r["n"], r["lo"], r["hi"]) for r in rows}
    result.compared["device_events"] = sum(hi - lo + 1 for lo, hi in truth.seqs.values())
    for device, (lo, hi) in truth.seqs.items():
        got = stored.pop(device, (0, None, None))
        if got != (hi - lo + 1, lo, hi):
            result.add("device_events", device, {"count": hi - lo + 1, "seqs": [lo, hi]},
                       {"count": got[0], "seqs": [got[1], got[2]]})  # fmt: skip
    for device, got in stored.items():
        result.add("device_events_unexpected", device, None, {"count": got[0]})


_SESSION_COLUMNS = """id, lot_id, plate, status, entry_at, exit_at, entry_device_id, entry_seq,
    exit_device_id, exit_seq, fee_fen, tariff_id, pricing_reason, superseded_by, flags"""


async def _sessions(
    conn: asyncpg.Connection,
    devices: list[str],
    bases: list[int],
    truth: Truth,
    result: CheckResult,
) -> dict[tuple[str, int], asyncpg.Record]:
    rows = await conn.fetch(  # the column list is a constant of this module
        f"""WITH b AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS b(device_id, base))
            SELECT {_SESSION_COLUMNS} FROM sessions s JOIN b
              ON s.entry_device_id = b.device_id AND s.entry_seq > b.base
            UNION
            SELECT {_SESSION_COLUMNS} FROM sessions s JOIN b
              ON s.exit_device_id = b.device_id AND s.exit_seq > b.base
              AND s.entry_device_id IS NULL""",  # noqa: S608
        devices,
        bases,
    )
    actual: dict[tuple[str, int], asyncpg.Record] = {}
    for r in rows:
        key = (
            (r["entry_device_id"], r["entry_seq"])
            if r["entry_device_id"] is not None
            else (r["exit_device_id"], r["exit_seq"])
        )
        if key in actual:
            result.add("session_twice", f"{key[0]}:{key[1]}", 1, 2)
        actual[key] = r
    expected = {s.key: s for s in truth.sessions if not s.key[0].startswith("before:")}
    result.compared["sessions"] = len(expected)
    for key, s in expected.items():
        got = actual.get(key)
        what = f"{s.lot} {s.plate} {key[0]}:{key[1]}"
        if got is None:
            result.add("session_missing", what, _session_view(s), None)
            continue
        seen = {
            "lot": got["lot_id"], "plate": got["plate"], "status": got["status"],
            "entry": _text(_ms(got["entry_at"])), "exit": _text(_ms(got["exit_at"])),
        }  # fmt: skip
        want = {
            "lot": s.lot, "plate": s.plate, "status": s.status,
            "entry": _text(s.entry_ms), "exit": _text(s.exit_ms),
        }  # fmt: skip
        if s.status == "superseded":
            # a superseded stay keeps no exit
            seen.pop("exit")
            want.pop("exit")
        if seen != want:
            kind = "session_status" if seen["status"] != want["status"] else "session_fields"
            result.add(kind, what, want, seen)
    for key, got in actual.items():
        if key not in expected:
            result.add("session_unexpected", f"{got['lot_id']} {got['plate']} {key[0]}:{key[1]}",
                       None, got["status"])  # fmt: skip
    return actual


def _session_view(s: ExpectedSession) -> dict[str, object]:
    return {"lot": s.lot, "plate": s.plate, "status": s.status, "entry": _text(s.entry_ms),
            "exit": _text(s.exit_ms)}  # fmt: skip


def _fees(
    truth: Truth,
    pricing: Pricing,
    actual: Mapping[tuple[str, int], asyncpg.Record],
    result: CheckResult,
) -> dict[str, int]:
    """Expected fee per actual session id of the run's closed stays."""
    expected_fee: dict[str, int] = {}
    # stay of the day (new-energy daily grace): the plate's stays entered earlier that local day
    by_plate_day: dict[tuple[str, object], list[int]] = defaultdict(list)
    for s in truth.sessions:
        if s.entry_ms is not None:
            day = datetime.fromtimestamp(s.entry_ms / 1000, SHANGHAI).date()
            by_plate_day[(s.plate, day)].append(s.entry_ms)
    priced = 0
    total = 0
    for s in truth.sessions:
        if s.status != "closed" or s.key[0].startswith("before:"):
            continue
        got = actual.get(s.key)
        if got is None:
            continue
        if s.no_entry:
            fee = 0
        elif s.plate in pricing.special:
            continue
        else:
            assert s.entry_ms is not None
            day = datetime.fromtimestamp(s.entry_ms / 1000, SHANGHAI).date()
            index = 1 + sum(1 for e in by_plate_day[(s.plate, day)] if e < s.entry_ms)
            try:
                fee, tariff_id = pricing.fee(s, index)
            except (fees.FeeError, KeyError, IndexError) as error:
                result.add("fee_unpriceable", f"{s.lot} {s.plate}", None, str(error))
                continue
            if got["tariff_id"] is not None and got["tariff_id"] != tariff_id:
                result.add("fee_tariff", f"{s.lot} {s.plate}", tariff_id, got["tariff_id"])
        priced += 1
        total += fee
        expected_fee[got["id"]] = fee
        if got["fee_fen"] != fee:
            result.add("fee", f"{s.lot} {s.plate} {_text(s.entry_ms)} -> {_text(s.exit_ms)}",
                       fee, got["fee_fen"])  # fmt: skip
    result.compared["fees"] = priced
    result.figures["fees_fen"] = total
    return expected_fee


async def _bills(
    conn: asyncpg.Connection,
    actual: Mapping[tuple[str, int], asyncpg.Record],
    expected_fee: Mapping[str, int],
    payments: Payments,
    stays: Sequence[Stay],
    result: CheckResult,
) -> None:
    ids = [r["id"] for r in actual.values()]
    rows = await conn.fetch(
        """SELECT id, session_id, plate, amount_fen, status, provider, kind
           FROM bills WHERE session_id = ANY($1)""",
        ids,
    )
    bills: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "stay":
            bills[r["session_id"]].append(r)
    result.compared["bills"] = sum(1 for fee in expected_fee.values() if fee > 0)
    contactless = payments.contactless_plates
    counts: Counter[str] = Counter()
    for session_id, fee in expected_fee.items():
        found = bills.get(session_id, [])
        if fee == 0:
            if found:
                result.add("bill_unexpected", session_id, None, [r["id"] for r in found])
            continue
        if len(found) != 1:
            result.add("bill_missing" if not found else "bill_twice", session_id, 1, len(found))
            continue
        bill = found[0]
        if bill["amount_fen"] != fee:
            result.add("bill_amount", bill["id"], fee, bill["amount_fen"])
        paid = bill["id"] in payments.paid or bill["plate"] in contactless
        want = "paid" if paid else "open"
        counts[f"{bill['status']}"] += 1
        if bill["id"] in payments.uncertain and bill["status"] in ("paid", "open"):
            continue
        if bill["status"] != want:
            result.add("bill_status", f"{bill['id']} {bill['plate']}", want, bill["status"])
    result.figures["bills_by_status"] = dict(counts)
    ledger = await conn.fetch(
        """SELECT correlation_id, kind, count(*) AS n FROM ledger_transactions
           WHERE correlation_id = ANY($1) GROUP BY 1, 2""",
        [r["id"] for r in rows],
    )
    txns: dict[str, Counter[str]] = defaultdict(Counter)
    for r in ledger:
        txns[r["correlation_id"]][r["kind"]] += r["n"]
    for r in rows:
        if r["kind"] != "stay":
            continue
        posted = {"bill_opened": 1}
        if r["status"] == "paid":
            posted["bill_paid"] = 1
        if dict(txns.get(r["id"], {})) != posted:
            result.add("ledger_per_bill", r["id"], posted, dict(txns.get(r["id"], {})))


async def _occupancy(
    conn: asyncpg.Connection, redis: aioredis.Redis, truth: Truth, scope: Scope, result: CheckResult
) -> None:
    gated = [lot for lot in scope.lots if lot not in set(scope.street_lots)]
    rows = await conn.fetch(
        "SELECT lot_id, plate FROM sessions WHERE status = 'open' AND lot_id = ANY($1) "
        "AND plate IS NOT NULL",
        gated,
    )
    in_pg: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        in_pg[r["lot_id"]].add(r["plate"])
    result.compared["lots"] = len(scope.lots)
    open_total = 0
    for lot in gated:
        want = truth.open_at_end.get(lot, set())
        open_total += len(want)
        if in_pg.get(lot, set()) != want:
            result.add("occupancy_postgres", lot, len(want), len(in_pg.get(lot, set())))
        tag = keys.lot_tag(lot)
        held = [_str(k) for k in await redis.hkeys(f"{tag}:sess:{lot}")]
        hash_plates = {k for k in held if not k.startswith("acct:")}
        if hash_plates != want:
            result.add("occupancy_redis", lot, len(want), len(hash_plates))
    result.figures["open_sessions_at_end"] = open_total
    if scope.street_lots:
        rows = await conn.fetch(
            "SELECT lot_id, space_id, occupied FROM space_states WHERE lot_id = ANY($1)",
            list(scope.street_lots),
        )
        pg_spaces = {(r["lot_id"], r["space_id"]): r["occupied"] for r in rows}
        occupied = 0
        for key, taken in truth.spaces_at_end.items():
            occupied += taken
            if pg_spaces.get(key, False) != taken:
                result.add("space_postgres", f"{key[0]}/{key[1]}", taken, pg_spaces.get(key))
        for lot in scope.street_lots:
            raw = await redis.hgetall(f"{keys.lot_tag(lot)}:spaces:{lot}")
            live = {(lot, _str(k)): _str(v).startswith("1") for k, v in raw.items()}
            want_lot = {k: v for k, v in truth.spaces_at_end.items() if k[0] == lot}
            for key, taken in want_lot.items():
                if live.get(key, False) != taken:
                    result.add("space_redis", f"{key[0]}/{key[1]}", taken, live.get(key))
            count = await redis.hget(f"{keys.lot_tag(lot)}:lot:{lot}", "occupied")
            if int(count or 0) != sum(want_lot.values()):
                result.add("space_count_redis", lot, sum(want_lot.values()), int(count or 0))
        result.figures["occupied_spaces_at_end"] = occupied


async def _city_api(
    api: httpx.AsyncClient, token: str, truth: Truth, scope: Scope, result: CheckResult
) -> None:
    """The city's own answer for each lot (GET /v1/city/lots) against the truth."""
    answer = await api.get("/v1/city/lots", headers={"Authorization": f"Bearer {token}"})
    if answer.status_code != 200:
        result.add("api_city_lots", "GET /v1/city/lots", 200, answer.status_code)
        return
    lots = {item["lot_id"]: item for item in answer.json()["items"]}
    street = set(scope.street_lots)
    for lot in scope.lots:
        if lot in street:
            want = sum(v for k, v in truth.spaces_at_end.items() if k[0] == lot)
        else:
            want = len(truth.open_at_end.get(lot, set()))
        got = lots.get(lot, {}).get("occupied")
        if got != want:
            result.add("api_occupied", lot, want, got)


async def _dead_letters(
    conn: asyncpg.Connection, truth: Truth, scope: Scope, result: CheckResult
) -> None:
    rows = await conn.fetch(
        """SELECT id, device_id, seq, topic, reason, payload FROM dead_letters
           WHERE received_at >= $1 AND (device_id = ANY($2) OR topic = ANY($3))""",
        scope.started,
        list(scope.base),
        list(scope.topics),
    )
    wanted = {marker: (device, seq) for device, seq, marker in truth.dead_letters}
    result.compared["dead_letters"] = len(wanted)
    found: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for r in rows:
        payload = bytes(r["payload"])
        marker = next((m for m in wanted if m.encode() in payload), None)
        reasons[r["reason"].split(":")[0]] += 1
        if marker is None:
            result.add("dead_letter_unexpected", f"{r['topic']} #{r['id']}", None, r["reason"])
            continue
        found[marker] += 1
        _, seq = wanted[marker]
        if seq is not None and (r["device_id"], r["seq"]) != (wanted[marker][0], seq):
            result.add("dead_letter_identity", marker, [wanted[marker][0], seq],
                       [r["device_id"], r["seq"]])  # fmt: skip
    for marker in wanted:
        if found[marker] == 0:
            result.add("dead_letter_missing", marker, 1, 0)
    result.figures["dead_letters_by_reason"] = dict(reasons)


async def _ledger(conn: asyncpg.Connection, result: CheckResult) -> None:
    total = await conn.fetchval("SELECT coalesce(sum(amount_fen), 0) FROM ledger_postings")
    unbalanced = await conn.fetchval(
        """SELECT count(*) FROM (SELECT transaction_id FROM ledger_postings
           GROUP BY transaction_id HAVING sum(amount_fen) <> 0) t"""
    )
    receivables = await conn.fetchval(
        "SELECT coalesce(sum(amount_fen), 0) FROM ledger_postings "
        "WHERE account_code = 'receivables'"
    )
    owed = await conn.fetchval(
        """SELECT coalesce(sum(amount_fen), 0) FROM bills
           WHERE paid_at IS NULL AND status IN ('open', 'paying', 'disputed')"""
    )
    result.figures["trial_balance_fen"] = int(total)
    result.figures["receivables_fen"] = int(receivables)
    result.figures["open_bills_fen"] = int(owed)
    if total != 0:
        result.add("trial_balance", "sum of every posting", 0, int(total))
    if unbalanced:
        result.add("ledger_unbalanced", "transactions whose postings do not sum to 0", 0,
                   int(unbalanced))  # fmt: skip
    if receivables != owed:
        result.add("receivables", "ledger receivables vs bills still owed", int(owed),
                   int(receivables))  # fmt: skip


async def decisions(conn: asyncpg.Connection, base: Mapping[str, int]) -> dict[str, Any]:
    """Publish to decision: the gateway's receipt of each passage the run sent (its
    ``received_at``, by the platform's clock) less the copy's ``sent_at`` (the device's,
    the same machine's clock); the decision is taken in the batch that received it."""
    row = await conn.fetchrow(
        """SELECT count(*) AS n,
             percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS q,
             max(ms) AS top
           FROM (SELECT extract(epoch FROM e.received_at - e.sent_at) * 1000 AS ms
                 FROM device_events e
                 JOIN unnest($1::text[], $2::bigint[]) AS b(device_id, base) USING (device_id)
                 WHERE e.seq > b.base AND e.kind = 'passage' AND e.sent_at IS NOT NULL) t""",
        list(base),
        list(base.values()),
    )
    if row is None or not row["n"]:
        return {"count": 0}
    p50, p95, p99 = (round(float(v), 1) for v in row["q"])
    return {
        "count": row["n"],
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "max": round(float(row["top"]), 1),
    }


async def _anomalies(
    conn: asyncpg.Connection, devices: list[str], bases: list[int], result: CheckResult
) -> None:
    rows = await conn.fetch(
        """SELECT kind, count(*) AS n FROM anomalies WHERE device_id = ANY($1)
           AND created_at >= now() - interval '2 days' GROUP BY kind ORDER BY kind""",
        devices,
    )
    result.figures["anomalies_by_kind"] = {r["kind"]: r["n"] for r in rows}


def payer_plates(stays: Sequence[Stay], payer: Payer) -> frozenset[str]:
    return frozenset(s.plate for s in stays if s.payer is payer and s.plate is not None)
