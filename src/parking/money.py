"""Money as integer fen (分, the CNY minor unit).

Every amount in the platform is an `int` of fen; floats never touch money, so a
bill re-computed by an auditor matches to the fen.
"""

Fen = int


def format_yuan(fen: Fen) -> str:
    """Render fen as yuan with two decimals: 300 -> "3.00", -5 -> "-0.05"."""
    sign = "-" if fen < 0 else ""
    yuan, rest = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{rest:02d}"


def milli_fen_to_fen(milli_fen: int) -> Fen:
    """Thousandths of a fen (a provider's fee, 5 decimals of yuan) rounded half up to the fen,
    symmetric about zero."""
    sign = -1 if milli_fen < 0 else 1
    return sign * ((abs(milli_fen) + 500) // 1000)
