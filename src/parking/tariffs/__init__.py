"""Tariff documents (contract v2) and the pure fee engine.

Decode a document at the edge with `decode_tariff` / `tariff_from_dict`, then
price stays with `quote`; `quote_to_json` gives the itemised breakdown, and
`next_step` says until when a running stay's price holds. A document with
`schedules` reads local dates by calendars (`decode_calendar`, `Calendar`); one
with `nev.daily_grace` needs the stay's place of the day (`quote(...,
stay_of_day=n)`, counted by the caller per `Tariff.group`).
"""

from parking.tariffs.calendar import (
    Calendar,
    CalendarError,
    DayClass,
    calendar_from_dict,
    classify,
    decode_calendar,
    decode_calendar_csv,
)
from parking.tariffs.decode import decode_tariff, tariff_from_dict
from parking.tariffs.logic import MAX_LISTED_CHARGES, listed, next_step, quote, quote_to_json
from parking.tariffs.model import (
    Band,
    Cap,
    Charge,
    CycleSum,
    DayType,
    FreeRemainder,
    Grace,
    NevPolicy,
    OmittedCharges,
    Quote,
    QuoteError,
    Schedule,
    Segment,
    Tariff,
    TariffError,
    Tier,
    TiersRestart,
)

__all__ = [
    "MAX_LISTED_CHARGES",
    "Band",
    "Calendar",
    "CalendarError",
    "Cap",
    "Charge",
    "CycleSum",
    "DayClass",
    "DayType",
    "FreeRemainder",
    "Grace",
    "NevPolicy",
    "OmittedCharges",
    "Quote",
    "QuoteError",
    "Schedule",
    "Segment",
    "Tariff",
    "TariffError",
    "Tier",
    "TiersRestart",
    "calendar_from_dict",
    "classify",
    "decode_calendar",
    "decode_calendar_csv",
    "decode_tariff",
    "listed",
    "next_step",
    "quote",
    "quote_to_json",
    "tariff_from_dict",
]
