"""Importing a day's statement into the real PostgreSQL: verbatim lines by COPY, the
same file once, another file only with --replace (history kept), and a file that
fails any check refused whole with the line it failed on."""

from __future__ import annotations

import gzip
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
from statement_kit import (
    alipay_file,
    alipay_payment,
    at,
    wechat_file,
    wechat_payment,
    wechat_refund,
)

from parking.payments.wire import alipay as ali
from parking.reconciliation import service
from parking.reconciliation.model import (
    ImportResult,
    StatementExists,
    StatementKind,
    StatementRefused,
)

DAY = date(2026, 12, 2)
NOW = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def day_file() -> bytes:
    return wechat_file(
        [
            wechat_payment("ORDER-0001", 500, at(DAY, 8)),
            wechat_payment("ORDER-0002", 1200, at(DAY, 9)),
            wechat_refund("ORDER-0001", "REFUND-0001", 200, 500, at(DAY, 10)),
        ]
    )


async def import_bytes(
    conn: asyncpg.Connection,
    tmp_path: Path,
    content: bytes,
    *,
    name: str = "bill.csv",
    kind: StatementKind = StatementKind.WECHAT,
    provider: str = "wechat",
    replace: bool = False,
) -> ImportResult:
    file = tmp_path / name
    file.write_bytes(content)
    async with conn.transaction():
        return await service.import_statement(
            conn,
            provider=provider,
            day=DAY,
            kind=kind,
            file=file,
            source="imported",
            stack_dir=tmp_path / "stack",
            by="finance:test",
            now=NOW,
            replace=replace,
        )


def read(path: Path) -> bytes:
    return path.read_bytes()


async def imported(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM statement_imports"))


async def test_every_line_is_stored_verbatim_and_the_file_is_kept(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    content = day_file()
    result = await import_bytes(db, tmp_path, content)
    assert result.created
    assert result.statement.lines == 3
    rows = await db.fetch(
        "SELECT line_no, kind, match_key, amount_fen, fee_milli_fen, line FROM statement_lines "
        "ORDER BY line_no"
    )
    text_lines = (
        content.decode().split("\r\n") if b"\r\n" in content else content.decode().split("\n")
    )
    for row in rows:
        assert row["line"] == text_lines[row["line_no"] - 1]
    assert [(r["kind"], r["match_key"], r["amount_fen"]) for r in rows] == [
        ("payment", "ORDER-0001", 500),
        ("payment", "ORDER-0002", 1200),
        ("refund", "REFUND-0001", 200),
    ]
    assert [r["fee_milli_fen"] for r in rows] == [3000, 7000, -1000]
    kept = Path(result.statement.path)
    assert read(kept) == content
    assert kept.is_relative_to(tmp_path / "stack" / "statements" / "wechat" / DAY.isoformat())


async def test_the_same_file_again_changes_nothing_and_another_needs_replace(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    first = await import_bytes(db, tmp_path, day_file())
    again = await import_bytes(db, tmp_path, day_file(), name="again.csv")
    assert not again.created
    assert again.statement.id == first.statement.id
    assert await imported(db) == 1
    other = wechat_file([wechat_payment("ORDER-0009", 800, at(DAY, 11))])
    with pytest.raises(StatementExists, match="--replace"):
        await import_bytes(db, tmp_path, other, name="other.csv")
    replaced = await import_bytes(db, tmp_path, other, name="other.csv", replace=True)
    assert replaced.created
    assert replaced.replaced == first.statement.id
    history = await service.imports(db, "wechat", DAY)
    assert [(s.id, s.replaced_by) for s in history] == [
        (first.statement.id, replaced.statement.id),
        (replaced.statement.id, None),
    ]
    current = await service.current_statement(db, "wechat", DAY)
    assert current is not None
    assert current.id == replaced.statement.id
    # the replaced import's lines stay, as history
    assert (
        await db.fetchval(
            "SELECT count(*) FROM statement_lines WHERE import_id = $1", first.statement.id
        )
        == 3
    )


def _swap(content: bytes, old: str, new: str) -> bytes:
    text = content.decode("utf-8")
    assert old in text
    return text.replace(old, new, 1).encode("utf-8")


def _truncated(content: bytes) -> bytes:
    lines = content.split(b"\n")
    return b"\n".join(lines[:3])


@pytest.mark.parametrize(
    ("case", "mangle", "says"),
    [
        (
            "unknown header",
            lambda c: _swap(c, "商户订单号", "商家单号"),
            "line 1: detail header lacks 商户订单号",
        ),
        (
            "totals disagree",
            lambda c: _swap(c, "`3,`", "`4,`"),
            "(summary): trade_count: summary says 4",
        ),
        ("truncated", _truncated, "is the file truncated?"),
        ("GBK read as UTF-8", lambda c: c.decode("utf-8").encode("gbk"), "line 1: not UTF-8 text"),
        (
            "another day",
            lambda c: _swap(c, "2026-12-02 09:00:00", "2026-12-03 09:00:00"),
            "line 3: dated 2026-12-03, the statement is for 2026-12-02",
        ),
    ],
)
async def test_a_file_failing_a_check_is_refused_whole_naming_the_line(
    db: asyncpg.Connection,
    tmp_path: Path,
    case: str,
    mangle,
    says: str,  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(StatementRefused) as refused:
        await import_bytes(db, tmp_path, mangle(day_file()))
    assert says in str(refused.value), (case, str(refused.value))
    assert await imported(db) == 0
    assert await db.fetchval("SELECT count(*) FROM statement_lines") == 0
    assert not list((tmp_path / "stack").rglob("*.csv"))


async def test_legacy_headers_and_gzip_parse_to_the_same_lines(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    legacy = day_file()
    for new, old in (
        ("应结订单金额", "总金额"),
        ("代金券金额", "企业红包金额"),
        ("应结订单总金额", "总交易额"),
        ("充值券退款总金额", "总企业红包退款金额"),
    ):
        legacy = _swap(legacy, new, old)
    result = await import_bytes(db, tmp_path, gzip.compress(legacy), name="legacy.csv.gz")
    assert result.statement.lines == 3
    assert await db.fetchval("SELECT sum(amount_fen) FROM statement_lines") == 500 + 1200 + 200


async def test_an_alipay_bill_zip_imports_payments_and_refunds(
    db: asyncpg.Connection, tmp_path: Path
) -> None:
    refund = ali.AlipayBillRow(
        **{
            **{
                f: getattr(alipay_payment("ALI-0001", 300, at(DAY, 14)), f)
                for f in ali.AlipayBillRow.__struct_fields__
            },
            "business_type": ali.BusinessType.REFUND,
            "order_amount_fen": -300,
            "merchant_received_fen": -300,
            "refund_request_no": "ALI-R-0001",
            "service_fee_fen": -2,
        }
    )
    content = alipay_file([alipay_payment("ALI-0001", 300, at(DAY, 13)), refund], DAY)
    result = await import_bytes(
        db, tmp_path, content, name="bill.zip", kind=StatementKind.ALIPAY, provider="alipay"
    )
    assert result.statement.lines == 2
    rows = await db.fetch(
        "SELECT kind, match_key, amount_fen, fee_milli_fen, line FROM statement_lines "
        "ORDER BY line_no"
    )
    assert [(r["kind"], r["match_key"], r["amount_fen"], r["fee_milli_fen"]) for r in rows] == [
        ("payment", "ALI-0001", 300, 2000),
        ("refund", "ALI-R-0001", 300, -2000),
    ]
    assert all("ALI-0001" in r["line"] for r in rows)
