"""Retention (issue 19, point 2) on a real database: each kind of data past its time is
removed (passage and sensor partitions, dead letters) or pseudonymised (the plate of
ended sessions and settled bills), exactly that and nothing under an open dispute, and
every run is recorded. The time is the job's injected ``now``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from parking import audit
from parking.bills import service as bills
from parking.config import Settings
from parking.ids import new_id
from parking.payments import disputes
from parking.retention import logic, service
from parking.retention.cli import policy_of
from parking.retention.model import Policy
from parking.seed.city import DEMO_LOT

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
KEY = b"k" * 32
OLD, RECENT, OWED = "赣B00R01", "赣B00R02", "赣B00R03"


async def _passage(
    conn: asyncpg.Connection, seq: int, at: datetime, session: str, image: str | None = None
) -> None:
    await conn.execute(
        """INSERT INTO passages (device_id, seq, received_at, observed_at, event_at, lot_id,
               lane_id, direction, plate, outcome, session_id, image_ref)
           VALUES ('ret-gate', $1, $2, $2, $2, $3, 'in1', 'in', $4, 'opened', $5, $6)""",
        seq, at, DEMO_LOT, OLD, session, image,
    )  # fmt: skip


async def _reading(conn: asyncpg.Connection, seq: int, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO space_events (device_id, seq, received_at, observed_at, event_at,
               lot_id, space_id, occupied)
           VALUES ('ret-sensor', $1, $2, $2, $2, $3, 'P0001', true)""",
        seq, at, DEMO_LOT,
    )  # fmt: skip


