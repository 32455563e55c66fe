"""A device's persistent outbox: its seq counter, unconfirmed events and handled commands.

contracts/mqtt.md, "Delivery": a device keeps every event until the platform's
watermark covers it, and its ``seq`` survives reboots and is never reused. One
SQLite file holds the outboxes of every device a simulator process drives (and
of other processes: SQLite locks the file, each device's rows are its own), so
a restarted simulator is a rebooted fleet that resumes where it stopped.

All methods are synchronous and meant for one thread (the simulator's event
loop); WAL with ``synchronous=NORMAL`` makes an append ~20 us, survives a
killed process, and would lose at most the last transactions on a power cut
of the simulator's machine, which is not a fault we model.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS device_seq (
    device_id TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    watermark INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    device_id TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    topic     TEXT NOT NULL,
    payload   BLOB NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commands (
    device_id  TEXT NOT NULL,
    command_id TEXT NOT NULL,
    result     TEXT NOT NULL,
    handled    INTEGER NOT NULL,
    PRIMARY KEY (device_id, command_id)
) WITHOUT ROWID;
"""

#: Command ids remembered per device. The platform re-sends a command only
#: until it expires (minutes), so the last thousand are plenty.
COMMANDS_KEPT: Final = 1000


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    device_id: str
    seq: int
    topic: str
    payload: bytes


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self._handled_counter = 0

    def close(self) -> None:
        self._db.close()

    def append(self, device_id: str, topic: str, build: Callable[[int], bytes]) -> OutboxEvent:
        """Allocate the device's next seq, build the payload with it and keep it, atomically."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                """INSERT INTO device_seq (device_id, last_seq) VALUES (?, 1)
                   ON CONFLICT (device_id) DO UPDATE SET last_seq = last_seq + 1
                   RETURNING last_seq""",
                (device_id,),
            ).fetchone()
            seq = int(row[0])
            payload = build(seq)
            self._db.execute(
                "INSERT INTO events (device_id, seq, topic, payload) VALUES (?, ?, ?, ?)",
                (device_id, seq, topic, payload),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return OutboxEvent(device_id, seq, topic, payload)

    def pending(self, device_id: str) -> list[OutboxEvent]:
        """Events not yet covered by the watermark, in seq order."""
        rows = self._db.execute(
            "SELECT seq, topic, payload FROM events WHERE device_id = ? ORDER BY seq",
            (device_id,),
        ).fetchall()
        return [OutboxEvent(device_id, int(s), str(t), bytes(p)) for s, t, p in rows]

    def last_seq(self, device_id: str) -> int:
        row = self._db.execute(
            "SELECT last_seq FROM device_seq WHERE device_id = ?", (device_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def watermark(self, device_id: str) -> int:
        row = self._db.execute(
            "SELECT watermark FROM device_seq WHERE device_id = ?", (device_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def cover(self, device_id: str, watermark: int) -> int:
        """Drop events up to ``watermark``; returns how many were dropped.

        A watermark above the last seq this outbox handed out means the device
        lost its outbox (a replaced controller) while the platform kept its
        events: the counter jumps past it, so no seq is ever used twice.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            dropped = self._db.execute(
                "DELETE FROM events WHERE device_id = ? AND seq <= ?", (device_id, watermark)
            ).rowcount
            self._db.execute(
                """INSERT INTO device_seq (device_id, last_seq, watermark) VALUES (?, ?, ?)
                   ON CONFLICT (device_id) DO UPDATE
                   SET last_seq = max(last_seq, excluded.last_seq),
                       watermark = max(watermark, excluded.watermark)""",
                (device_id, watermark, watermark),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return int(dropped)

    def size(self, device_id: str | None = None) -> int:
        if device_id is None:
            row = self._db.execute("SELECT count(*) FROM events").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM events WHERE device_id = ?", (device_id,)
            ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------- commands

    def command_result(self, device_id: str, command_id: str) -> str | None:
        """The result a command was answered with, or None when it is new to this device."""
        row = self._db.execute(
            "SELECT result FROM commands WHERE device_id = ? AND command_id = ?",
            (device_id, command_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def record_command(self, device_id: str, command_id: str, result: str) -> None:
        self._handled_counter += 1
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                """INSERT INTO commands (device_id, command_id, result, handled)
                   VALUES (?, ?, ?, (SELECT coalesce(max(handled), 0) + 1 FROM commands
                                     WHERE device_id = ?))
                   ON CONFLICT DO NOTHING""",
                (device_id, command_id, result, device_id),
            )
            if self._handled_counter % 100 == 0:
                self._db.execute(
                    """DELETE FROM commands WHERE device_id = ? AND handled <=
                       (SELECT max(handled) FROM commands WHERE device_id = ?) - ?""",
                    (device_id, device_id, COMMANDS_KEPT),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
