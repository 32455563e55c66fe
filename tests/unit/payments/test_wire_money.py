"""Yuan strings <-> int fen: exact, textual, never through float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parking.payments.wire import WireError
from parking.payments.wire.money import (
    MalformedAmount,
    fen_to_yuan,
    milli_fen_to_yuan,
    yuan_to_fen,
    yuan_to_milli_fen,
)


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("0.01", 1),
        ("0.29", 29),  # 0.29 * 100 == 28.999999999999996 in float
        ("12.30", 1230),
        ("12.3", 1230),
        ("12", 1200),
        ("0", 0),
        ("-0.01", -1),
        ("-12.30", -1230),
        ("-0.00", 0),
        ("99999999999999999999.99", 9999999999999999999999),
    ],
)
def test_yuan_to_fen_reads_plain_decimals_exactly(text: str, fen: int) -> None:
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "0.001",
        "1.234",
        "",
        "-",
        ".5",
        "1.",
        "+1",
        " 1",
        "1 ",
        "01",
        "1e2",
        "NaN",
        "inf",
        "1,000",
        "1_000",
        "１",  # full-width digit: int() would accept it
        "٣",  # Arabic-Indic digit
        "--1",
        "0x10",
    ],
)
def test_yuan_to_fen_refuses_anything_else(text: str) -> None:
    with pytest.raises(MalformedAmount):
        yuan_to_fen(text)


def test_amount_format_error_is_a_value_error_and_a_wire_error() -> None:
    with pytest.raises(ValueError, match="more than 2 decimals"):
        yuan_to_fen("0.001")
    assert issubclass(MalformedAmount, WireError)


@pytest.mark.parametrize(
    ("fen", "text"),
    [(1, "0.01"), (0, "0.00"), (10, "0.10"), (1230, "12.30"), (-1, "-0.01"), (-1230, "-12.30")],
)
def test_fen_to_yuan_writes_exactly_two_decimals(fen: int, text: str) -> None:
    assert fen_to_yuan(fen) == text


@pytest.mark.parametrize("value", [True, 1.0, Decimal(1), "1"])
def test_fen_to_yuan_refuses_non_int(value: object) -> None:
    with pytest.raises(TypeError):
        fen_to_yuan(value)  # type: ignore[arg-type]


def test_fee_amounts_keep_five_decimals_as_milli_fen() -> None:
    assert yuan_to_milli_fen("0.00006") == 6
    assert yuan_to_milli_fen("-0.00006") == -6
    assert yuan_to_milli_fen("0.01") == 1000
    assert milli_fen_to_yuan(6) == "0.00006"
    assert milli_fen_to_yuan(-60) == "-0.00060"
    with pytest.raises(MalformedAmount):
        yuan_to_milli_fen("0.000001")


@given(st.integers())
def test_fen_round_trips_through_yuan(fen: int) -> None:
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@given(st.integers())
def test_milli_fen_round_trips_through_yuan(milli_fen: int) -> None:
    assert yuan_to_milli_fen(milli_fen_to_yuan(milli_fen)) == milli_fen


@given(
    st.decimals(
        places=2, allow_nan=False, allow_infinity=False, max_value=10**15, min_value=-(10**15)
    )
)
def test_yuan_to_fen_agrees_with_decimal_arithmetic(amount: Decimal) -> None:
    text = f"{amount:f}"
    assert yuan_to_fen(text) == int(amount * 100)
    assert fen_to_yuan(yuan_to_fen(text)) == f"{amount:.2f}".replace("-0.00", "0.00")
