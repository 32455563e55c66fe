"""Reconciliation benchmark: a 1,000,000-line WeChat ALL statement imported and matched
against 1,000,000 payments.

    uv run python bench/bench_reconcile.py [--lines 1000000]

Runs against the stack of the environment, in a scratch database it creates and drops.

1. Preparing (not timed): ``--lines`` paid payment attempts of one business day, COPYed
   into ``payment_attempts``; the provider's statement of that day listing each of them,
   written to a file a line at a time (``wire.wechat.trade_bill_lines``).
2. Baseline in the same run: a bare ``COPY`` of the same file into a table of one text
   column (PostgreSQL reads the lines, no parsing).
3. Timed, in a child process whose peak RSS is read when it ends:
   ``reconciliation.service.import_statement`` (the file streamed through the parser and
   the checks into ``statement_lines`` by COPY, in one transaction), then
   ``reconciliation.service.run`` (the day matched and settled).

Goal: import + run <= 4x the bare COPY; peak RSS bounded (the file is never held whole).
Prints both figures and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core_memory import db_url, drop_db
from results import Results, sized

from parking import config
from parking.clock import SHANGHAI
from parking.db import migrate
from parking.ids import ulid
from parking.payments.wire import wechat as wx
from parking.reconciliation import service
from parking.reconciliation.model import StatementKind
from parking.stack import service as stack

DB = "bench_reconcile"
DAY = date(2026, 12, 2)
GOAL = 4.0
MB = 1024 * 1024


def at(n: int) -> datetime:
    """The n-th payment's moment: spread over the day."""
    start = datetime.combine(DAY, day_time(0, 0, 5), tzinfo=SHANGHAI)
    return start + timedelta(seconds=(n * 86_000) // max(1, ARGS.lines))


def order_no(n: int) -> str:
    return f"CB{n:012d}"


def amount(n: int) -> int:
    return 100 + (n * 37) % 5_000


def rows(lines: int) -> Iterator[wx.TradeBillRow]:
    for n in range(lines):
        fee = (amount(n) * 6 + 500) // 1000 * 1000
        yield wx.TradeBillRow(
            trade_time=at(n),
            appid="wxd678efh567hg6787",
            mchid="1900000109",
            sub_mchid=None,
            device_info="",
            transaction_id=f"4200{n:024d}",
            out_trade_no=order_no(n),
            openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            trade_type="NATIVE",
            trade_state=wx.TradeState.SUCCESS,
            bank_type="OTHERS",
            currency="CNY",
            settlement_total_fen=amount(n),
            coupon_fen=0,
            description="停车费",
            attach="",
            fee_milli_fen=fee,
            fee_rate="0.60%",
            refund_fen=0,
            recharge_coupon_refund_fen=0,
            order_amount_fen=amount(n),
            requested_refund_fen=0,
        )


def write_statement(path: Path, lines: int) -> int:
    with path.open("w", encoding="utf-8", newline="") as out:
        for line in wx.trade_bill_lines(rows(lines), wx.TradeBillType.ALL):
            out.write(line)
    return path.stat().st_size


async def prepare(url: str, lines: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        # The attempts stand alone here (no bills behind them): the commit-time check
        # that an attempt's bills add up is off for this preparing connection only.
        await conn.execute("SET session_replication_role = replica")
        created = datetime.combine(DAY, day_time(0, 0, 1), tzinfo=SHANGHAI)
        batch: list[tuple[object, ...]] = []
        for n in range(lines):
            moment = at(n)
            batch.append(
                (
                    f"pa-{ulid(moment)}",
                    "wechat",
                    "native",
                    order_no(n),
                    amount(n),
                    "paid",
                    "bench",
                    f"4200{n:024d}",
                    created,
                    created + timedelta(days=1),
                    moment,
                    moment,
                )
            )
            if len(batch) == 50_000:
                await _copy_attempts(conn, batch)
                batch = []
        if batch:
            await _copy_attempts(conn, batch)
        await conn.execute("ANALYZE payment_attempts")
    finally:
        await conn.close()


async def _copy_attempts(conn: asyncpg.Connection, batch: list[tuple[object, ...]]) -> None:
    await conn.copy_records_to_table(
        "payment_attempts",
        records=batch,
        columns=(
            "id",
            "provider",
            "kind",
            "out_trade_no",
            "amount_fen",
            "status",
            "payer_account_id",
            "transaction_id",
            "created_at",
            "expires_at",
            "settled_at",
            "updated_at",
        ),
    )


async def bare_copy(url: str, path: Path) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE bare_statement (line text)")
        started = time.perf_counter()
        # one text column: a line of the bill has no tab and no backslash
        await conn.copy_to_table("bare_statement", source=path, format="text")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def measured(url: str, path: Path, stack_dir: Path) -> tuple[float, float, int, int]:
    conn = await asyncpg.connect(url)
    now = datetime.combine(DAY + timedelta(days=1), day_time(10, 30), tzinfo=SHANGHAI)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            imported = await service.import_statement(
                conn,
                provider="wechat",
                day=DAY,
                kind=StatementKind.WECHAT,
                file=path,
                source="imported",
                stack_dir=stack_dir,
                by="bench",
                now=now,
            )
        import_s = time.perf_counter() - started
        started = time.perf_counter()
        async with conn.transaction():
            run = await service.run(
                conn, provider="wechat", day=DAY, fee_rate_ppm=6000, by="bench", now=now
            )
        run_s = time.perf_counter() - started
        return import_s, run_s, imported.statement.lines, run.matched
    finally:
        await conn.close()


def child(url: str, path: Path, stack_dir: Path) -> None:
    import_s, run_s, lines, matched = asyncio.run(measured(url, path, stack_dir))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{import_s} {run_s} {lines} {matched} {peak}")


def main() -> None:
    settings = config.load()
    url = db_url(settings, DB)
    if ARGS.child:
        child(url, Path(ARGS.child), settings.stack_dir / "bench" / "statements")
        return
    stack.up(settings, log=lambda _: None)
    settings = config.load()
    url = db_url(settings, DB)
    asyncio.run(drop_db(settings, DB))
    admin_url = db_url(settings, "postgres")

    async def create() -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f"CREATE DATABASE {DB}")
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        with tempfile.TemporaryDirectory(dir=settings.stack_dir) as folder:
            path = Path(folder) / "statement.csv"
            started = time.perf_counter()
            size = write_statement(path, ARGS.lines)
            print(
                f"preparing: statement of {ARGS.lines:,} lines, {size / MB:.0f} MB, "
                f"in {time.perf_counter() - started:.1f} s"
            )
            started = time.perf_counter()
            asyncio.run(prepare(url, ARGS.lines))
            print(
                f"preparing: {ARGS.lines:,} paid attempts in {time.perf_counter() - started:.1f} s"
            )
            baseline = asyncio.run(bare_copy(url, path))
            print(
                f"baseline: bare COPY of the file: {baseline:.2f} s "
                f"({ARGS.lines / baseline:,.0f} lines/s)"
            )
            done = subprocess.run(
                [sys.executable, __file__, "--lines", str(ARGS.lines), "--child", str(path)],
                env=os.environ,
                capture_output=True,
                text=True,
                check=True,
            )
            import_s, run_s, lines, matched, peak = done.stdout.split()[-5:]
            total = float(import_s) + float(run_s)
            print(
                f"import (parse, check, COPY): {float(import_s):.2f} s; "
                f"run (match, settle): {float(run_s):.2f} s; lines {lines}, matched {matched}"
            )
            print(
                f"import + run: {total:.2f} s = {total / baseline:.1f}x the bare COPY "
                f"(goal <= {GOAL:.0f}x: {'met' if total / baseline <= GOAL else 'missed'}); "
                f"peak RSS of the importing process {int(peak) / MB:.0f} MB "
                f"(file {size / MB:.0f} MB)"
            )
            results = Results("reconcile")
            base = results.baseline(
                "bare COPY of the statement (baseline)", baseline, "s", lines=ARGS.lines
            )
            results.row(
                f"import + run, {ARGS.lines:,} lines",
                total,
                "s",
                against=base,
                goal=f"<= {GOAL:.0f}x the bare COPY",
                met=total / baseline <= GOAL,
                import_s=float(import_s),
                run_s=float(run_s),
                matched=int(matched),
                peak_rss_mb=int(peak) / MB,
                file_mb=size / MB,
            )
            results.write()
    finally:
        asyncio.run(drop_db(settings, DB))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=sized(1_000_000, 2_000))
    parser.add_argument("--child", default="")
    ARGS = parser.parse_args()
    main()
