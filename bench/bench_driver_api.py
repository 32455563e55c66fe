"""Driver API throughput under wrk, one granian worker, as ratios to a hello-world route.

Like bench_api.py (same server, same hello-world baseline, same run):

- current session with fee (``GET /v1/me/sessions/current``): auth, the
  driver's verified plates, the open session from the Redis core, a live quote.
  The driver's binding is verified (a claim approved) and older than the stay,
  as plate trust requires for a driver to see it; the bench checks the answer
  holds that stay with its fee before measuring, never an empty answer;
- scan-in (``POST /v1/scans/entry``): auth, QR verification, the lane from
  PostgreSQL, the account's session key in Redis, a session row written to
  PostgreSQL on the first scan of each account, and the lane's ``open`` command
  published over MQTT. wrk rotates over many drivers so most requests are
  first scans (the write path), not idempotent repeats. The scanners are
  real accounts (sessions reference them), and the demo lot lets cars in when
  full, so scans are not refused with a 409 once its 200 spaces are taken.

Goals (issue 6): reads >= 0.5x hello-world, scan-in >= 0.25x.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from parking import config
from parking.accounts import claims as plate_claims
from parking.accounts import service as accounts
from parking.accounts.model import ClaimDecision
from parking.auth import tokens
from parking.auth.model import Principal, Role
from parking.ids import new_id
from parking.occupancy import rebuild
from parking.payments import contactless
from parking.qr import keys as qr_keys
from parking.qr import logic as qr_logic
from parking.qr.model import QrKind
from parking.seed.city import DEMO_COMPANY
from parking.sessions import service as sessions
from parking.sessions.model import SessionChange, SessionStatus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import (
    CONNECTIONS,
    DURATION_S,
    PORT,
    Result,
    ensure_wrk,
    prepare,
    record,
    run_wrk,
    serve_app,
)
from results import Baseline, Results, sized

HERE = Path(__file__).resolve().parent
DEMO = "GZ-DEMO-01"
READ_PLATE = "赣B0BEN1"
#: Drivers scanning in; more than one run's requests at the expected rate, so
#: nearly every scan is a first one.
SCANNERS = int(os.environ.get("BENCH_SCANNERS", sized("20000", "200")))
GOALS = {"current session with fee": 0.5, "scan-in (unplated entry)": 0.25}
#: the operator approving the reader's plate claim (no token: the service is called directly)
CLAIM_REVIEWER = Principal(
    subject="bench-ops",
    role=Role.OPERATOR,
    token_id="bench",  # noqa: S106 (a marker, not a secret)
    company=DEMO_COMPANY,
)

ROTATING_LUA = """
tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
counter = 0
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local token = tokens[(counter %% #tokens) + 1]
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. token}, nil)
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH %%d %%d %%f %%d\\n", summary.requests, summary.duration,
    latency:percentile(99), summary.errors.status + summary.errors.connect +
    summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


async def _account(conn: asyncpg.Connection, phone: str, now: datetime) -> str:
    found = await conn.fetchval("SELECT id FROM accounts WHERE phone = $1", phone)
    if found is not None:
        return str(found)
    account = new_id("acc", now)
    await conn.execute(
        "INSERT INTO accounts (id, phone, created_at) VALUES ($1, $2, $3)", account, phone, now
    )
    return account


async def set_full_policy(conn: asyncpg.Connection, policy: str) -> None:
    await conn.execute("UPDATE lots SET full_policy = $2 WHERE id = $1", DEMO, policy)


