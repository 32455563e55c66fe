"""A business day reconciled end to end: drivers pay and are refunded through the real API
and the sandbox provider (a process of ours speaking WeChat Pay v3), the day's statement
is fetched through the adapter, imported into the real PostgreSQL, matched and settled.

Each test has its own sandbox (its own business clock, moved forward to the next day's
10:00 when the statement is ready); the platform's clock follows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from litestar import Litestar
from payflow_support import Bridge, bill_status, eventually, new_account, open_bill
from payment_servers import SandboxControl, SandboxProcess, running_sandbox

from parking import config
from parking.api.app import create_app
from parking.auth import tokens
from parking.auth.model import Role
from parking.clock import SHANGHAI, SystemClock
from parking.config import Settings
from parking.ledger import service as ledger
from parking.payments import notifications
from parking.payments.model import AttemptStatus
from parking.payments.providers import alipay as alipay_adapter
from parking.payments.providers import wechat as wechat_adapter
from parking.payments.wire import wechat as wx
from parking.reconciliation import daily
from parking.reconciliation import service as reconcile
from parking.reconciliation.model import ImportResult, Run, StatementKind

_PORT_SHIFT = int(os.environ.get("PARKING_SANDBOX_PORT", "8020")) - 8020
RECONCILE_SANDBOX_PORT = 8084 + _PORT_SHIFT
RECONCILE_ALIPAY_PORT = 8085 + _PORT_SHIFT
RATE = 6000
FINANCE = "li.finance"


class FollowingClock:
    """Real time shifted by an offset, so the platform keeps the sandbox's business time."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def set(self, at: datetime) -> None:
        self.offset = at - datetime.now(UTC)


@pytest.fixture
def flow_sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    """This module's own sandbox, fresh for each test: its business clock starts now."""
    with running_sandbox(
        tmp_path / "sandbox", RECONCILE_SANDBOX_PORT, alipay_port=RECONCILE_ALIPAY_PORT
    ) as process:
        yield process


@pytest.fixture
def clock() -> FollowingClock:
    return FollowingClock()


@pytest.fixture
def api_app(
    settings: Settings,
    db_url: str,
    flow_sandbox: SandboxProcess,
    bridge: Bridge,
    monkeypatch: pytest.MonkeyPatch,
    clock: FollowingClock,
) -> Litestar:
    monkeypatch.setenv("PARKING_WECHATPAY_CONFIG", str(flow_sandbox.config_path))
    monkeypatch.setenv("PARKING_ALIPAY_CONFIG", str(flow_sandbox.alipay_config_path))
    monkeypatch.setenv("PARKING_NOTIFY_BASE_URL", bridge.base_url)
    settings_ = config.load({**os.environ, "PARKING_DATABASE_URL": db_url})
    # The sandbox signs with wall time; business time follows its business clock.
    return create_app(settings_, clock=clock, signature_clock=SystemClock())


@pytest.fixture
def conn(city_conn: asyncpg.Connection) -> asyncpg.Connection:
    return city_conn


def headers(settings: Settings, clock: FollowingClock, role: Role, subject: str) -> dict[str, str]:
    token = tokens.issue(
        settings.jwt_key, subject=subject, role=role, now=clock.now(), ttl=timedelta(minutes=10)
    )
    return {"Authorization": f"Bearer {token}"}


