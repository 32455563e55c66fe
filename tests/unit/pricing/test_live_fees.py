"""A running stay's fee is kept until its next price step and priced again after it, or
as soon as anything it depends on differs (parking.pricing.live)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parking.pricing import logic
from parking.pricing.live import LiveFees
from parking.pricing.model import MonthlyPass, PricingError, Rules, TariffVersion
from parking.tariffs import decode_tariff, tariff_from_dict

SEEDED = Path(__file__).resolve().parents[3] / "src/parking/seed/tariffs"
LOT = "GZ-DEMO-01"
PLATE = "赣B12345"
NEV_PLATE = "赣BD12345"
ENTRY = datetime(2026, 11, 27, 1, 0, 7, tzinfo=UTC)  # 09:00:07 in Ganzhou
US = timedelta(microseconds=1)


def rules(**changes: object) -> Rules:
    tariff = decode_tariff((SEEDED / "ganzhou-core-gated.json").read_bytes())
    base = Rules(
        lot_tariffs={LOT: {1: tariff.id}},
        versions={
            tariff.id: (
                TariffVersion(
                    tariff_id=tariff.id,
                    version=1,
                    effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                    tariff=tariff,
                ),
            )
        },
    )
    for name, value in changes.items():
        getattr(base, name).update(value)
    return base


@pytest.fixture
def priced(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The exits the engine priced (the fees not answered from what was kept)."""
    exits: list[datetime] = []
    price = logic.price

    def counting(*args: object, **kwargs: object) -> object:
        exits.append(kwargs["exit"])  # type: ignore[arg-type]
        return price(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(logic, "price", counting)
    return exits


def ask(fees: LiveFees, snapshot: Rules, at: datetime, **changes: object) -> int:
    question: dict[str, object] = {
        "session_id": "s-1",
        "lot_id": LOT,
        "plate": PLATE,
        "entry": ENTRY,
        "at": at,
        "stay_of_day": 1,
    } | changes
    return fees.fee(snapshot, **question).fee_fen  # type: ignore[arg-type]


def test_a_fee_is_kept_until_its_step_and_priced_again_there(priced: list[datetime]) -> None:
    fees, snapshot = LiveFees(), rules()
    first = fees.fee(
        snapshot,
        session_id="s-1",
        lot_id=LOT,
        plate=PLATE,
        entry=ENTRY,
        at=ENTRY + timedelta(minutes=95),
    )
    assert first.until == ENTRY + timedelta(hours=2) + US
    for minutes in (96, 100, 119):
        assert ask(fees, snapshot, ENTRY + timedelta(minutes=minutes)) == first.fee_fen
    assert ask(fees, snapshot, first.until - US) == first.fee_fen
    assert len(priced) == 1
    assert ask(fees, snapshot, first.until) > first.fee_fen
    assert priced == [ENTRY + timedelta(minutes=95), first.until]


def test_an_earlier_time_than_the_one_priced_is_priced_again(priced: list[datetime]) -> None:
    fees, snapshot = LiveFees(), rules()
    ask(fees, snapshot, ENTRY + timedelta(minutes=95))
    ask(fees, snapshot, ENTRY + timedelta(minutes=94))
    assert len(priced) == 2


@pytest.mark.parametrize(
    "changed",
    [
        {"session_id": "s-2"},
        {"lot_id": "GZ-OTHER"},
        {"plate": "赣B54321"},
        {"entry": ENTRY + US},
        {"stay_of_day": 2},
    ],
)
def test_any_other_question_is_priced_again(
    priced: list[datetime], changed: dict[str, object]
) -> None:
    fees, snapshot = LiveFees(), rules()
    snapshot.lot_tariffs["GZ-OTHER"] = snapshot.lot_tariffs[LOT]
    ask(fees, snapshot, ENTRY + timedelta(minutes=95))
    ask(fees, snapshot, ENTRY + timedelta(minutes=96), **changed)
    assert len(priced) == 2


def test_new_rules_are_priced_again_even_when_equal(priced: list[datetime]) -> None:
    fees = LiveFees()
    ask(fees, rules(), ENTRY + timedelta(minutes=95))
    ask(fees, rules(), ENTRY + timedelta(minutes=96))
    assert len(priced) == 2


def test_an_exempt_plate_is_free_until_the_rules_change() -> None:
    fees = LiveFees()
    free = fees.fee(
        rules(exempt_plates={PLATE: {None: "police"}}),
        session_id="s-1",
        lot_id=LOT,
        plate=PLATE,
        entry=ENTRY,
        at=ENTRY + timedelta(hours=3),
    )
    assert (free.fee_fen, free.reason, free.until) == (0, "exempt:police", None)


def test_a_stay_under_a_monthly_pass_holds_until_the_pass_ends() -> None:
    ends = ENTRY + timedelta(hours=5)
    covered = MonthlyPass(
        id="p-1", lots=frozenset({LOT}), valid_from=ENTRY - timedelta(days=1), valid_until=ends
    )
    fee = LiveFees().fee(
        rules(passes={PLATE: (covered,)}),
        session_id="s-1",
        lot_id=LOT,
        plate=PLATE,
        entry=ENTRY,
        at=ENTRY + timedelta(hours=3),
    )
    assert (fee.fee_fen, fee.until) == (0, ends + US)


def test_a_stay_the_lot_cannot_price_is_an_error_and_nothing_is_kept() -> None:
    fees = LiveFees()
    with pytest.raises(PricingError):
        fees.fee(
            rules(),
            session_id="s-1",
            lot_id="nowhere",
            plate=PLATE,
            entry=ENTRY,
            at=ENTRY + timedelta(hours=1),
        )
    assert len(fees) == 0


def test_the_least_recently_asked_session_goes_first() -> None:
    fees, snapshot = LiveFees(max_sessions=2), rules()
    at = ENTRY + timedelta(hours=1)
    for session in ("s-1", "s-2", "s-1", "s-3"):
        ask(fees, snapshot, at, session_id=session)
    assert len(fees) == 2
    assert fees.held(snapshot, session_id="s-1", lot_id=LOT, plate=PLATE, entry=ENTRY, at=at)
    assert (
        fees.held(snapshot, session_id="s-2", lot_id=LOT, plate=PLATE, entry=ENTRY, at=at) is None
    )


NEV_DAILY_GRACE = {
    "version": 2,
    "id": "nev-daily",
    "name": "新能源 每日免费",
    "currency": "CNY",
    "bands": [
        {
            "name": "all-day",
            "from": "00:00",
            "to": "00:00",
            "tiers": [{"after_minutes": 0, "unit_minutes": 30, "unit_fen": 300}],
        }
    ],
    "nev": {"daily_grace": [{"minutes": 120, "deductible": True}], "percent": 100},
}


def test_a_fee_that_depends_on_the_stay_of_the_day_is_not_answered_without_it() -> None:
    tariff = tariff_from_dict(NEV_DAILY_GRACE)
    snapshot = rules(
        lot_tariffs={LOT: {1: tariff.id}},
        versions={
            tariff.id: (
                TariffVersion(
                    tariff_id=tariff.id,
                    version=1,
                    effective_from=ENTRY - timedelta(days=1),
                    tariff=tariff,
                ),
            )
        },
    )
    fees, at = LiveFees(), ENTRY + timedelta(hours=3)
    question = {"session_id": "s-1", "lot_id": LOT, "entry": ENTRY, "at": at}
    fees.fee(snapshot, plate=NEV_PLATE, **question)  # type: ignore[arg-type]
    fees.fee(snapshot, plate=PLATE, session_id="s-2", lot_id=LOT, entry=ENTRY, at=at)
    assert fees.held(snapshot, plate=NEV_PLATE, **question) is None  # type: ignore[arg-type]
    assert fees.held(snapshot, plate=PLATE, session_id="s-2", lot_id=LOT, entry=ENTRY, at=at)