async def restore_full_policy(settings: config.Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await set_full_policy(conn, "hold")
    finally:
        await conn.close()


async def verified_binding(
    conn: asyncpg.Connection, account: str, *, bound_at: datetime, now: datetime
) -> None:
    """READ_PLATE bound to ``account`` at ``bound_at`` at the latest, and verified, the way
    a driver gets there: bound, then a claim with the 行驶证 photo that an operator
    approves (caller's transaction). A verified binding from an earlier run is kept."""
    # Plate trust: a driver sees a stay only through a verified binding made no
    # later than its entry. Any other binding of the plate (another account's, or
    # one of ours left unverified or bound too late by a run before plate trust)
    # is released so the plate can be bound again in time.
    await conn.execute(
        "UPDATE vehicles SET released_at = $2, released_reason = 'unbound' "
        "WHERE plate = $1 AND released_at IS NULL "
        "AND NOT (account_id = $3 AND verified_at IS NOT NULL AND bound_at <= $4)",
        READ_PLATE,
        now,
        account,
        bound_at,
    )
    if await accounts.my_plates(conn, account, plate=READ_PLATE):
        return
    await accounts.bind_vehicle(
        conn,
        account_id=account,
        plate_raw=READ_PLATE,
        vehicle_class=None,
        reason=None,
        now=bound_at,
    )
    claim = await plate_claims.claim_plate(
        conn,
        account_id=account,
        plate_raw=READ_PLATE,
        evidence="行驶证 360702000001",
        photo_ref="upload/bench-xsz.jpg",
        now=bound_at,
    )
    await plate_claims.decide_claim(
        conn,
        claim_id=claim.id,
        decision=ClaimDecision.APPROVE,
        note=None,
        by=CLAIM_REVIEWER,
        now=now,
        revoke_mandates=contactless.revoke_mandates_of,
    )


async def setup(settings: config.Settings) -> tuple[str, str]:
    """A driver whose verified plate is parked at the demo lot (in PostgreSQL and the
    Redis core), bound an hour before the car came in. Returns the driver's token and
    the stay's session id."""
    now = datetime.now(UTC)
    entry = now - timedelta(hours=2)
    conn = await asyncpg.connect(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        account = await _account(conn, "+8619900000001", now)
        session_id = new_id("s", now)
        async with conn.transaction():
            await verified_binding(conn, account, bound_at=entry - timedelta(hours=1), now=now)
            # A fresh stay every run, so every run quotes the same two hours; the
            # entry supersedes the stay an earlier run left open.
            await sessions.record(
                conn,
                [
                    SessionChange(
                        id=session_id,
                        lot_id=DEMO,
                        status=SessionStatus.OPEN,
                        plate=READ_PLATE,
                        entry_at=entry,
                    )
                ],
            )
        # The demo lot has 200 spaces and a run scans in thousands of cars: for
        # the run it lets cars in when full (a lot policy some operators choose),
        # so every scan takes the write path rather than a 409 "lot full".
        await set_full_policy(conn, "open")
        # Scanners left over from an earlier run start afresh (voided first, so
        # the rebuild does not load them into the core as cars still inside).
        await conn.execute(
            "UPDATE sessions SET status = 'voided' WHERE status = 'open' AND plate IS NULL "
            "AND entry_device_id LIKE 'account:%'"
        )
        # The open session must be in the core: rebuild from PostgreSQL.
        await rebuild.rebuild(conn, redis, now=now, force=True)
    finally:
        await redis.aclose()
        await conn.close()
    token = tokens.issue(
        settings.jwt_key, subject=account, role=Role.DRIVER, now=now, ttl=timedelta(hours=1)
    )
    return token, session_id


async def scanner_accounts(settings: config.Settings) -> list[str]:
    """SCANNERS driver accounts (sessions reference their account), the same ones every run."""
    now = datetime.now(UTC)
    phones = [f"+86197{n:08d}" for n in range(SCANNERS)]
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO accounts (id, phone, created_at) "
            "SELECT id, phone, $3 FROM unnest($1::text[], $2::text[]) AS t(id, phone) "
            "ON CONFLICT (phone) DO NOTHING",
            [new_id("acc", now) for _ in phones],
            phones,
            now,
        )
        rows = await conn.fetch("SELECT id FROM accounts WHERE phone = ANY($1::text[])", phones)
    finally:
        await conn.close()
    return [str(r["id"]) for r in rows]


def scanner_tokens(settings: config.Settings) -> Path:
    now = datetime.now(UTC)
    path = Path(tempfile.mkstemp(suffix=".tokens")[1])
    lines = [
        tokens.issue(
            settings.jwt_key,
            subject=account,
            role=Role.DRIVER,
            now=now,
            ttl=timedelta(hours=1),
        )
        for account in asyncio.run(scanner_accounts(settings))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_rotating(wrk: str, name: str, path: str, body: str, token_file: Path) -> Result:
    script = ROTATING_LUA % {"tokens": token_file, "body": json.dumps(body)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as handle:
        handle.write(script)
        handle.flush()
        out = subprocess.run(
            [
                wrk,
                "-t",
                "1",
                "-c",
                str(CONNECTIONS),
                "-d",
                f"{DURATION_S}s",
                "-s",
                handle.name,
                f"http://127.0.0.1:{PORT}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"BENCH (\d+) (\d+) ([\d.]+) (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    requests, duration_us, p99_us, errors = match.groups()
    return Result(name, int(requests) / (int(duration_us) / 1e6), float(p99_us) / 1000, int(errors))


def check_current_session(token: str, session_id: str) -> None:
    """One request before the run: the reader's answer must hold its open stay from the
    core, priced. A broken route, or an empty answer (the plate not trusted, the stay
    not loaded), fails loudly here instead of being measured: an empty answer is fast."""
    path = "/v1/me/sessions/current"
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (our own server)
        if response.status >= 300:
            raise RuntimeError(f"{path}: {response.status}")
        answer = json.loads(response.read())
    items = answer.get("items") or []
    if [(i.get("session_id"), i.get("source")) for i in items] != [(session_id, "live")] or (
        items[0].get("fee_fen") is None
    ):
        raise RuntimeError(
            f"GET {path} should answer the reader's open stay {session_id} from the live "
            f"core with its fee, so the bench measures that; it answered {answer}"
        )


def main() -> int:
    settings = config.load()
    wrk = ensure_wrk()
    asyncio.run(prepare(settings))
    reader, reader_session = asyncio.run(setup(settings))
    keyring = qr_keys.load_or_create(qr_keys.path_in(settings.stack_dir))
    entry_code = qr_logic.sign(
        qr_logic.target(QrKind.LANE, DEMO, "in1"), keyring=keyring, now=datetime.now(UTC)
    )
    scan_body = json.dumps({"code": entry_code})
    token_file = scanner_tokens(settings)
    try:
        with serve_app():
            check_current_session(reader, reader_session)
            runs = [
                run_wrk(wrk, "hello-world (baseline)", "/bench/hello"),
                run_wrk(wrk, "current session with fee", "/v1/me/sessions/current", token=reader),
                run_rotating(
                    wrk, "scan-in (unplated entry)", "/v1/scans/entry", scan_body, token_file
                ),
            ]
        # How the routes scale with cores: the same reads under two workers, in the same
        # run (wrk and the stack share the machine's two cores with them).
        with serve_app(workers=2):
            check_current_session(reader, reader_session)
            scaled = [
                run_wrk(wrk, "hello-world, 2 workers", "/bench/hello"),
                run_wrk(
                    wrk,
                    "current session with fee, 2 workers",
                    "/v1/me/sessions/current",
                    token=reader,
                ),
            ]
    finally:
        token_file.unlink(missing_ok=True)
        asyncio.run(restore_full_policy(settings))
    base = runs[0].rps
    print(f"Driver API under wrk: 1 granian worker, {CONNECTIONS} connections, {DURATION_S}s each")
    for r in runs:
        ratio = r.rps / base
        goal = GOALS.get(r.name)
        verdict = (
            "" if goal is None else (f"goal {goal:.2f}x " + ("met" if ratio >= goal else "MISSED"))
        )
        print(
            f"{r.name:<32} {r.rps:>9,.0f} req/s  p99 {r.p99_ms:7.2f} ms  "
            f"ratio {ratio:5.2f}  errors {r.errors}  {verdict}"
        )
    for two, one in zip(scaled, runs[:2], strict=True):
        print(
            f"{two.name:<36} {two.rps:>9,.0f} req/s  p99 {two.p99_ms:7.2f} ms  "
            f"{two.rps / one.rps:5.2f}x one worker  errors {two.errors}"
        )
    results = Results("driver_api")
    record(results, runs, GOALS, write=False)
    for two, one in zip(scaled, runs[:2], strict=True):
        results.row(
            two.name,
            two.rps,
            "req/s",
            against=Baseline(case=f"{one.name}, 1 worker", value=one.rps, unit="req/s"),
            p99_ms=two.p99_ms,
            errors=two.errors,
        )
    results.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
