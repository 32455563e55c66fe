"""Reconciliation's use cases: import a statement, match a day, settle it, resolve.

The caller owns the transaction (``import_statement``, ``run``, ``resolve``
need an open one); a statement that fails any check raises before its
transaction commits, so nothing of it is imported.
"""

from __future__ import annotations

import csv
import io
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Final, cast

import asyncpg
import msgspec

from parking import audit as audit_log
from parking.auth.model import Principal
from parking.ids import new_id
from parking.ledger import logic as ledger_logic
from parking.ledger import service as ledger
from parking.payments import logic as payments_logic
from parking.payments import notifications
from parking.payments.model import UnknownProvider
from parking.payments.port import OrderState, OrderStatus, PaymentProvider
from parking.reconciliation import logic, statements, store
from parking.reconciliation.model import (
    Discrepancy,
    DiscrepancyClosed,
    DiscrepancyKind,
    Found,
    ImportResult,
    Line,
    NoStatement,
    Report,
    Resolution,
    ResolutionRefused,
    Resolve,
    Run,
    StatementExists,
    StatementImport,
    StatementKind,
    Totals,
    UnknownDiscrepancy,
)

# ------------------------------------------------------------------ import


async def import_statement(
    conn: asyncpg.Connection,
    *,
    provider: str,
    day: date,
    kind: StatementKind,
    file: Path,
    source: str,
    stack_dir: Path,
    by: str,
    now: datetime,
    replace: bool = False,
    progress: statements.Progress = statements.no_progress,
) -> ImportResult:
    """Import a day's statement file (caller's transaction; one import of a day at a time).

    The same file again changes nothing. Another file for a day that has one
    raises StatementExists unless ``replace``: then the old import is kept,
    marked replaced by the new. A file that fails any check raises
    StatementRefused and nothing of it is imported. The file is kept, as it
    is, under the stack folder.
    """
    ledger.require_transaction(conn, "reconciliation.import_statement")
    sha256, size = statements.digest(file)
    await store.lock_day(conn, provider, day)
    current = await store.current_import(conn, provider, day)
    if current is not None and current.sha256 == sha256:
        return ImportResult(statement=current, created=False)
    if current is not None and not replace:
        raise StatementExists(
            f"{provider} {day} has a different statement (import {current.id}); "
            "import with --replace to replace it"
        )
    keep = statements.kept_path(stack_dir, provider, day, sha256, kind)
    existed = keep.exists()
    if not existed:
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, keep)
    statement = StatementImport(
        id=new_id("si", now),
        provider=provider,
        business_date=day,
        kind=kind.value,
        sha256=sha256,
        size_bytes=size,
        source=source,
        path=str(keep),
        lines=0,
        imported_by=by,
        imported_at=now,
        replaced_at=None,
        replaced_by=None,
    )
    counted = _Counter()
    try:
        if current is not None:
            # out of the way of the one-current-statement index first, then linked
            await store.mark_replaced(conn, current.id, by=None, at=now)
        await store.insert_import(conn, statement)
        if current is not None:
            await store.mark_replaced(conn, current.id, by=statement.id, at=now)
        if size == 0 and source == "fetched":
            # The provider's own "no statement for this day" (WeChat NO_STATEMENT_EXIST):
            # a day without trades, which still reconciles our side.
            found: Iterator[Line] = iter(())
        elif kind is StatementKind.WECHAT:
            found = statements.wechat_lines(keep, day, progress)
        else:
            found = iter(statements.alipay_lines(keep, day))
        await store.copy_lines(conn, statement.id, counted.through(found))
    except BaseException:
        if not existed:
            keep.unlink(missing_ok=True)
        raise
    await store.set_line_count(conn, statement.id, counted.n)
    return ImportResult(
        statement=msgspec.structs.replace(statement, lines=counted.n),
        created=True,
        replaced=current.id if current is not None else None,
    )


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def through(self, lines: Iterator[Line]) -> Iterator[Line]:
        for line in lines:
            self.n += 1
            yield line


# ------------------------------------------------------------------ run