async def _dead(conn: asyncpg.Connection, source: str, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO dead_letters (source, received_at, topic, reason, payload)
           VALUES ($1, $2, 'parking/v1/x', 'malformed', '\\x00')""",
        source, at,
    )  # fmt: skip


async def _stay(
    conn: asyncpg.Connection,
    sid: str,
    plate: str,
    ended: datetime,
    amount: int,
    account: str | None = None,
) -> str:
    await conn.execute("SELECT ensure_session_partitions($1::text[])", [sid])
    await conn.execute(
        """INSERT INTO sessions (id, lot_id, plate, plate_raw, status, entry_at, exit_at,
               vehicle_class, fee_fen) VALUES ($1, $2, $3, $3, 'closed', $4, $5, 1, $6)""",
        sid, DEMO_LOT, plate, ended - timedelta(hours=1), ended, amount,
    )  # fmt: skip
    async with conn.transaction():
        bill = await bills.open_bill(
            conn, session_id=sid, lot_id=DEMO_LOT, plate=plate, account_id=account,
            amount_fen=amount, tariff_id="suizhou-zone1", tariff_version=1, quote=b"{}",
            closed_at=ended, now=ended,
        )  # fmt: skip
    assert bill is not None
    return bill.id


async def _tables(conn: asyncpg.Connection) -> set[str]:
    """The passages partitions of 2026 there are."""
    names = await conn.fetchval(
        "SELECT array_agg(relname) FROM pg_class "
        "WHERE relkind = 'r' AND relname LIKE 'passages_2026_%'"
    )
    return set(names)


def test_the_policy_is_configuration_with_defaults() -> None:
    assert policy_of("") == Policy()
    assert policy_of("passages_months=12, plate_months=60") == Policy(
        passages_months=12, plate_months=60
    )
    for bad in ("passages_months", "x=1", "passages_months=0", "plate_months=-1"):
        with pytest.raises(Exception, match="PARKING_RETENTION"):
            policy_of(bad)


def owner_url(settings: Settings, name: str) -> str:
    """Database ``name`` as the schema owner (as tests/conftest.py's harness connects)."""
    return urlunsplit(urlsplit(settings.owner_database_url)._replace(path=f"/{name}"))


@pytest.fixture
async def owner(settings: Settings, city_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The seeded city's database as its schema owner, as the job connects (it drops
    partitions)."""
    conn = await asyncpg.connect(owner_url(settings, urlsplit(city_db_url).path.lstrip("/")))
    yield conn
    await conn.close()


async def test_retention_removes_exactly_what_is_past_its_time(
    owner: asyncpg.Connection,
) -> None:
    conn = owner
    # passages: 6 months (cutoff 2026-06-04): March goes, April stays (it holds a passage
    # of a disputed stay), August stays
    driver = new_id("acc", NOW)
    await conn.execute(
        "INSERT INTO accounts (id, phone, created_at) VALUES ($1, '+8613800000777', $2)",
        driver,
        NOW - timedelta(days=400),
    )
    disputed_bill = await _stay(
        conn, "s-ret-disputed", OLD, datetime(2026, 4, 2, tzinfo=UTC), 500, account=driver
    )
    await _passage(conn, 1, datetime(2026, 3, 10, tzinfo=UTC), "s-ret-a")
    await _passage(conn, 2, datetime(2026, 3, 11, tzinfo=UTC), "s-ret-a")
    picture = f"cam/{DEMO_LOT}/20260402/{'a' * 64}.jpg"
    await _passage(conn, 3, datetime(2026, 4, 2, tzinfo=UTC), "s-ret-disputed", picture)
    await _passage(conn, 4, datetime(2026, 8, 1, tzinfo=UTC), "s-ret-b")
    async with conn.transaction():
        await disputes.open_dispute(
            conn, disputed_bill, account_id=driver, reason="没停这么久",
            now=datetime(2026, 11, 30, tzinfo=UTC),
        )  # fmt: skip
    # sensor readings: 3 months (cutoff 2026-09-04): August goes, October stays
    await _reading(conn, 1, datetime(2026, 8, 20, tzinfo=UTC))
    await _reading(conn, 2, datetime(2026, 10, 20, tzinfo=UTC))
    # dead letters: 90 days
    await _dead(conn, "s/1", NOW - timedelta(days=91))
    await _dead(conn, "s/2", NOW - timedelta(days=89))
    # plates: 36 months (cutoff 2023-12-04): the old stay's plate and its settled bill
    # become a pseudonym; a recent stay and a bill still owed keep theirs
    old_bill = await _stay(conn, "s-ret-old", OLD, datetime(2023, 6, 1, tzinfo=UTC), 300)
    async with conn.transaction():
        await bills.write_off(
            conn, old_bill, actor="finance", remark="uncollectable",
            now=datetime(2023, 7, 1, tzinfo=UTC),
        )  # fmt: skip
    await _stay(conn, "s-ret-recent", OLD, datetime(2026, 2, 1, tzinfo=UTC), 300)
    owed_bill = await _stay(conn, "s-ret-owed", OWED, datetime(2023, 5, 1, tzinfo=UTC), 700)
    partitions_before = await _tables(conn)

    # the camera adapter keeps the disputed stay's picture past its 180 days
    assert await service.evidence_pictures(conn) == frozenset({picture})
    done = {d.kind.value: d for d in await service.apply(conn, Policy(), key=KEY, now=NOW)}

    assert done["passages"].detail == {
        "passages_2026_01": 0, "passages_2026_02": 0, "passages_2026_03": 2,
        "passages_2026_05": 0, "partitions_kept_for_disputes": 1,
    }  # fmt: skip
    assert done["passages"].removed == 2
    partitions_after = await _tables(conn)
    assert partitions_before - partitions_after == {
        "passages_2026_01", "passages_2026_02", "passages_2026_03", "passages_2026_05",
    }  # fmt: skip
    assert await conn.fetchval("SELECT count(*) FROM passages") == 2
    assert done["sensor_readings"].removed == 1
    assert await conn.fetchval("SELECT count(*) FROM space_events") == 1
    assert done["dead_letters"].removed == 1
    assert await conn.fetchval("SELECT source FROM dead_letters") == "s/2"
    pseudonym = logic.pseudonym(KEY, OLD)
    assert done["plates"].detail == {"plates": 1, "sessions": 1, "bills": 1}
    assert await conn.fetchval("SELECT plate FROM sessions WHERE id = 's-ret-old'") == pseudonym
    assert await conn.fetchval("SELECT plate FROM bills WHERE id = $1", old_bill) == pseudonym
    assert await conn.fetchval("SELECT plate FROM sessions WHERE id = 's-ret-recent'") == OLD
    assert await conn.fetchval("SELECT plate FROM bills WHERE id = $1", owed_bill) == OWED
    assert await conn.fetchval("SELECT plate FROM sessions WHERE id = 's-ret-owed'") == OWED
    # every run recorded; a second run finds nothing more
    kinds = await conn.fetch("SELECT kind, removed FROM retention_runs ORDER BY id")
    assert [(r["kind"], r["removed"]) for r in kinds] == [
        ("passages", 2), ("sensor_readings", 1), ("dead_letters", 1), ("plates", 2),
    ]  # fmt: skip
    again = await service.apply(conn, Policy(), key=KEY, now=NOW)
    assert [d.removed for d in again] == [0, 0, 0, 0]
    with pytest.raises(asyncpg.PostgresError):
        await conn.execute("DELETE FROM retention_runs")


def test_the_job_runs_from_the_command_line(
    settings: Settings, city_db_url: str, tmp_path: Path
) -> None:
    as_owner = owner_url(settings, urlsplit(city_db_url).path.lstrip("/"))
    env = {
        **os.environ,
        "PARKING_OWNER_DATABASE_URL": as_owner,
        "PARKING_ARCHIVE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "parking", "retention", "apply", "--once"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    kinds = [d["kind"] for d in json.loads(done.stdout)]
    assert kinds == ["passages", "sensor_readings", "dead_letters", "plates", "archive"]
    missing = subprocess.run(
        [sys.executable, "-m", "parking", "retention", "restore", "passages_2025_01"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode != 0
    assert "no archive of passages_2025_01" in missing.stderr


async def test_months_past_the_databases_are_archived_restored_and_expire_with_their_kind(
    owner: asyncpg.Connection, tmp_path: Path
) -> None:
    conn = owner
    archive = tmp_path / "archive"
    # NOW is 2026-12-04 and the database keeps 2 months: up to September leaves it
    await _passage(conn, 11, datetime(2026, 8, 10, tzinfo=UTC), "s-arc-a")
    await _passage(conn, 12, datetime(2026, 9, 10, tzinfo=UTC), "s-arc-b")
    await _passage(conn, 13, datetime(2026, 11, 10, tzinfo=UTC), "s-arc-c")
    await _reading(conn, 11, datetime(2026, 9, 20, tzinfo=UTC))
    done = {
        d.kind.value: d
        for d in await service.apply(conn, Policy(), key=KEY, now=NOW, archive_dir=archive)
    }
    assert done["archive"].detail == {
        "passages_2026_08": 1, "passages_2026_09": 1, "space_events_2026_09": 1,
    }  # fmt: skip
    assert done["archive"].removed == 3
    assert await conn.fetchval("SELECT count(*) FROM passages") == 1
    assert await conn.fetchval("SELECT count(*) FROM space_events") == 0
    files = sorted(p.name for p in archive.iterdir())
    assert files == [
        "passages_2026_08.csv.gz", "passages_2026_09.csv.gz", "space_events_2026_09.csv.gz",
    ]  # fmt: skip
    # one month back, as it was, in its own partition
    assert await service.restore(conn, archive, "passages_2026_09") == 1
    row = await conn.fetchrow(
        "SELECT tableoid::regclass::text AS home, plate, session_id, received_at "
        "FROM passages WHERE seq = 12"
    )
    assert row is not None
    assert (row["home"], row["plate"], row["session_id"]) == ("passages_2026_09", OLD, "s-arc-b")
    assert row["received_at"] == datetime(2026, 9, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a monthly partition"):
        await service.restore(conn, archive, "tariffs_2026_09")
    # a month later: sensor readings' 3 months are over for September, passages' 6 not
    later = datetime(2027, 1, 5, tzinfo=UTC)
    again = {
        d.kind.value: d
        for d in await service.apply(conn, Policy(), key=KEY, now=later, archive_dir=archive)
    }
    assert again["archive"].detail["space_events_2026_09 deleted"] == 1
    assert again["archive"].detail["passages_2026_09"] == 1  # the restored month, again
    assert sorted(p.name for p in archive.iterdir()) == [
        "passages_2026_08.csv.gz", "passages_2026_09.csv.gz",
    ]  # fmt: skip
    kinds = await conn.fetch("SELECT kind FROM retention_runs WHERE kind = 'archive'")
    assert len(kinds) == 2


async def _session(
    conn: asyncpg.Connection, at: datetime, plate: str, status: str = "closed"
) -> str:
    """A stay entered at ``at`` whose id names its month (like every session the platform
    makes); closed ones free, so nothing is owed."""
    sid = new_id("s", at)
    await conn.execute("SELECT ensure_session_partitions($1::text[])", [sid])
    await conn.execute(
        """INSERT INTO sessions (id, lot_id, plate, plate_raw, status, entry_at, exit_at,
               vehicle_class, fee_fen) VALUES ($1, $2, $3, $3, $4, $5, $6, 1, $7)""",
        sid, DEMO_LOT, plate, status, at, None if status == "open" else at + timedelta(hours=1),
        None if status == "open" else 0,
    )  # fmt: skip
    return sid


async def test_sessions_and_audit_months_leave_the_database_finished_and_are_kept(
    owner: asyncpg.Connection, tmp_path: Path
) -> None:
    conn, archive = owner, tmp_path / "archive"
    now = datetime(2030, 6, 15, tzinfo=UTC)
    # sessions stay while their plates are readable (36 months: cutoff 2027-06-15)
    done_stay = await _session(conn, datetime(2026, 9, 10, tzinfo=UTC), OLD)
    await _session(conn, datetime(2026, 10, 10, tzinfo=UTC), RECENT, status="open")
    await _stay(conn, new_id("s", datetime(2026, 11, 10, tzinfo=UTC)), OWED,
                datetime(2026, 11, 10, 2, tzinfo=UTC), 700)  # fmt: skip
    await _session(conn, datetime(2030, 5, 10, tzinfo=UTC), OLD)
    # the audit log keeps 12 months (cutoff 2029-06-15); 2030's month made on demand
    for at, action in ((datetime(2026, 9, 1, tzinfo=UTC), "old"), (now, "new")):
        await audit.record(conn, at=at, actor="op-1", role="operator", action=action,
                           target="lot:x", details={})  # fmt: skip

    runs = await service.apply(conn, Policy(), key=KEY, now=now, archive_dir=archive)
    moved = {d.kind.value: d for d in runs}["archive"].detail
    assert moved["sessions_2026_09"] == 1
    assert moved["audit_log_2026_09"] == 1
    # the open stay's month and the owed stay's month stay whole
    assert moved["sessions_months_kept_unfinished"] == 2
    homes = await conn.fetch("SELECT tableoid::regclass::text AS home FROM sessions ORDER BY id")
    assert [r["home"] for r in homes] == ["sessions_2026_10", "sessions_2026_11",
                                          "sessions_2030_05"]  # fmt: skip
    assert await conn.fetchval("SELECT action FROM audit_log") == "new"
    assert (
        await conn.fetchval("SELECT tableoid::regclass::text FROM audit_log") == "audit_log_2030_06"
    )
    # back as it was: the plate pseudonymised before the month left
    assert await service.restore(conn, archive, "sessions_2026_09") == 1
    row = await conn.fetchrow(
        "SELECT tableoid::regclass::text AS home, plate, status FROM sessions WHERE id = $1",
        done_stay,
    )
    assert row is not None
    assert tuple(row) == ("sessions_2026_09", logic.pseudonym(KEY, OLD), "closed")
    assert await service.restore(conn, archive, "audit_log_2026_09") == 1
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'old' AND at = $1",
            datetime(2026, 9, 1, tzinfo=UTC),
        )
        == 1
    )
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await conn.execute("UPDATE audit_log SET actor = 'someone else'")
    # fifteen years on: passages' archives are deleted at their retention, these are kept
    later = datetime(2045, 1, 1, tzinfo=UTC)
    await service.apply(conn, Policy(), key=KEY, now=later, archive_dir=archive)
    kept = {p.name for p in archive.iterdir()}
    assert {"sessions_2026_09.csv.gz", "audit_log_2026_09.csv.gz"} <= kept
    assert not {name for name in kept if name.startswith(("passages_", "space_events_"))}
