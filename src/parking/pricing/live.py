"""Running stays' fees, each kept until its next price step (a driver's home screen).

Pricing walks the stay's tariff unit by unit, tens of microseconds for a stay of
hours, and a driver's app asks for the same stay's fee again and again while it
cannot have changed. A `LiveFees` keeps each session's answer with the instant
it may next change (`logic.next_step`) and answers from it until then.

An answer is reused only for the same question: the same session, lot, plate,
entry and stay of the day, under the same rules snapshot (the lots' tariffs and
their versions, class overrides, exemptions, passes, calendars: `Pricer.refresh`
swaps the snapshot and empties the cache), and for a time from the one it was
priced at up to, not including, its next step. Nothing else moves a stay's
price: the vehicle class follows from the plate and the rules.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec

from parking.pricing import logic
from parking.pricing.model import Rules

#: Sessions kept per pricer: a worker's drivers looking at their stays. Beyond
#: it the least recently asked is dropped (it is priced again when asked).
MAX_SESSIONS: Final = 10_000


class LiveFee(msgspec.Struct, frozen=True, kw_only=True):
    """What a running stay costs now and why (a `PricedStay` without the itemised
    quote, which names its exit time and so is not reused)."""

    fee_fen: int
    tariff_id: str | None
    tariff_version: int | None
    vehicle_class: int
    reason: str
    #: the first instant it may cost more; None: never, under these rules
    until: datetime | None


#: (lot, plate, entry, stay of the day); the vehicle class follows from the plate
#: and the rules (their class overrides), so it is the same question under them.
_Question = tuple[str, str | None, datetime, int]


@dataclass(frozen=True, slots=True)
class _Held:
    rules: Rules
    question: _Question
    since: datetime
    fee: LiveFee
    #: whether the price depends on the stay's index of the day (``daily_grace_count``)
    by_day: bool


class LiveFees:
    """Session id -> its last live fee, least recently asked first."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._max = max_sessions

    def clear(self) -> None:
        self._held.clear()

    def __len__(self) -> int:
        return len(self._held)

    def held(
        self,
        rules: Rules,
        *,
        session_id: str,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        at: datetime,
        stay_of_day: int = 1,
    ) -> LiveFee | None:
        """The stay's kept fee when it still holds at ``at`` and does not depend on the
        stay's index of the day (so that needs no counting); None otherwise."""
        found = self._kept(rules, session_id, (lot_id, plate, entry, stay_of_day), at)
        return None if found is None or found.by_day else found.fee

    def fee(
        self,
        rules: Rules,
        *,
        session_id: str,
        lot_id: str,
        plate: str | None,
        entry: datetime,
        at: datetime,
        stay_of_day: int = 1,
    ) -> LiveFee:
        """The stay's fee were it to end at ``at``; raises PricingError as pricing does
        (nothing is kept then)."""
        question = (lot_id, plate, entry, stay_of_day)
        found = self._kept(rules, session_id, question, at)
        if found is not None:
            return found.fee
        parsed = logic.plate_or_none(plate)
        priced = logic.price(
            rules, lot_id=lot_id, plate=parsed, entry=entry, exit=at, stay_of_day=stay_of_day
        )
        fee = LiveFee(
            fee_fen=priced.fee_fen,
            tariff_id=priced.tariff_id,
            tariff_version=priced.tariff_version,
            vehicle_class=priced.vehicle_class,
            reason=priced.reason,
            until=logic.next_step(
                rules, lot_id=lot_id, plate=parsed, entry=entry, at=at, stay_of_day=stay_of_day
            ),
        )
        by_day = logic.daily_grace_count(rules, lot_id=lot_id, plate=parsed, entry=entry)
        self._held[session_id] = _Held(
            rules=rules, question=question, since=at, fee=fee, by_day=by_day is not None
        )
        self._held.move_to_end(session_id)
        while len(self._held) > self._max:
            self._held.popitem(last=False)
        return fee

    def _kept(
        self, rules: Rules, session_id: str, question: _Question, at: datetime
    ) -> _Held | None:
        found = self._held.get(session_id)
        if (
            found is None
            or found.rules is not rules
            or found.question != question
            or at < found.since
            or (found.fee.until is not None and at >= found.fee.until)
        ):
            return None
        self._held.move_to_end(session_id)
        return found