async def run(
    conn: asyncpg.Connection,
    *,
    provider: str,
    day: date,
    fee_rate_ppm: int,
    by: str,
    now: datetime,
    progress: statements.Progress = statements.no_progress,
) -> Run:
    """Match the day's current statement against our records, keep what differs, update
    the holding pool and settle what matched (caller's transaction). Running a day again
    finds the same discrepancies (never twice) and settles nothing twice. Raises
    NoStatement."""
    ledger.require_transaction(conn, "reconciliation.run")
    started = time.monotonic()
    await store.lock_day(conn, provider, day)
    statement = await store.current_import(conn, provider, day)
    if statement is None:
        raise NoStatement(f"no {provider} statement for {day} was imported")
    matcher = logic.DayMatcher(
        day,
        fee_rate_ppm=fee_rate_ppm,
        pooled=await store.pooled_keys(conn, provider, day),
        reconciled=await store.reconciled_days(conn, provider, before=day),
    )
    groups = 0
    async for group, mine in store.paired(conn, statement.id, provider, day):
        matcher.add(group, mine)
        groups += 1
        if groups % statements.PROGRESS_EVERY == 0:
            progress(matcher.totals.lines)
    progress(matcher.totals.lines)
    outcome = matcher.outcome()
    found = await _with_lines(conn, statement.id, outcome.found)
    await store.pool_wait(conn, provider, outcome.waiting)
    await store.pool_settle(conn, provider, outcome.cleared, status="cleared", on=day)
    await store.pool_settle(conn, provider, outcome.missing, status="missing", on=None)
    settled = await _settle(conn, provider, day, outcome.totals, now)
    totals = outcome.totals
    done = Run(
        id=new_id("rc", now),
        provider=provider,
        business_date=day,
        import_id=statement.id,
        started_at=now,
        finished_at=now,
        duration_ms=int((time.monotonic() - started) * 1000),
        lines=totals.lines,
        matched=totals.matched,
        matched_fen=totals.matched_fen,
        fees_fen=totals.fees_fen,
        refunds=totals.refunds,
        refunds_fen=totals.refunds_fen,
        discrepancies=len(outcome.found),
        pending=len(outcome.waiting),
        settled=settled,
        run_by=by,
    )
    await store.insert_run(conn, done)
    await store.upsert_discrepancies(
        conn, provider, [(new_id("dc", now), f) for f in found], run_id=done.id, now=now
    )
    await store.withdraw_unfound(conn, provider, day, run_id=done.id)
    return done


async def _with_lines(conn: asyncpg.Connection, import_id: str, found: list[Found]) -> list[Found]:
    """The discrepancies with their statement lines, verbatim (matching reads none)."""
    wanted = [f.line_no for f in found if f.line_no is not None and f.line is None]
    if not wanted:
        return found
    texts = await store.line_texts(conn, import_id, wanted)
    return [
        msgspec.structs.replace(f, line=texts.get(f.line_no))
        if f.line_no is not None and f.line is None
        else f
        for f in found
    ]


def settlement_ref(day: date) -> str:
    return day.isoformat()


async def _settle(
    conn: asyncpg.Connection, provider: str, day: date, totals: Totals, now: datetime
) -> bool:
    """Move what matched out of clearing into the bank, less the provider's fees: one
    ledger transaction per provider and day, and a further tranche when a later run
    matches more (a resolution applied a payment). True when everything matched is
    settled; False when nothing can be (no net payment, or fees that eat it)."""
    correlation = f"{provider}:{settlement_ref(day)}"
    done = await ledger.transactions_of(conn, correlation)
    settled = logic.settled_so_far(done, provider)
    gross = totals.matched_fen - settled.gross_fen
    fee = totals.fees_fen - settled.fee_fen
    if gross <= 0:
        # all of it settled before (a replaced statement that matches less leaves what
        # was paid out as it is: its lines are discrepancies now)
        return bool(done)
    if fee < 0 or fee >= gross:
        return False
    tranche = settlement_ref(day) if not done else f"{settlement_ref(day)}#{len(done) + 1}"
    await ledger.post(
        conn,
        ledger_logic.settlement(
            provider=provider,
            settlement_ref=tranche,
            correlation_ref=settlement_ref(day),
            gross_fen=gross,
            fee_fen=fee,
            occurred_at=now,
            memo=f"{provider} statement of {day}: {totals.matched} lines matched",
        ),
    )
    return True


