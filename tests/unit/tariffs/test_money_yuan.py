"""Rendering fen as yuan for receipts and summaries."""

import pytest

from parking.money import format_yuan


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (300, "3.00"),
        (2050, "20.50"),
        (123456789, "1234567.89"),
        (-5, "-0.05"),
        (-250, "-2.50"),
    ],
)
def test_format_yuan_has_two_decimals_and_no_float_rounding(fen: int, text: str) -> None:
    assert format_yuan(fen) == text
