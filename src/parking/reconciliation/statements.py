"""Statement files: kept as downloaded, read as lines (a WeChat bill streamed, gzip or
not; an Alipay bill zip's GBK detail file), every failed check a StatementRefused that
names the line."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Final

from parking.payments.wire import MalformedBill
from parking.payments.wire.alipay import parse_bill_zip
from parking.payments.wire.wechat import TradeBillReader
from parking.reconciliation import logic
from parking.reconciliation.model import Line, StatementKind, StatementRefused

#: Where kept statement files live, under the stack folder.
STATEMENTS_DIR: Final = "statements"
_CHUNK: Final = 1 << 20
#: report progress every this many lines
PROGRESS_EVERY: Final = 50_000

Progress = Callable[[int], None]


def no_progress(_: int) -> None:
    return None


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


def wechat_lines(path: Path, day: date, progress: Progress = no_progress) -> Iterator[Line]:
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
