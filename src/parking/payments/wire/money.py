"""Exact conversion between the providers' yuan strings and integer fen.

Providers put amounts on the wire as decimal yuan strings (``"0.01"``); the
platform holds money as ``int`` fen. The conversion is textual, never through
``float`` (``0.29 * 100 == 28.999999999999996``) and never rounds: a string
with more decimals than the unit can carry is refused rather than guessed at.

WeChat's bill fee column (``手续费``) has 5 decimals, i.e. thousandths of a fen;
it is held exactly as an ``int`` of milli-fen (1 fen == 1000 milli-fen).

No ``src/parking/money.py`` existed when this was written, so these helpers are
local to the payments wire package; fold them into the shared kernel if one
appears.
"""

from __future__ import annotations

import functools
import re

from parking.payments.wire import WireError

__all__ = [
    "MalformedAmount",
    "fen_to_yuan",
    "milli_fen_to_yuan",
    "yuan_to_fen",
    "yuan_to_milli_fen",
]

_FEN_PLACES = 2
_MILLI_FEN_PLACES = 5

# ASCII digits only: ``str.isdigit`` and ``int()`` also take full-width and
# other Unicode digits and ``_`` separators, none of which a provider sends.
_DECIMAL = re.compile(r"(-)?(0|[1-9][0-9]*)(?:\.([0-9]+))?", re.ASCII)


class MalformedAmount(WireError, ValueError):
    """An amount string is not a plain decimal with at most the allowed places."""


@functools.lru_cache(maxsize=8192)
def _parse(text: str, places: int) -> int:
    # Cached: a statement of a million lines repeats a few hundred fees and amounts.
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise MalformedAmount(f"not a decimal yuan amount: {text!r}")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > places:
        raise MalformedAmount(f"{text!r} has more than {places} decimals")
    scale: int = 10**places
    units = int(whole) * scale + int(fraction.ljust(places, "0") or "0")
    return -units if sign else units


def _format(units: int, places: int) -> str:
    # bool is an int subclass; True yuan is a bug, not an amount.
    if type(units) is not int:
        raise TypeError(f"amount must be an int, got {type(units).__name__}")
    scale: int = 10**places
    whole, fraction = divmod(abs(units), scale)
    sign = "-" if units < 0 else ""
    return f"{sign}{whole}.{fraction:0{places}d}"


def yuan_to_fen(text: str) -> int:
    """``"12.30"`` -> ``1230``; ``"-0.01"`` -> ``-1`` (Alipay refund rows).

    Accepts 0 to 2 decimals; refuses more, exponents, ``+``, spaces, leading
    zeros and non-ASCII digits with ``MalformedAmount``.
    """
    return _parse(text, _FEN_PLACES)


def fen_to_yuan(fen: int) -> str:
    """``1`` -> ``"0.01"``, ``-1230`` -> ``"-12.30"``: always exactly 2 decimals."""
    return _format(fen, _FEN_PLACES)


def yuan_to_milli_fen(text: str) -> int:
    """``"0.00006"`` -> ``6``: up to 5 decimals of yuan, as thousandths of a fen."""
    return _parse(text, _MILLI_FEN_PLACES)


def milli_fen_to_yuan(milli_fen: int) -> str:
    """``6`` -> ``"0.00006"``: always exactly 5 decimals, as WeChat's fee column."""
    return _format(milli_fen, _MILLI_FEN_PLACES)