async def order(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    clock: FollowingClock,
    amount: int,
    provider: str = "wechat",
) -> tuple[str, str, str]:
    """A driver's bill and the order that pays it: (account, bill id, out_trade_no)."""
    account = new_account()
    bill = await open_bill(conn, amount, account_id=account, now=clock.now())
    response = await api.post(
        "/v1/bills/pay",
        json={"bill_ids": [bill.id], "provider": provider},
        headers={
            **headers(settings, clock, Role.DRIVER, account),
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    assert response.status_code == 201, response.text
    return account, bill.id, response.json()["out_trade_no"]


async def paid(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    control: SandboxControl,
    settings: Settings,
    clock: FollowingClock,
    amount: int,
) -> tuple[str, str, str]:
    account, bill_id, no = await order(api, conn, settings, clock, amount)
    await control.pay(no)

    async def done() -> bool:
        return await bill_status(conn, bill_id) == "paid"

    await eventually(done, what="the bill paid")
    return account, bill_id, no


async def paid_unheard(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    control: SandboxControl,
    settings: Settings,
    clock: FollowingClock,
    amount: int,
) -> tuple[str, str]:
    """An order the driver paid whose notification never came, and that the sweeper then
    expired: (bill id, out_trade_no)."""
    await control.control("notifications", mode="drop")
    _, bill_id, no = await order(api, conn, settings, clock, amount)
    await control.pay(no)
    attempt = await conn.fetchval("SELECT id FROM payment_attempts WHERE out_trade_no = $1", no)
    assert await notifications.end_attempt(
        pool, attempt, AttemptStatus.EXPIRED, reason="expired unpaid", now=clock.now()
    )
    await control.control("notifications", mode="deliver")
    return bill_id, no


async def refunded(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    clock: FollowingClock,
    account: str,
    bill_id: str,
    amount: int,
) -> None:
    """The driver disputes, finance approves a refund of ``amount``, the provider pays it."""
    opened = await api.post(
        f"/v1/bills/{bill_id}/dispute",
        json={"reason": "入场时间不对"},
        headers=headers(settings, clock, Role.DRIVER, account),
    )
    assert opened.status_code == 201, opened.text
    approved = await api.post(
        f"/v1/finance/disputes/{opened.json()['id']}/approve",
        json={"remark": "退部分停车费", "amount_fen": amount},
        headers=headers(settings, clock, Role.FINANCE, FINANCE),
    )
    assert approved.status_code == 200, approved.text

    async def done() -> bool:
        got = await conn.fetchval("SELECT refunded_fen FROM bills WHERE id = $1", bill_id)
        return bool(got == amount)

    await eventually(done, what="the refund confirmed")


def business_day(clock: FollowingClock) -> date:
    return clock.now().astimezone(SHANGHAI).date()


async def statement_ready(control: SandboxControl, clock: FollowingClock, day: date) -> None:
    """Move the sandbox (and the platform) to 10:00 the day after ``day``."""
    ready = datetime.combine(day + timedelta(days=1), time(10, 0, 5), tzinfo=SHANGHAI)
    clock.set(await control.move_to(ready))


async def fetch_and_import(
    conn: asyncpg.Connection,
    adapter: wechat_adapter.WechatPayProvider,
    clock: FollowingClock,
    tmp_path: Path,
    day: date,
    *,
    content: bytes | None = None,
    replace: bool = False,
) -> ImportResult:
    if content is None:
        downloaded = await adapter.download_trade_bill(day)
        assert downloaded.kind == StatementKind.WECHAT.value
        content = downloaded.content
    file = tmp_path / f"{day}-{uuid.uuid4().hex[:6]}.csv"
    write(file, content)
    async with conn.transaction():
        return await reconcile.import_statement(
            conn,
            provider="wechat",
            day=day,
            kind=StatementKind.WECHAT,
            file=file,
            source="fetched" if not replace else "imported",
            stack_dir=tmp_path / "stack",
            by="test",
            now=clock.now(),
            replace=replace,
        )


def write(path: Path, content: bytes) -> None:
    path.write_bytes(content)


def read(path: Path) -> bytes:
    return path.read_bytes()


async def run_day(conn: asyncpg.Connection, clock: FollowingClock, day: date) -> Run:
    async with conn.transaction():
        return await reconcile.run(
            conn, provider="wechat", day=day, fee_rate_ppm=RATE, by="test", now=clock.now()
        )


async def kinds(conn: asyncpg.Connection, day: date) -> set[tuple[str, str]]:
    report = await reconcile.report(conn, "wechat", day)
    return {(d.kind, cast(str, d.out_trade_no)) for d in report.discrepancies}


async def balance(conn: asyncpg.Connection, account: str) -> int:
    return await ledger.account_balance(conn, account)


async def test_a_day_of_payments_and_a_refund_reconciles_settles_and_runs_again_unchanged(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    control: SandboxControl,
    wechat: wechat_adapter.WechatPayProvider,
    settings: Settings,
    clock: FollowingClock,
    tmp_path: Path,
) -> None:
    clock.set(await control.now())
    account, first, _ = await paid(api, conn, control, settings, clock, 500)
    await paid(api, conn, control, settings, clock, 1200)
    await refunded(api, conn, settings, clock, account, first, 200)
    day = business_day(clock)
    await statement_ready(control, clock, day)

    imported = await fetch_and_import(conn, wechat, clock, tmp_path, day)
    assert imported.statement.lines == 3
    run = await run_day(conn, clock, day)
    assert (run.lines, run.matched, run.discrepancies, run.pending) == (3, 3, 0, 0)
    assert (run.matched_fen, run.refunds, run.refunds_fen) == (500 + 1200 - 200, 1, 200)
    # 0.60 %: 3 + 7 fen on the payments, 1 fen given back with the refund
    assert run.fees_fen == 3 + 7 - 1
    assert run.settled
    assert (await ledger.trial_balance(conn)).total_fen == 0
    assert await balance(conn, "clearing:wechat") == 0
    assert await balance(conn, "bank") == 1500 - 9
    assert await balance(conn, "provider_fees:wechat") == 9

    settlements = await conn.fetchval(
        "SELECT count(*) FROM ledger_transactions WHERE kind = 'settlement'"
    )
    again = await run_day(conn, clock, day)
    assert (again.matched, again.matched_fen, again.discrepancies, again.settled) == (
        3,
        1500,
        0,
        True,
    )
    assert (
        await conn.fetchval("SELECT count(*) FROM ledger_transactions WHERE kind = 'settlement'")
        == settlements
    )
    assert await balance(conn, "bank") == 1500 - 9
    assert await conn.fetchval("SELECT count(*) FROM discrepancies") == 0
    report = await reconcile.report(conn, "wechat", day)
    assert (report.lines, report.matched, report.settled, report.pending) == (3, 3, True, [])


async def test_each_discrepancy_kind_injected_once_is_found_once(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    control: SandboxControl,
    wechat: wechat_adapter.WechatPayProvider,
    settings: Settings,
    clock: FollowingClock,
    tmp_path: Path,
) -> None:
    clock.set(await control.now())
    day = business_day(clock)
    _, _, wrong_amount = await paid(api, conn, control, settings, clock, 800)
    _, _, omitted = await paid(api, conn, control, settings, clock, 900)
    _, _, twice = await paid(api, conn, control, settings, clock, 1000)
    _, _, wrong_fee = await paid(api, conn, control, settings, clock, 1500)
    _, _, fine = await paid(api, conn, control, settings, clock, 2000)
    # the sweeper gave up on an order whose notification never came; the money did
    late_bill, late = await paid_unheard(api, conn, pool, control, settings, clock, 700)
    await control.control("bill_wrong_amount", out_trade_no=wrong_amount, amount_fen=880)
    await control.control("bill_omit", out_trade_no=omitted)
    await control.control(
        "bill_add_unknown", out_trade_no="NOT-OURS-0001", amount_fen=300, bill_date=day.isoformat()
    )
    await statement_ready(control, clock, day)

    await fetch_and_import(conn, wechat, clock, tmp_path, day)
    first = await run_day(conn, clock, day)
    assert await kinds(conn, day) == {
        ("amount_mismatch", wrong_amount),
        ("missing_internally", "NOT-OURS-0001"),
        ("status_mismatch", late),
    }
    assert first.pending == 1
    report = await reconcile.report(conn, "wechat", day)
    assert [(p.kind, p.out_trade_no) for p in report.pending] == [("payment", omitted)]
    amounts = {d.kind: (d.ours_fen, d.provider_fen) for d in report.discrepancies}
    assert amounts["amount_mismatch"] == (800, 880)
    assert amounts["status_mismatch"] == (700, 700)
    assert all(d.line and d.line.startswith("`") for d in report.discrepancies)

    # a tampered copy: one order twice, one fee off the contracted rate
    current = await reconcile.current_statement(conn, "wechat", day)
    assert current is not None
    bill = wx.parse_trade_bill(read(Path(current.path)).decode("utf-8"))
    rows: list[wx.TradeBillRow] = []
    for row in bill.rows:
        if row.out_trade_no == wrong_fee:
            row = wx.TradeBillRow(**{**_fields(row), "fee_milli_fen": row.fee_milli_fen + 5000})
        rows.append(row)
        if row.out_trade_no == twice:
            rows.append(row)
    tampered = wx.render_trade_bill(rows, wx.TradeBillType.ALL).encode("utf-8")
    await fetch_and_import(conn, wechat, clock, tmp_path, day, content=tampered, replace=True)
    second = await run_day(conn, clock, day)
    assert await kinds(conn, day) == {
        ("amount_mismatch", wrong_amount),
        ("missing_internally", "NOT-OURS-0001"),
        ("status_mismatch", late),
        ("duplicate", twice),
        ("fee_mismatch", wrong_fee),
    }
    assert second.discrepancies == 5
    assert fine not in {no for _, no in await kinds(conn, day)}
    # the same again: the same set, no duplicates
    await run_day(conn, clock, day)
    assert await conn.fetchval("SELECT count(*) FROM discrepancies WHERE status = 'open'") == 5

    # the omitted order waits three business days, then is missing at the provider
    for later in (1, 2, 3):
        next_day = day + timedelta(days=later)
        await statement_ready(control, clock, next_day)
        await fetch_and_import(conn, wechat, clock, tmp_path, next_day)
        await run_day(conn, clock, next_day)
        missing = await conn.fetchval(
            "SELECT count(*) FROM discrepancies WHERE kind = 'missing_at_provider'"
        )
        assert missing == (1 if later == 3 else 0)
    found = await conn.fetchrow(
        "SELECT business_date, out_trade_no, ours_fen, provider_fen FROM discrepancies "
        "WHERE kind = 'missing_at_provider'"
    )
    assert dict(found) == {
        "business_date": day,
        "out_trade_no": omitted,
        "ours_fen": 900,
        "provider_fen": None,
    }
    assert await bill_status(conn, late_bill) != "paid"


def _fields(row: Any) -> dict[str, Any]:
    return {f: getattr(row, f) for f in row.__struct_fields__}


async def test_a_payment_at_235959_waits_in_pending_and_clears_the_next_day(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    control: SandboxControl,
    wechat: wechat_adapter.WechatPayProvider,
    settings: Settings,
    clock: FollowingClock,
    tmp_path: Path,
) -> None:
    sandbox_now = await control.now()
    day = sandbox_now.astimezone(SHANGHAI).date()
    midnight = datetime.combine(day + timedelta(days=1), time(0, 0, 1), tzinfo=SHANGHAI)
    # ours is recorded at 23:59:59; the provider's success is a moment after midnight
    clock.set(midnight - timedelta(seconds=2))
    _, _, order_no = await order(api, conn, settings, clock, 650)
    await control.move_to(midnight)
    await control.pay(order_no)

    async def settled() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT status = 'paid' FROM payment_attempts WHERE out_trade_no = $1", order_no
            )
        )

    await eventually(settled, what="the payment recorded")
    recorded = await conn.fetchval(
        "SELECT settled_at FROM payment_attempts WHERE out_trade_no = $1", order_no
    )
    assert recorded.astimezone(SHANGHAI).date() == day

    await statement_ready(control, clock, day + timedelta(days=1))
    # the day's own statement: the provider had no trade that day
    imported = await fetch_and_import(conn, wechat, clock, tmp_path, day)
    assert imported.statement.lines == 0
    waiting = await run_day(conn, clock, day)
    assert (waiting.discrepancies, waiting.pending, waiting.settled) == (0, 1, False)
    report = await reconcile.report(conn, "wechat", day)
    assert [p.out_trade_no for p in report.pending] == [order_no]

    next_day = day + timedelta(days=1)
    await fetch_and_import(conn, wechat, clock, tmp_path, next_day)
    cleared = await run_day(conn, clock, next_day)
    assert (cleared.matched, cleared.matched_fen, cleared.discrepancies, cleared.pending) == (
        1,
        650,
        0,
        0,
    )
    assert cleared.settled
    assert (await reconcile.report(conn, "wechat", day)).pending == []
    assert await conn.fetchval("SELECT count(*) FROM discrepancies") == 0
    assert await balance(conn, "clearing:wechat") == 0
    # running the first day again leaves it cleared
    await run_day(conn, clock, day)
    assert (await reconcile.report(conn, "wechat", day)).pending == []


