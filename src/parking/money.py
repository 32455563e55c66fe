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