# ------------------------------------------------------------------ report


async def imports(conn: asyncpg.Connection, provider: str, day: date) -> list[StatementImport]:
    """Every import of the day, oldest first (replaced ones are history)."""
    return await store.imports(conn, provider, day)


async def current_statement(
    conn: asyncpg.Connection, provider: str, day: date
) -> StatementImport | None:
    """The day's statement in force (not replaced), if one was imported."""
    return await store.current_import(conn, provider, day)


async def report(conn: asyncpg.Connection, provider: str, day: date) -> Report:
    """The day as its newest run left it. Raises NoStatement when it never ran."""
    last = await store.last_run(conn, provider, day)
    if last is None:
        raise NoStatement(f"{provider} {day} was never reconciled")
    return Report(
        provider=provider,
        date=day,
        lines=last.lines,
        matched=last.matched,
        matched_fen=last.matched_fen,
        fees_fen=last.fees_fen,
        refunds=last.refunds,
        refunds_fen=last.refunds_fen,
        discrepancies=await store.discrepancies_of_run(conn, last.id),
        pending=await store.pending_of(conn, provider, day),
        settled=last.settled,
        run_id=last.id,
    )


async def runs(
    conn: asyncpg.Connection,
    *,
    provider: str | None,
    first: date | None,
    last: date | None,
    limit: int = 200,
) -> list[Run]:
    return await store.runs(conn, provider=provider, first=first, last=last, limit=limit)


async def find_last_run(conn: asyncpg.Connection, provider: str, day: date) -> Run | None:
    """The day's newest run, if it ever ran."""
    return await store.last_run(conn, provider, day)


async def find_run(conn: asyncpg.Connection, run_id: str) -> Run | None:
    return await store.run_by_id(conn, run_id)


async def run_discrepancies(conn: asyncpg.Connection, run_id: str) -> list[Discrepancy]:
    return await store.discrepancies_of_run(conn, run_id)


async def discrepancies(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    kind: str | None,
    provider: str | None,
    day: date | None,
    after: str | None,
    limit: int,
) -> list[Discrepancy]:
    return await store.find_discrepancies(
        conn, status=status, kind=kind, provider=provider, day=day, after=after, limit=limit
    )


# ------------------------------------------------------------------ resolve

#: the kinds whose provider line is money the provider took for an order
APPLICABLE: Final = frozenset({DiscrepancyKind.MISSING_INTERNALLY, DiscrepancyKind.STATUS_MISMATCH})


async def open_discrepancy(conn: asyncpg.Connection, discrepancy_id: str) -> Discrepancy:
    """The discrepancy, locked, still open (caller's transaction). Raises
    UnknownDiscrepancy or DiscrepancyClosed."""
    found = await store.discrepancy(conn, discrepancy_id, lock=True)
    if found is None:
        raise UnknownDiscrepancy(f"discrepancy {discrepancy_id} does not exist")
    if found.status != "open":
        raise DiscrepancyClosed(f"discrepancy {discrepancy_id} is {found.status}")
    return found


def check_resolution(found: Discrepancy, resolution: Resolution) -> None:
    """``apply_payment`` fits a payment line the provider says succeeded and we lack."""
    if resolution is not Resolution.APPLY_PAYMENT:
        return
    if (
        DiscrepancyKind(found.kind) not in APPLICABLE
        or found.out_refund_no is not None
        or found.provider_fen is None
        or found.transaction_id is None
    ):
        raise ResolutionRefused(
            "apply_payment applies a payment the provider's statement shows and ours lacks "
            f"(missing_internally or status_mismatch of a payment), not a {found.kind}"
        )


async def resolve(
    conn: asyncpg.Connection,
    found: Discrepancy,
    decision: Resolve,
    *,
    by: Principal,
    now: datetime,
) -> Discrepancy:
    """Close the discrepancy with the person's resolution and remark (caller's transaction;
    audited)."""
    check_resolution(found, decision.resolution)
    resolved = await store.resolve(
        conn,
        found.id,
        resolution=decision.resolution.value,
        remark=decision.remark,
        by=by.subject,
        at=now,
    )
    await audit_log.record_by(
        conn,
        by,
        action=f"discrepancy.{decision.resolution.value}",
        target=f"discrepancy:{found.id}",
        details={"kind": found.kind, "remark": decision.remark},
        now=now,
    )
    return resolved