async def test_finance_applies_a_payment_whose_notification_was_lost_through_the_payment_path(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    control: SandboxControl,
    wechat: wechat_adapter.WechatPayProvider,
    settings: Settings,
    clock: FollowingClock,
    tmp_path: Path,
) -> None:
    clock.set(await control.now())
    day = business_day(clock)
    bill_id, late = await paid_unheard(api, conn, pool, control, settings, clock, 700)
    await statement_ready(control, clock, day)
    await fetch_and_import(conn, wechat, clock, tmp_path, day)
    run = await run_day(conn, clock, day)
    assert (run.discrepancies, run.settled) == (1, False)
    finance = headers(settings, clock, Role.FINANCE, FINANCE)

    runs = await api.get(
        "/v1/finance/reconciliations",
        params={"provider": "wechat", "from": day.isoformat(), "to": day.isoformat()},
        headers=finance,
    )
    assert runs.status_code == 200, runs.text
    assert [(r["id"], r["lines"], r["discrepancies"]) for r in runs.json()["items"]] == [
        (run.id, 1, 1)
    ]
    listed = await api.get(
        "/v1/finance/discrepancies",
        params={"status": "open", "kind": "status_mismatch", "date": day.isoformat()},
        headers=finance,
    )
    assert listed.status_code == 200, listed.text
    [found] = listed.json()["items"]
    assert (found["out_trade_no"], found["ours_fen"], found["provider_fen"]) == (late, 700, 700)
    path = f"/v1/finance/discrepancies/{found['id']}/resolve"

    no_remark = await api.post(path, json={"resolution": "apply_payment"}, headers=finance)
    assert no_remark.status_code == 400
    blank = await api.post(
        path, json={"resolution": "apply_payment", "remark": "   "}, headers=finance
    )
    assert blank.status_code == 400
    resolved = await api.post(
        path, json={"resolution": "apply_payment", "remark": "通知丢失，款已到账"}, headers=finance
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["resolution"], body["resolved_by"]) == (
        "resolved",
        "apply_payment",
        FINANCE,
    )
    assert await bill_status(conn, bill_id) == "paid"
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM ledger_transactions "
            "WHERE kind = 'bill_paid' AND correlation_id = $1",
            bill_id,
        )
        == 1
    )
    audit = await conn.fetchrow(
        "SELECT actor, role, details FROM audit_log WHERE action = 'discrepancy.apply_payment'"
    )
    assert (audit["actor"], audit["role"]) == (FINANCE, "finance")
    assert "通知丢失，款已到账" in audit["details"]
    # the applied money is settled too: clearing drained, the bank has it less the fee
    assert await balance(conn, "clearing:wechat") == 0
    assert await balance(conn, "bank") == 700 - 4
    assert (await ledger.trial_balance(conn)).total_fen == 0

    again = await api.post(
        path, json={"resolution": "write_off", "remark": "再来一次"}, headers=finance
    )
    assert again.status_code == 409
    # the day again: ours is paid now, the line matches, nothing settles twice
    rerun = await run_day(conn, clock, day)
    assert (rerun.discrepancies, rerun.matched) == (0, 1)
    assert await balance(conn, "bank") == 700 - 4
    assert (
        await conn.fetchval("SELECT status FROM discrepancies WHERE id = $1", found["id"])
        == "resolved"
    )

    exported = await api.get(f"/v1/finance/reconciliations/{run.id}/export.csv", headers=finance)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = exported.text.splitlines()
    assert rows[0].startswith("run,provider,business_date,lines,matched")
    assert found["id"] in rows[1]
    assert late in rows[1]


