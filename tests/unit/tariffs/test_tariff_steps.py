"""`next_step`, until when a running stay's price holds, against pricing the stay again
minute by minute: the seeded Ganzhou tariffs, the contract's worked examples, and
generated documents (hypothesis)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit.test_tariffs_v2_examples import (
    BEIJING,
    DAY_TYPES,
    GANZHOU,
    NEV_DAILY,
    NEV_TARIFF,
    OCTOBER,
    REMAINDER,
    RISING,
    SHANGHAI,
    SUIZHOU,
    v2,
)
from unit.test_tariffs_v2_properties import calendar_lists, v2_documents, v2_stays

from parking.tariffs import (
    Calendar,
    QuoteError,
    Tariff,
    decode_tariff,
    next_step,
    quote,
    tariff_from_dict,
)

SEEDED = Path(__file__).resolve().parents[3] / "src/parking/seed/tariffs"
US = timedelta(microseconds=1)
MINUTE = timedelta(minutes=1)

SEEDED_TARIFFS = sorted(SEEDED.glob("*.json"))
CONTRACT_EXAMPLES: dict[str, dict[str, Any]] = {
    "suizhou": SUIZHOU,
    "beijing": BEIJING,
    "ganzhou": GANZHOU,
    "rising": RISING,
    "remainder": REMAINDER,
    "day-types": DAY_TYPES,
    "nev-daily": NEV_DAILY,
    "nev-tariff": NEV_TARIFF,
}

# Entries at odd seconds and microseconds, so a step that is off by the entry's
# fraction of a minute shows; across a band change, midnight and a weekend.
ENTRIES = (
    datetime(2026, 10, 2, 7, 41, 17, 250_000, tzinfo=SHANGHAI),
    datetime(2026, 11, 27, 19, 58, 3, 1, tzinfo=SHANGHAI),
)


def total(
    tariff: Tariff,
    entry: datetime,
    exit: datetime,
    *,
    nev: bool,
    calendars: Sequence[Calendar] = (),
    stay_of_day: int = 1,
) -> int:
    return quote(
        tariff, entry, exit, nev=nev, calendars=calendars, stay_of_day=stay_of_day
    ).total_fen


def check_minute_by_minute(
    tariff: Tariff,
    entry: datetime,
    *,
    nev: bool,
    hours: int = 26,
    calendars: Sequence[Calendar] = (),
    stay_of_day: int = 1,
) -> None:
    """Price the stay at every minute of ``hours`` and check each minute's step against
    the others: it is after the minute, and the total holds at every minute before
    it and at the microsecond before it."""

    def fee(exit: datetime) -> int:
        return total(tariff, entry, exit, nev=nev, calendars=calendars, stay_of_day=stay_of_day)

    minutes = [entry + MINUTE * n for n in range(1, hours * 60 + 1)]
    totals = {moment: fee(moment) for moment in minutes}
    for index, moment in enumerate(minutes):
        step = next_step(
            tariff, entry, moment, nev=nev, calendars=calendars, stay_of_day=stay_of_day
        )
        assert moment < step <= moment + timedelta(days=2)
        for later in minutes[index:]:
            if later >= step:
                break
            assert totals[later] == totals[moment], (moment, later, step)
        before = totals.get(step - US)
        assert (fee(step - US) if before is None else before) == totals[moment], (moment, step)


@pytest.mark.parametrize("path", SEEDED_TARIFFS, ids=lambda p: p.stem)
@pytest.mark.parametrize("nev", [False, True])
def test_the_seeded_tariffs_hold_their_price_until_the_step(path: Path, nev: bool) -> None:
    tariff = decode_tariff(path.read_bytes())
    for entry in ENTRIES:
        check_minute_by_minute(tariff, entry, nev=nev)


@pytest.mark.parametrize("name", sorted(CONTRACT_EXAMPLES))
@pytest.mark.parametrize("nev", [False, True])
def test_the_contract_examples_hold_their_price_until_the_step(name: str, nev: bool) -> None:
    tariff = tariff_from_dict(v2(CONTRACT_EXAMPLES[name]))
    # The stay of the day matters only under a daily grace: the second stay's there.
    stay_of_day = 2 if name == "nev-daily" else 1
    for entry in ENTRIES:
        check_minute_by_minute(
            tariff, entry, nev=nev, calendars=(OCTOBER,), stay_of_day=stay_of_day
        )


def test_an_uncapped_hourly_price_steps_exactly_at_each_unit() -> None:
    # Beijing's day band charges each started 15 minutes: the price rises the
    # microsecond after each quarter hour of the stay, and nowhere else.
    tariff = tariff_from_dict(BEIJING)
    entry = datetime(2026, 11, 27, 9, 0, 0, 500, tzinfo=SHANGHAI)
    at = entry + timedelta(minutes=20)
    step = next_step(tariff, entry, at, nev=False)
    assert step == entry + timedelta(minutes=30) + US
    assert total(tariff, entry, step, nev=False) > total(tariff, entry, step - US, nev=False)


def test_a_unit_that_just_ended_whole_steps_with_the_next_unit() -> None:
    # Under "free" remainders a unit is charged once whole: an exit exactly at its
    # end pays it, and the price next moves when the next unit starts.
    tariff = tariff_from_dict(
        {
            **v2(REMAINDER),
            "bands": [
                {
                    "name": "all-day",
                    "from": "00:00",
                    "to": "00:00",
                    "partial_unit": "free",
                    "tiers": [{"after_minutes": 0, "unit_minutes": 5, "unit_fen": 100}],
                }
            ],
            "grace": {"minutes": 1, "deductible": True},
        }
    )
    entry = datetime(2024, 1, 1, 0, 0, tzinfo=SHANGHAI)
    at = entry + timedelta(minutes=61)
    assert next_step(tariff, entry, at, nev=False) == at + US


def test_a_stay_within_grace_steps_when_the_grace_ends() -> None:
    tariff = tariff_from_dict(SUIZHOU)
    entry = datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)
    assert next_step(tariff, entry, entry + MINUTE, nev=False) == entry + timedelta(minutes=30) + US
    # A new-energy car's grace is two hours there.
    assert next_step(tariff, entry, entry + MINUTE, nev=True) == entry + timedelta(hours=2) + US


def test_a_flat_night_band_holds_until_the_morning_band() -> None:
    tariff = decode_tariff((SEEDED / "ganzhou-core-gated.json").read_bytes())
    entry = datetime(2026, 11, 27, 21, 0, tzinfo=SHANGHAI)
    step = next_step(tariff, entry, entry + timedelta(hours=2), nev=False)
    assert step == datetime(2026, 11, 28, 8, 0, tzinfo=SHANGHAI) + US


def test_a_step_is_asked_for_a_stay_that_has_begun() -> None:
    tariff = tariff_from_dict(SUIZHOU)
    entry = datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)
    with pytest.raises(QuoteError):
        next_step(tariff, entry, entry, nev=False)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_price_holds_until_the_step_of_any_document(data: st.DataObject) -> None:
    tariff = data.draw(v2_documents())
    entry, exit = data.draw(v2_stays(tariff))
    calendars = data.draw(calendar_lists())
    nev = data.draw(st.booleans())
    stay_of_day = data.draw(st.integers(1, 4))
    fee = total(tariff, entry, exit, nev=nev, calendars=calendars, stay_of_day=stay_of_day)
    step = next_step(tariff, entry, exit, nev=nev, calendars=calendars, stay_of_day=stay_of_day)
    assert step > exit
    # The fee never decreases as the exit moves later (tested with the engine), so
    # holding the microsecond before the step is holding everywhere up to it.
    assert (
        total(tariff, entry, step - US, nev=nev, calendars=calendars, stay_of_day=stay_of_day)
        == fee
    )
    # Anywhere in between (a float's rounding may land on the step: stay before it).
    # In UTC: arithmetic on a zone's datetime is by wall clock, wrong across a fold.
    since = exit.astimezone(UTC)
    inside = since + (step - since) * data.draw(st.floats(0, 1, exclude_max=True))
    inside = min(max(inside, since), step - US)
    assert (
        total(tariff, entry, inside, nev=nev, calendars=calendars, stay_of_day=stay_of_day) == fee
    )
