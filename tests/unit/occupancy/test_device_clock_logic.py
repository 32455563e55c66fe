"""The pure clock rules of contracts/mqtt.md "Clocks": offset median, correction, review."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from parking.occupancy import logic
from parking.occupancy.model import ReviewLimits

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_a_sample_is_sent_at_minus_received_at_in_ms() -> None:
    assert logic.offset_sample(NOW + timedelta(seconds=90), NOW) == 90_000
    assert logic.offset_sample(NOW - timedelta(milliseconds=250), NOW) == -250


def test_the_offset_is_the_median_of_the_samples_and_none_without_any() -> None:
    assert logic.median_offset([]) is None
    assert logic.median_offset([5]) == 5
    assert logic.median_offset([300, -10, 20]) == 20
    # an even count takes the lower middle: always an offset that was measured
    assert logic.median_offset([0, 0, 600_000, 600_000]) == 0


@given(
    st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=3),
    st.integers(-1000, 1000),
)
def test_a_minority_of_outliers_never_moves_the_offset_off_the_majority(
    outliers: list[int], true_offset: int
) -> None:
    samples = [true_offset] * (len(outliers) + 1) + outliers
    assert logic.median_offset(samples) == true_offset


def test_an_offset_beyond_60_s_either_way_corrects_the_time_by_the_offset() -> None:
    observed = datetime(2036, 2, 1, tzinfo=UTC)
    offset = logic.offset_sample(observed, NOW)
    reading = logic.read_clock(
        observed_at=observed, sent_at=observed, received_at=NOW, offset_ms=offset
    )
    assert (reading.at, reading.offset_ms, reading.skew) == (NOW, offset, "offset")
    behind = logic.read_clock(
        observed_at=NOW - timedelta(minutes=5),
        sent_at=NOW - timedelta(minutes=5),
        received_at=NOW,
        offset_ms=-300_000,
    )
    assert (behind.at, behind.skew) == (NOW, "offset")


def test_an_offset_within_60_s_keeps_the_devices_time() -> None:
    observed = NOW - timedelta(seconds=3)
    reading = logic.read_clock(observed_at=observed, sent_at=NOW, received_at=NOW, offset_ms=60_000)
    assert (reading.at, reading.offset_ms, reading.skew) == (observed, 60_000, None)


def test_a_v1_message_observed_after_it_arrived_is_taken_as_received() -> None:
    ahead = logic.read_clock(
        observed_at=NOW + timedelta(seconds=61), sent_at=None, received_at=NOW, offset_ms=None
    )
    assert (ahead.at, ahead.offset_ms, ahead.skew) == (NOW, None, "ahead")
    # a backlog drained after an outage is old, not wrong: its time stands
    old = NOW - timedelta(days=8)
    backlog = logic.read_clock(observed_at=old, sent_at=None, received_at=NOW, offset_ms=None)
    assert (backlog.at, backlog.skew) == (old, None)
    # a v1 message ignores an offset measured from the device's earlier v1.1 copies
    within = logic.read_clock(
        observed_at=NOW + timedelta(seconds=60), sent_at=None, received_at=NOW, offset_ms=900_000
    )
    assert (within.at, within.skew) == (NOW + timedelta(seconds=60), None)


def test_a_stay_past_the_lots_limits_needs_review() -> None:
    limits = ReviewLimits()
    assert (limits.stay, limits.fee_fen) == (timedelta(days=7), 20_000)
    assert logic.needs_review(NOW, NOW + timedelta(days=7), 500, limits) is None
    assert logic.needs_review(NOW, NOW + timedelta(days=7, seconds=1), 500, limits) == "long_stay"
    assert logic.needs_review(NOW, NOW + timedelta(hours=2), 20_000, limits) is None
    assert logic.needs_review(NOW, NOW + timedelta(hours=2), 20_001, limits) == "high_fee"
    strict = ReviewLimits(stay=timedelta(hours=1), fee_fen=100)
    assert logic.needs_review(NOW, NOW + timedelta(hours=2), 50, strict) == "long_stay"


def test_a_message_the_broker_may_have_held_counts_only_when_it_shows_the_clock_ahead() -> None:
    # a wait in a queue makes sent_at early, never late
    assert logic.counts_as_sample(-300_000, held=False)
    assert not logic.counts_as_sample(-300_000, held=True)
    assert not logic.counts_as_sample(0, held=True)
    assert logic.counts_as_sample(315_000_000_000, held=True)
    assert logic.counts_as_sample(5, held=False)
