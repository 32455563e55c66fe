"""Reconciliation's nouns: statement lines, our records, discrepancies, runs."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

import msgspec

from parking.errors import Conflict, InvalidInput, NotFound
from parking.money import milli_fen_to_fen

#: A payment or refund of ours waits this many business days for the statement
#: that lists it (a payment at 23:59:59 may be on the next day's) before it is
#: ``missing_at_provider``. Providers issue a statement every calendar day, so a
#: business day here is a calendar day in Asia/Shanghai.
HOLDING_DAYS: Final = 3
#: A fee off the contracted rate by more than this is a ``fee_mismatch``.
FEE_TOLERANCE_FEN: Final = 1

Kind = Literal["payment", "refund"]


class DiscrepancyKind(StrEnum):
    MISSING_AT_PROVIDER = "missing_at_provider"
    MISSING_INTERNALLY = "missing_internally"
    AMOUNT_MISMATCH = "amount_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    DUPLICATE = "duplicate"
    FEE_MISMATCH = "fee_mismatch"


class Resolution(StrEnum):
    #: the provider's line is ours: apply it to its bill through the payment path
    APPLY_PAYMENT = "apply_payment"
    #: the provider is right: our side is corrected by finance outside this tool
    ACCEPT_PROVIDER = "accept_provider"
    #: we are right: the provider corrects its side
    ACCEPT_OURS = "accept_ours"
    #: the difference is written off
    WRITE_OFF = "write_off"


class StatementKind(StrEnum):
    WECHAT = "wechat-tradebill"
    ALIPAY = "alipay-bill-zip"


# ------------------------------------------------------------------ the two sides


class Line(msgspec.Struct, frozen=True):
    """One detail line of a statement, as matched. Amounts are positive fen; a refund's
    fee is the fee given back (negative milli-fen as the provider writes it). Matching
    reads lines without their time and text (a day's run fetches the text of the lines
    it finds a discrepancy on)."""

    line_no: int
    kind: Kind
    #: ``out_trade_no`` for a payment, ``out_refund_no`` for a refund
    match_key: str
    out_trade_no: str
    out_refund_no: str | None
    transaction_id: str
    refund_id: str | None
    state: str
    #: the provider says the money moved (a paid order; a refund done)
    succeeded: bool
    amount_fen: int
    fee_milli_fen: int
    trade_time: datetime | None = None
    line: str | None = None


class Ours(msgspec.Struct, frozen=True):
    """A payment attempt or refund request of ours, as matched."""

    kind: Kind
    match_key: str
    out_trade_no: str
    out_refund_no: str | None
    #: payment_attempts.id or refund_requests.id
    record_id: str
    #: ours says the money moved (attempt paid; refund refunded)
    succeeded: bool
    status: str
    amount_fen: int
    #: the business day it succeeded (None: it did not)
    business_date: date | None
    transaction_id: str | None = None


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """A discrepancy as the matching finds it (the stored one adds id and status)."""

    kind: DiscrepancyKind
    business_date: date
    match_key: str
    out_trade_no: str
    out_refund_no: str | None
    transaction_id: str | None
    refund_id: str | None
    record_id: str | None
    record_kind: Kind
    ours_fen: int | None
    provider_fen: int | None
    line_no: int | None
    line: str | None
    detail: str

    @property
    def dedup_key(self) -> str:
        """The same difference found again is the same discrepancy."""
        where = self.line_no if self.kind is DiscrepancyKind.DUPLICATE else ""
        return f"{self.business_date}:{self.kind}:{self.record_kind}:{self.match_key}:{where}"


class Waiting(msgspec.Struct, frozen=True, kw_only=True):
    """A record of ours in the holding pool."""

    kind: Kind
    match_key: str
    out_trade_no: str
    out_refund_no: str | None
    business_date: date
    ours_fen: int


class Totals(msgspec.Struct, kw_only=True):
    lines: int = 0
    matched: int = 0
    #: matched payments less matched refunds: what the provider pays out
    matched_fen: int = 0
    #: the provider's fees on matched lines (refunded fees taken off), milli-fen
    fees_milli_fen: int = 0
    refunds: int = 0
    refunds_fen: int = 0

    @property
    def fees_fen(self) -> int:
        """Rounded half up to the fen."""
        return milli_fen_to_fen(self.fees_milli_fen)


class Outcome(msgspec.Struct, kw_only=True):
    """What matching a day gives: totals, differences, what waits and what cleared."""

    totals: Totals
    found: list[Found]
    #: our records not on this statement, still within the holding days
    waiting: list[Waiting]
    #: pool entries this statement listed (cleared)
    cleared: list[Waiting]
    #: pool entries past the holding days (each also a missing_at_provider in ``found``)
    missing: list[Waiting]


# ------------------------------------------------------------------ stored views


class StatementImport(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    business_date: date
    kind: str
    sha256: str
    size_bytes: int
    source: str
    path: str
    lines: int
    imported_by: str
    imported_at: datetime
    replaced_at: datetime | None
    replaced_by: str | None


class ImportResult(msgspec.Struct, frozen=True, kw_only=True):
    statement: StatementImport
    #: False: the same file was imported before (nothing changed)
    created: bool
    #: the import this one replaced
    replaced: str | None = None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    business_date: date
    import_id: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    lines: int
    matched: int
    matched_fen: int
    fees_fen: int
    refunds: int
    refunds_fen: int
    discrepancies: int
    pending: int
    settled: bool
    run_by: str


class Discrepancy(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    business_date: date
    kind: str
    status: str
    out_trade_no: str | None
    out_refund_no: str | None
    transaction_id: str | None
    refund_id: str | None
    attempt_id: str | None
    refund_request_id: str | None
    ours_fen: int | None
    provider_fen: int | None
    line_no: int | None
    line: str | None
    detail: str
    found_at: datetime
    resolution: str | None
    remark: str | None
    resolved_by: str | None
    resolved_at: datetime | None


class PendingItem(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    out_trade_no: str | None
    out_refund_no: str | None
    business_date: date
    ours_fen: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """``parking reconcile report --json``: a day as its last run left it."""

    provider: str
    date: date
    lines: int
    matched: int
    matched_fen: int
    fees_fen: int
    refunds: int
    refunds_fen: int
    discrepancies: list[Discrepancy]
    pending: list[PendingItem]
    settled: bool
    run_id: str | None


Remark = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=r"\S")]


class Resolve(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    resolution: Resolution
    remark: Remark


# ------------------------------------------------------------------ errors


class StatementRefused(InvalidInput):
    """The file fails a check: nothing of it is imported."""


class StatementExists(Conflict):
    """Another file for this provider and day was imported: ``--replace`` replaces it."""


class NoStatement(NotFound):
    """No statement was imported for this provider and day."""


class UnknownRun(NotFound):
    """No such reconciliation run."""


class UnknownDiscrepancy(NotFound):
    """No such discrepancy."""


class DiscrepancyClosed(Conflict):
    """The discrepancy was resolved or withdrawn already."""


class ResolutionRefused(InvalidInput):
    """This resolution does not fit this discrepancy."""
