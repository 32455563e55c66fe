"""SQLite access for the sandbox provider (stdlib ``sqlite3``), nothing else.

Why SQLite and not memory: a restart must keep orders, refunds, mandates and
undelivered notifications, because drills stop the sandbox on purpose (P7) and
``make run`` restarts crashed children. Why synchronous calls on the event
loop: every statement is a local single-row read or write that takes
microseconds, and one writer (one process, one loop) means no locking games;
a thread pool would only add interleavings.

Records are stored as msgspec JSON beside the few columns that are queried.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Final

import msgspec

from counterparts.payments.model import (
    Attempt,
    Controls,
    Delivery,
    DeliveryState,
    Mandate,
    Order,
    Parking,
    Refund,
)
from parking.clock import business_day

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS orders (
    out_trade_no TEXT PRIMARY KEY,
    transaction_id TEXT,
    success_day TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_success_day ON orders (success_day);
CREATE INDEX IF NOT EXISTS orders_transaction ON orders (transaction_id);
CREATE TABLE IF NOT EXISTS refunds (
    out_refund_no TEXT PRIMARY KEY,
    out_trade_no TEXT NOT NULL,
    created_day TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_order ON refunds (out_trade_no);
CREATE INDEX IF NOT EXISTS refunds_day ON refunds (created_day);
CREATE TABLE IF NOT EXISTS mandates (
    plate_number TEXT NOT NULL,
    plate_color TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (plate_number, plate_color)
);
CREATE TABLE IF NOT EXISTS parkings (
    id TEXT PRIMARY KEY,
    out_parking_no TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    out_trade_no TEXT NOT NULL,
    event_type TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    failures INTEGER NOT NULL,
    copies_left INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (out_trade_no);
CREATE TABLE IF NOT EXISTS attempts (
    notification_id TEXT NOT NULL,
    at REAL NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    duplicate INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_notification ON attempts (notification_id);
CREATE TABLE IF NOT EXISTS settlements (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    due_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""

_ORDER = msgspec.json.Decoder(Order)
_REFUND = msgspec.json.Decoder(Refund)
_MANDATE = msgspec.json.Decoder(Mandate)
_PARKING = msgspec.json.Decoder(Parking)
_CONTROLS = msgspec.json.Decoder(Controls)
_encode = msgspec.json.Encoder().encode

# Full literals (no string building) so every statement is visibly parameterised.
_DELIVERIES_DUE = (
    "SELECT id, seq, out_trade_no, event_type, notify_url, body, state, failures, copies_left,"
    " next_attempt_at, created_at FROM deliveries"
    " WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at, seq LIMIT ?"
)
_DELIVERIES_IN_STATE = (
    "SELECT id, seq, out_trade_no, event_type, notify_url, body, state, failures, copies_left,"
    " next_attempt_at, created_at FROM deliveries WHERE state = ? ORDER BY seq"
)
_DELIVERIES_ALL = (
    "SELECT id, seq, out_trade_no, event_type, notify_url, body, state, failures, copies_left,"
    " next_attempt_at, created_at FROM deliveries ORDER BY seq"
)
_DELIVERIES_OF_ORDER = (
    "SELECT id, seq, out_trade_no, event_type, notify_url, body, state, failures, copies_left,"
    " next_attempt_at, created_at FROM deliveries WHERE out_trade_no = ? ORDER BY seq"
)


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        seq=row["seq"],
        out_trade_no=row["out_trade_no"],
        event_type=row["event_type"],
        notify_url=row["notify_url"],
        body=bytes(row["body"]),
        state=DeliveryState(row["state"]),
        failures=row["failures"],
        copies_left=row["copies_left"],
        next_attempt_at=row["next_attempt_at"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )


class SandboxStore:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            # Created 0600 like the keys: it holds every payer's openid.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # A crash mid-send leaves deliveries in flight; they go out again
        # (WeChat re-sends too, so receivers must be idempotent anyway).
        self._db.execute(
            "UPDATE deliveries SET state = ? WHERE state = ?",
            (DeliveryState.PENDING.value, DeliveryState.IN_FLIGHT.value),
        )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes that must land together (an order and its notification)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ----------------------------------------------------------------- orders

    def order(self, out_trade_no: str) -> Order | None:
        row = self._db.execute(
            "SELECT data FROM orders WHERE out_trade_no = ?", (out_trade_no,)
        ).fetchone()
        return None if row is None else _ORDER.decode(row["data"])

    def order_by_transaction(self, transaction_id: str) -> Order | None:
        row = self._db.execute(
            "SELECT data FROM orders WHERE transaction_id = ?", (transaction_id,)
        ).fetchone()
        return None if row is None else _ORDER.decode(row["data"])

    def save_order(self, order: Order) -> None:
        day = None
        if order.success_time is not None and order.state.value in ("SUCCESS", "REFUND"):
            day = business_day(order.success_time)
        self._db.execute(
            "INSERT INTO orders (out_trade_no, transaction_id, success_day, data)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (out_trade_no) DO UPDATE SET"
            " transaction_id = excluded.transaction_id, success_day = excluded.success_day,"
            " data = excluded.data",
            (order.out_trade_no, order.transaction_id, day, _encode(order)),
        )

    def paid_on(self, day: date) -> list[Order]:
        rows = self._db.execute(
            "SELECT data FROM orders WHERE success_day = ? ORDER BY out_trade_no",
            (day.isoformat(),),
        ).fetchall()
        return [_ORDER.decode(row["data"]) for row in rows]

    # ----------------------------------------------------------------- refunds

    def refund(self, out_refund_no: str) -> Refund | None:
        row = self._db.execute(
            "SELECT data FROM refunds WHERE out_refund_no = ?", (out_refund_no,)
        ).fetchone()
        return None if row is None else _REFUND.decode(row["data"])

    def refunds_of(self, out_trade_no: str) -> list[Refund]:
        rows = self._db.execute(
            "SELECT data FROM refunds WHERE out_trade_no = ? ORDER BY out_refund_no",
            (out_trade_no,),
        ).fetchall()
        return [_REFUND.decode(row["data"]) for row in rows]

    def refunds_created_on(self, day: date) -> list[Refund]:
        rows = self._db.execute(
            "SELECT data FROM refunds WHERE created_day = ? ORDER BY out_refund_no",
            (day.isoformat(),),
        ).fetchall()
        return [_REFUND.decode(row["data"]) for row in rows]

    def save_refund(self, refund: Refund) -> None:
        self._db.execute(
            "INSERT INTO refunds (out_refund_no, out_trade_no, created_day, data)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (out_refund_no) DO UPDATE SET data = excluded.data",
            (
                refund.out_refund_no,
                refund.out_trade_no,
                business_day(refund.created_at),
                _encode(refund),
            ),
        )

    # ----------------------------------------------------------------- parking service

    def mandate(self, plate_number: str, plate_color: str) -> Mandate | None:
        row = self._db.execute(
            "SELECT data FROM mandates WHERE plate_number = ? AND plate_color = ?",
            (plate_number, plate_color),
        ).fetchone()
        return None if row is None else _MANDATE.decode(row["data"])

    def save_mandate(self, mandate: Mandate) -> None:
        self._db.execute(
            "INSERT INTO mandates (plate_number, plate_color, data) VALUES (?, ?, ?)"
            " ON CONFLICT (plate_number, plate_color) DO UPDATE SET data = excluded.data",
            (mandate.plate_number, mandate.plate_color, _encode(mandate)),
        )

    def parking(self, parking_id: str) -> Parking | None:
        row = self._db.execute("SELECT data FROM parkings WHERE id = ?", (parking_id,)).fetchone()
        return None if row is None else _PARKING.decode(row["data"])

    def parking_by_out_no(self, out_parking_no: str) -> Parking | None:
        row = self._db.execute(
            "SELECT data FROM parkings WHERE out_parking_no = ?", (out_parking_no,)
        ).fetchone()
        return None if row is None else _PARKING.decode(row["data"])

    def save_parking(self, parking: Parking) -> None:
        self._db.execute(
            "INSERT INTO parkings (id, out_parking_no, data) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (parking.id, parking.out_parking_no, _encode(parking)),
        )

    # ----------------------------------------------------------------- notifications

    def add_delivery(
        self,
        *,
        id: str,
        out_trade_no: str,
        event_type: str,
        notify_url: str,
        body: bytes,
        state: DeliveryState,
        copies: int,
        first_attempt_at: float,
        created_at: datetime,
    ) -> None:
        self._db.execute(
            "INSERT INTO deliveries (id, out_trade_no, event_type, notify_url, body, state,"
            " failures, copies_left, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
            (
                id,
                out_trade_no,
                event_type,
                notify_url,
                body,
                state.value,
                copies,
                first_attempt_at,
                created_at.isoformat(),
            ),
        )

    def claim_due(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries due by ``now``, marked in flight so no tick sends them twice."""
        with self.transaction():
            rows = self._db.execute(
                _DELIVERIES_DUE,
                (DeliveryState.PENDING.value, now, limit),
            ).fetchall()
            self._db.executemany(
                "UPDATE deliveries SET state = ? WHERE seq = ?",
                [(DeliveryState.IN_FLIGHT.value, row["seq"]) for row in rows],
            )
        return [_delivery(row) for row in rows]

    def update_delivery(
        self,
        seq: int,
        *,
        state: DeliveryState,
        failures: int,
        copies_left: int,
        next_attempt_at: float,
    ) -> None:
        self._db.execute(
            "UPDATE deliveries SET state = ?, failures = ?, copies_left = ?, next_attempt_at = ?"
            " WHERE seq = ?",
            (state.value, failures, copies_left, next_attempt_at, seq),
        )

    def held(self) -> list[Delivery]:
        rows = self._db.execute(
            _DELIVERIES_IN_STATE,
            (DeliveryState.HELD.value,),
        ).fetchall()
        return [_delivery(row) for row in rows]

    def deliveries(self, out_trade_no: str | None = None) -> list[Delivery]:
        if out_trade_no is None:
            rows = self._db.execute(_DELIVERIES_ALL).fetchall()
        else:
            rows = self._db.execute(
                _DELIVERIES_OF_ORDER,
                (out_trade_no,),
            ).fetchall()
        return [_delivery(row) for row in rows]

    def add_attempt(self, attempt: Attempt) -> None:
        self._db.execute(
            "INSERT INTO attempts (notification_id, at, status, error, duplicate)"
            " VALUES (?, ?, ?, ?, ?)",
            (attempt.notification_id, attempt.at, attempt.status, attempt.error, attempt.duplicate),
        )

    def attempts(self, notification_id: str) -> list[Attempt]:
        rows = self._db.execute(
            "SELECT notification_id, at, status, error, duplicate FROM attempts"
            " WHERE notification_id = ? ORDER BY at",
            (notification_id,),
        ).fetchall()
        return [
            Attempt(
                notification_id=row["notification_id"],
                at=row["at"],
                status=row["status"],
                error=row["error"],
                duplicate=bool(row["duplicate"]),
            )
            for row in rows
        ]

    # ----------------------------------------------------------------- settlements

    def schedule(self, key: str, kind: str, due_at: float) -> None:
        self._db.execute(
            "INSERT INTO settlements (key, kind, due_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET due_at = excluded.due_at",
            (key, kind, due_at),
        )

    def take_due_settlements(self, now: float) -> list[tuple[str, str]]:
        with self.transaction():
            rows = self._db.execute(
                "SELECT key, kind FROM settlements WHERE due_at <= ? ORDER BY due_at", (now,)
            ).fetchall()
            self._db.executemany(
                "DELETE FROM settlements WHERE key = ?", [(row["key"],) for row in rows]
            )
        return [(row["key"], row["kind"]) for row in rows]

    # ----------------------------------------------------------------- meta

    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row["value"])

    def _set_meta(self, key: str, value: bytes) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def controls(self) -> Controls:
        raw = self._meta("controls")
        return Controls() if raw is None else _CONTROLS.decode(raw)

    def save_controls(self, controls: Controls) -> None:
        self._set_meta("controls", _encode(controls))

    def clock_offset(self) -> float:
        raw = self._meta("clock_offset")
        return 0.0 if raw is None else float(raw.decode())

    def save_clock_offset(self, seconds: float) -> None:
        self._set_meta("clock_offset", repr(seconds).encode())

    def prepay(self, prepay_id: str) -> str | None:
        """The ``out_trade_no`` of the H5 order a cashier page's ``prepay_id`` names."""
        raw = self._meta(f"prepay:{prepay_id}")
        return None if raw is None else raw.decode()

    def save_prepay(self, prepay_id: str, out_trade_no: str) -> None:
        self._set_meta(f"prepay:{prepay_id}", out_trade_no.encode())

    def save_oauth_code(self, code: str, openid: str, *, expires_at: float) -> None:
        self._set_meta(f"oauth:{code}", f"{expires_at}|{openid}".encode())

    def take_oauth_code(self, code: str, *, now: float) -> str | None:
        """The openid a 网页授权 ``code`` stands for: once, within its five minutes."""
        raw = self._meta(f"oauth:{code}")
        if raw is None:
            return None
        self._db.execute("DELETE FROM meta WHERE key = ?", (f"oauth:{code}",))
        expires_at, openid = raw.decode().split("|", 1)
        return openid if now < float(expires_at) else None