async def resolve_discrepancy(
    pool: asyncpg.Pool,
    providers: Mapping[str, PaymentProvider],
    discrepancy_id: str,
    decision: Resolve,
    *,
    by: Principal,
    now: datetime,
    notify_base_url: str | None = None,
    fee_rates: Mapping[str, int] | None = None,
) -> Discrepancy:
    """Finance's resolution of one discrepancy. ``apply_payment`` first applies the
    statement line's payment through the payment path, exactly as the provider's lost
    notification would have (its bills become paid, once; money no bill can take goes to
    suspense), closes the discrepancy and runs the day again which
    settles the money now matched (its provider's rate in ``fee_rates``); the other
    resolutions only close it. Raises
    UnknownDiscrepancy, DiscrepancyClosed, ResolutionRefused or UnknownProvider."""
    async with _transaction(pool) as conn:
        found = await open_discrepancy(conn, discrepancy_id)
        check_resolution(found, decision.resolution)
    if decision.resolution is Resolution.APPLY_PAYMENT:
        provider = providers.get(found.provider)
        if provider is None:
            raise UnknownProvider(found.provider)
        assert found.out_trade_no is not None
        assert found.provider_fen is not None
        await notifications.settle_from_status(
            pool,
            provider,
            OrderStatus(
                provider=found.provider,
                out_trade_no=found.out_trade_no,
                state=OrderState.PAID,
                provider_state="SUCCESS",
                amount_fen=found.provider_fen,
                paid_fen=found.provider_fen,
                transaction_id=found.transaction_id,
            ),
            now=now,
            refund_notify_url=(
                payments_logic.notify_url(notify_base_url, provider.name)
                if notify_base_url
                else None
            ),
        )
    async with _transaction(pool) as conn:
        found = await open_discrepancy(conn, discrepancy_id)
        resolved = await resolve(conn, found, decision, by=by, now=now)
    fee_rate_ppm = (fee_rates or {}).get(found.provider)
    if decision.resolution is Resolution.APPLY_PAYMENT and fee_rate_ppm is not None:
        # the applied payment now matches its line: the day runs again and settles it
        async with _transaction(pool) as conn:
            await run(
                conn,
                provider=found.provider,
                day=found.business_date,
                fee_rate_ppm=fee_rate_ppm,
                by=f"resolution:{by.subject}",
                now=now,
            )
    return resolved


@asynccontextmanager
async def _transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        async with conn.transaction():
            yield conn


def export_csv(run: Run, found: Sequence[Discrepancy]) -> str:
    """A run as finance opens it in a spreadsheet: one row per discrepancy, after a header
    row; the run's totals in the first columns of every row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "run",
            "provider",
            "business_date",
            "lines",
            "matched",
            "matched_fen",
            "fees_fen",
            "settled",
            "discrepancy",
            "kind",
            "status",
            "out_trade_no",
            "out_refund_no",
            "transaction_id",
            "ours_fen",
            "provider_fen",
            "line_no",
            "line",
            "resolution",
            "remark",
        ]
    )
    head = [
        run.id,
        run.provider,
        run.business_date.isoformat(),
        run.lines,
        run.matched,
        run.matched_fen,
        run.fees_fen,
        "yes" if run.settled else "no",
    ]
    if not found:
        writer.writerow([*head, *[""] * 12])
    for d in found:
        writer.writerow(
            [
                *head,
                d.id,
                d.kind,
                d.status,
                d.out_trade_no or "",
                d.out_refund_no or "",
                d.transaction_id or "",
                "" if d.ours_fen is None else d.ours_fen,
                "" if d.provider_fen is None else d.provider_fen,
                "" if d.line_no is None else d.line_no,
                # a leading quote keeps a spreadsheet from reading the line as a formula
                "'" + d.line if d.line and d.line[0] in "=+-@" else (d.line or ""),
                d.resolution or "",
                d.remark or "",
            ]
        )
    return out.getvalue()
