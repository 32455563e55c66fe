"""Tariff documents (contract v1) and the pure fee engine.

Decode a document at the edge with `decode_tariff` / `tariff_from_dict`, then
price stays with `quote`; `quote_to_json` gives the itemised breakdown.
"""

from parking.tariffs.decode import decode_tariff, tariff_from_dict
from parking.tariffs.logic import MAX_LISTED_CHARGES, listed, quote, quote_to_json
from parking.tariffs.model import (
    Band,
    Cap,
    Charge,
    CycleSum,
    Grace,
    NevPolicy,
    OmittedCharges,
    Quote,
    QuoteError,
    Segment,
    Tariff,
    TariffError,
    Tier,
)

__all__ = [
    "MAX_LISTED_CHARGES",
    "Band",
    "Cap",
    "Charge",
    "CycleSum",
    "Grace",
    "NevPolicy",
    "OmittedCharges",
    "Quote",
    "QuoteError",
    "Segment",
    "Tariff",
    "TariffError",
    "Tier",
    "decode_tariff",
    "listed",
    "quote",
    "quote_to_json",
    "tariff_from_dict",
]
