"""Reconciliation's use cases: import a statement, match a day, settle it, resolve.

The caller owns the transaction (``import_statement``, ``run``, ``resolve``
need an open one); a statement that fails any check raises before its
transaction commits, so nothing of it is imported.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import IO, Final

import asyncpg
import msgspec

from parking import audit as audit_log
from parking.auth.model import Principal
from parking.ids import new_id
from parking.ledger import logic as ledger_logic
from parking.ledger import service as ledger
from parking.ledger.model import TransactionKind
from parking.money import milli_fen_to_fen
from parking.payments.wire import MalformedBill
from parking.payments.wire.alipay import parse_bill_zip
from parking.payments.wire.wechat import TradeBillReader
from parking.reconciliation import logic, store
from parking.reconciliation.model import (
    Discrepancy,
    DiscrepancyClosed,
    DiscrepancyKind,
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
    StatementRefused,
    Totals,
    UnknownDiscrepancy,
)

#: Where kept statement files live, under the stack folder.
STATEMENTS_DIR: Final = "statements"
_CHUNK: Final = 1 << 20
#: report progress every this many lines
PROGRESS_EVERY: Final = 50_000

Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    return None


# ------------------------------------------------------------------ the file


def digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes) of the file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def kept_path(stack_dir: Path, provider: str, day: date, sha256: str, kind: StatementKind) -> Path:
    suffix = ".zip" if kind is StatementKind.ALIPAY else ".csv"
    return stack_dir / STATEMENTS_DIR / provider / day.isoformat() / f"{sha256}{suffix}"


def _text_lines(handle: IO[str], progress: Progress) -> Iterator[str]:
    """The file's lines; a byte that is not UTF-8 is refused naming the line it is on."""
    number = 0
    try:
        for number, line in enumerate(handle, start=1):
            if number % PROGRESS_EVERY == 0:
                progress(number)
            yield line
    except UnicodeDecodeError as exc:
        raise StatementRefused(
            f"line {number + 1}: not UTF-8 text ({exc.reason} at byte {exc.start} of a "
            "read block); a WeChat bill is UTF-8, was it saved in another encoding?"
        ) from exc
    progress(number)


def wechat_lines(path: Path, day: date, progress: Progress = _no_progress) -> Iterator[Line]:
    """The detail lines of a WeChat trade bill file (gzip or not), streamed."""
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = TradeBillReader(_text_lines(handle, progress))
        try:
            for number, text, row in reader.rows():
                yield logic.wechat_line(number, text, row, day)
        except MalformedBill as exc:
            raise StatementRefused(str(exc)) from exc
        except (OSError, EOFError) as exc:  # a truncated gzip
            raise StatementRefused(f"the file cannot be read to its end: {exc}") from exc


def alipay_lines(path: Path, day: date) -> list[Line]:
    """The detail lines of an Alipay bill zip (its detail CSV is read whole: GBK text)."""
    try:
        bill = parse_bill_zip(path.read_bytes())
    except MalformedBill as exc:
        raise StatementRefused(str(exc)) from exc
    return logic.alipay_lines(bill, day)


def statement_kind(provider_kind: str) -> StatementKind:
    try:
        return StatementKind(provider_kind)
    except ValueError as exc:
        raise StatementRefused(f"no parser for statements of kind {provider_kind!r}") from exc


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
    progress: Progress = _no_progress,
) -> ImportResult:
    """Import a day's statement file (caller's transaction; one import of a day at a time).

    The same file again changes nothing. Another file for a day that has one
    raises StatementExists unless ``replace``: then the old import is kept,
    marked replaced by the new. A file that fails any check raises
    StatementRefused and nothing of it is imported. The file is kept, as it
    is, under the stack folder.
    """
    ledger.require_transaction(conn, "reconciliation.import_statement")
    sha256, size = digest(file)
    await store.lock_day(conn, provider, day)
    current = await store.current_import(conn, provider, day)
    if current is not None and current.sha256 == sha256:
        return ImportResult(statement=current, created=False)
    if current is not None and not replace:
        raise StatementExists(
            f"{provider} {day} has a different statement (import {current.id}); "
            "import with --replace to replace it"
        )
    keep = kept_path(stack_dir, provider, day, sha256, kind)
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
            found = wechat_lines(keep, day, progress)
        else:
            found = iter(alipay_lines(keep, day))
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
    progress: Progress = _no_progress,
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
        day, fee_rate_ppm=fee_rate_ppm, pooled=await store.pooled_keys(conn, provider, day)
    )
    groups = 0
    async for group, mine in store.paired(conn, statement.id, provider, day):
        matcher.add(group, mine)
        groups += 1
        if groups % PROGRESS_EVERY == 0:
            progress(matcher.totals.lines)
    progress(matcher.totals.lines)
    outcome = matcher.outcome()
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
        conn, provider, [(new_id("dc", now), f) for f in outcome.found], run_id=done.id, now=now
    )
    await store.withdraw_unfound(conn, provider, day, run_id=done.id)
    return done


def settlement_ref(day: date) -> str:
    return day.isoformat()


async def _settle(
    conn: asyncpg.Connection, provider: str, day: date, totals: Totals, now: datetime
) -> bool:
    """Move what matched out of clearing into the bank, less the provider's fees: one
    ledger transaction per provider and day. False when nothing can be settled (no net
    payment, or fees that eat it)."""
    key = f"{provider}:{settlement_ref(day)}"
    if await ledger.find(conn, TransactionKind.SETTLEMENT, key) is not None:
        return True
    gross, fee = totals.matched_fen, totals.fees_fen
    if gross <= 0 or fee < 0 or fee >= gross:
        return False
    await ledger.post(
        conn,
        ledger_logic.settlement(
            provider=provider,
            settlement_ref=settlement_ref(day),
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
    fee_milli_fen: int | None = None,
) -> Discrepancy:
    """Close the discrepancy with the person's resolution and remark (caller's transaction;
    audited). After ``apply_payment`` applied the line's money (``payments``), the money
    sits in clearing: it is settled into the bank at once, keyed by the discrepancy."""
    check_resolution(found, decision.resolution)
    if decision.resolution is Resolution.APPLY_PAYMENT:
        assert found.provider_fen is not None
        fee = max(0, milli_fen_to_fen(fee_milli_fen or 0))
        if found.provider_fen > fee:
            await ledger.post(
                conn,
                ledger_logic.settlement(
                    provider=found.provider,
                    settlement_ref=f"{settlement_ref(found.business_date)}:{found.id}",
                    gross_fen=found.provider_fen,
                    fee_fen=fee,
                    occurred_at=now,
                    memo=f"applied by finance: {found.out_trade_no}",
                ),
            )
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


async def line_fee(conn: asyncpg.Connection, found: Discrepancy) -> int | None:
    """The provider's fee on the discrepancy's statement line (milli-fen)."""
    if found.line_no is None:
        return None
    return await store.line_fee(conn, found.provider, found.business_date, found.line_no)