async def test_the_daily_reconciler_runs_yesterday_once_after_ten(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    control: SandboxControl,
    wechat: wechat_adapter.WechatPayProvider,
    settings: Settings,
    clock: FollowingClock,
    tmp_path: Path,
) -> None:
    clock.set(await control.now())
    await paid(api, conn, control, settings, clock, 900)
    day = business_day(clock)
    providers = {"wechat": wechat}

    async def tick(now: datetime) -> list[tuple[str, date, str, int, int]]:
        done = await daily.reconcile_due(
            pool,
            providers,
            fee_rates={"wechat": RATE},
            at=(10, 0),
            stack_dir=tmp_path / "stack",
            now=now,
        )
        return [(d.provider, d.day, d.outcome, d.lines, d.discrepancies) for d in done]

    next_morning = datetime.combine(day + timedelta(days=1), time(9, 59), tzinfo=SHANGHAI)
    assert await tick(next_morning) == []
    # due by our clock, but the provider is still making the statement
    assert await tick(next_morning + timedelta(minutes=5)) == [("wechat", day, "not_ready", 0, 0)]
    await statement_ready(control, clock, day)
    assert await tick(clock.now()) == [("wechat", day, "ran", 1, 0)]
    assert await tick(clock.now()) == [("wechat", day, "already", 0, 0)]
    report = await reconcile.report(conn, "wechat", day)
    assert (report.matched, report.matched_fen, report.settled) == (1, 900, True)
    assert await conn.fetchval("SELECT count(*) FROM reconciliation_runs") == 1


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parking", "reconcile", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli(env: dict[str, str], *args: str) -> str:
    done = run_cli(env, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_finance_walkthrough_with_the_command_line(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    control: SandboxControl,
    flow_sandbox: SandboxProcess,
    settings: Settings,
    clock: FollowingClock,
    db_url: str,
    tmp_path: Path,
) -> None:
    """README "Finance": pay two bills, fetch the day's statement, reconcile (none differ,
    settled), import a tampered copy with --replace, see the discrepancy, resolve it."""
    clock.set(await control.now())
    _, _, first = await paid(api, conn, control, settings, clock, 500)
    await paid(api, conn, control, settings, clock, 1200)
    day = business_day(clock)
    await statement_ready(control, clock, day)
    env = {
        **os.environ,
        "PARKING_DATABASE_URL": db_url,
        "PARKING_WECHATPAY_CONFIG": str(flow_sandbox.config_path),
        "PARKING_STACK_DIR": str(tmp_path / "stack"),
    }
    statement = tmp_path / "statement.csv"
    fetched = cli(env, "fetch", "--provider", "wechat", "--date", str(day), "--out", str(statement))
    assert f"wechat {day}: imported 2 lines" in fetched
    ran = cli(env, "run", "--provider", "wechat", "--date", str(day))
    assert "2 lines, 2 matched (1700 fen, fees 10 fen, 0 refunds), 0 discrepancies" in ran
    assert ", settled" in ran

    bill = wx.parse_trade_bill(read(statement).decode("utf-8"))
    rows = [
        wx.TradeBillRow(**{**_fields(r), "settlement_total_fen": 50, "order_amount_fen": 50})
        if r.out_trade_no == first
        else r
        for r in bill.rows
    ]
    tampered = tmp_path / "tampered.csv"
    write(tampered, wx.render_trade_bill(rows, wx.TradeBillType.ALL).encode("utf-8"))
    refused = run_cli(
        env, "import", "--provider", "wechat", "--date", str(day), "--file", str(tampered)
    )
    assert refused.returncode == 1
    assert "--replace" in refused.stderr
    replaced = cli(
        env,
        "import",
        "--provider",
        "wechat",
        "--date",
        str(day),
        "--file",
        str(tampered),
        "--replace",
    )
    assert "imported 2 lines" in replaced
    assert "replacing si-" in replaced
    cli(env, "run", "--provider", "wechat", "--date", str(day))
    report = json.loads(cli(env, "report", "--provider", "wechat", "--date", str(day), "--json"))
    assert {k: report[k] for k in ("provider", "date", "lines", "settled")} == {
        "provider": "wechat",
        "date": str(day),
        "lines": 2,
        "settled": True,
    }
    [found] = report["discrepancies"]
    assert (found["kind"], found["out_trade_no"], found["ours_fen"], found["provider_fen"]) == (
        "amount_mismatch",
        first,
        500,
        50,
    )
    assert found["out_refund_no"] is None
    assert found["line"].startswith("`")
    assert report["pending"] == []

    resolved = await api.post(
        f"/v1/finance/discrepancies/{found['id']}/resolve",
        json={"resolution": "accept_ours", "remark": "对账单被改过，以我方为准"},
        headers=headers(settings, clock, Role.FINANCE, FINANCE),
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "resolved"


async def test_a_day_through_both_providers_reconciles_and_settles_each(
    api: httpx.AsyncClient,
    conn: asyncpg.Connection,
    control: SandboxControl,
    flow_sandbox: SandboxProcess,
    http: httpx.AsyncClient,
    wechat: wechat_adapter.WechatPayProvider,
    settings: Settings,
    clock: FollowingClock,
    tmp_path: Path,
) -> None:
    """WeChat Pay and Alipay, both played by the sandbox process: payments and a refund
    through each, each provider's statement fetched, matched with nothing differing,
    and each settled; the books balance and both clearing accounts are empty."""
    clock.set(await control.now())
    await paid(api, conn, control, settings, clock, 500)
    alipay_base = f"http://127.0.0.1:{RECONCILE_ALIPAY_PORT}/sandbox/alipay"
    ali_account, ali_bill, ali_order = await order(api, conn, settings, clock, 800, "alipay")
    assert (await http.post(f"{alipay_base}/pay/{ali_order}")).status_code == 200

    async def ali_paid() -> bool:
        return await bill_status(conn, ali_bill) == "paid"

    await eventually(ali_paid, what="the Alipay bill paid")
    _, second_bill, second_order = await order(api, conn, settings, clock, 1500, "alipay")
    assert (await http.post(f"{alipay_base}/pay/{second_order}")).status_code == 200

    async def second_paid() -> bool:
        return await bill_status(conn, second_bill) == "paid"

    await eventually(second_paid, what="the second Alipay bill paid")
    await refunded(api, conn, settings, clock, ali_account, ali_bill, 300)
    day = business_day(clock)

    # Alipay: the day's bill zip, through the adapter the platform uses
    alipay = alipay_adapter.AlipayProvider.from_config(
        alipay_adapter.load_config(flow_sandbox.alipay_config_path), http=http, clock=SystemClock()
    )
    downloaded = await alipay.download_trade_bill(day)
    assert downloaded.kind == StatementKind.ALIPAY.value
    file = tmp_path / "alipay.zip"
    write(file, downloaded.content)
    async with conn.transaction():
        imported = await reconcile.import_statement(
            conn,
            provider="alipay",
            day=day,
            kind=StatementKind.ALIPAY,
            file=file,
            source="fetched",
            stack_dir=tmp_path / "stack",
            by="test",
            now=clock.now(),
        )
    assert imported.statement.lines == 3
    async with conn.transaction():
        ali_run = await reconcile.run(
            conn, provider="alipay", day=day, fee_rate_ppm=RATE, by="test", now=clock.now()
        )
    assert (ali_run.lines, ali_run.matched, ali_run.discrepancies, ali_run.pending) == (3, 3, 0, 0)
    assert (ali_run.matched_fen, ali_run.refunds_fen) == (800 + 1500 - 300, 300)
    # 0.60 %: 5 + 9 fen on the payments, 2 fen given back with the refund
    assert ali_run.fees_fen == 5 + 9 - 2
    assert ali_run.settled

    # WeChat: the next morning's statement
    await statement_ready(control, clock, day)
    await fetch_and_import(conn, wechat, clock, tmp_path, day)
    wx_run = await run_day(conn, clock, day)
    assert (wx_run.matched, wx_run.discrepancies, wx_run.settled) == (1, 0, True)

    assert (await ledger.trial_balance(conn)).total_fen == 0
    assert await balance(conn, "clearing:alipay") == 0
    assert await balance(conn, "clearing:wechat") == 0
    assert await balance(conn, "bank") == (2000 - 12) + (500 - 3)
