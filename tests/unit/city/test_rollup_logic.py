"""The rollups' arithmetic: buckets, scopes, a day from its hours, quantiles, series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parking.city import logic
from parking.city.model import ADDED, LANE_BOUNDS_MS, Metric, Rollup, Step
from parking.lots.model import Lot


def _lot(lot_id: str, district: str, company: str | None, capacity: int) -> Lot:
    return Lot(
        id=lot_id,
        name=lot_id,
        district_code=district,
        kind="gated",
        capacity=capacity,
        latitude=25.8,
        longitude=114.9,
        company_id=company,
    )


LOTS = [_lot("L1", "ZG", "c1", 100), _lot("L2", "ZG", None, 50), _lot("L3", "NK", "c1", 10)]


def test_the_hours_to_refresh_are_the_marked_ones_this_hour_and_the_last() -> None:
    now = datetime(2026, 12, 3, 10, 25, tzinfo=UTC)
    old = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    assert logic.hours_to_refresh([old, old], now) == [
        old,
        datetime(2026, 12, 3, 9, tzinfo=UTC),
        datetime(2026, 12, 3, 10, tzinfo=UTC),
    ]


def test_a_business_day_starts_at_midnight_in_shanghai() -> None:
    # 15:59 UTC is 23:59 in Shanghai; 16:00 UTC is the next day's 00:00
    assert logic.day_start(datetime(2026, 12, 3, 15, 59, tzinfo=UTC)) == datetime(
        2026, 12, 2, 16, tzinfo=UTC
    )
    assert logic.day_start(datetime(2026, 12, 3, 16, 0, tzinfo=UTC)) == datetime(
        2026, 12, 3, 16, tzinfo=UTC
    )
    start = datetime(2026, 12, 1, 16, tzinfo=UTC)
    assert logic.buckets(Step.DAY, start, start + timedelta(days=3)) == [
        start,
        start + timedelta(days=1),
        start + timedelta(days=2),
    ]
    assert len(logic.buckets(Step.HOUR, start, start + timedelta(days=1))) == 24
    # a bucket starts inside the span or is not in it
    assert logic.buckets(Step.HOUR, start + timedelta(minutes=1), start + timedelta(hours=2)) == [
        start + timedelta(hours=1)
    ]


def _counted(lot_id: str, **figures: float) -> dict[str, float | str]:
    row: dict[str, float | str] = {"lot_id": lot_id}
    for name in ADDED:
        row[name] = figures.get(name, 0)
    return row


def test_an_hour_sums_its_lots_into_every_scope_they_count_in() -> None:
    hour = datetime(2026, 12, 3, 2, tzinfo=UTC)
    rows = {
        r.scope: r
        for r in logic.roll_up_hour(
            [_counted("L1", entries=3, billed_fen=500), _counted("L3", entries=1, exits=2)],
            LOTS,
            {"city": 1200.0},
            hour,
        )
    }
    assert set(rows) == {"city", "district:ZG", "district:NK", "company:c1", "lot:L1", "lot:L3"}
    assert (rows["city"].entries, rows["city"].exits, rows["city"].billed_fen) == (4, 2, 500)
    assert rows["city"].capacity == 160
    assert rows["district:ZG"].capacity == 150  # L2 is quiet but its spaces count
    assert rows["company:c1"].entries == 4
    assert rows["city"].stay_median_s == 1200.0
    assert rows["lot:L1"].stay_median_s is None
    # a quiet hour still has the city's row
    assert [r.scope for r in logic.roll_up_hour([], LOTS, {}, hour)] == ["city"]


def test_a_day_sums_its_hours_keeps_the_peak_and_the_latest_device_count() -> None:
    day = datetime(2026, 12, 2, 16, tzinfo=UTC)
    hours = [
        Rollup(
            scope="city",
            step=Step.HOUR,
            bucket=day + timedelta(hours=h),
            capacity=160,
            entries=h,
            occupied_peak=peak,
            occupied_last=peak,
            devices=10,
            devices_online=online,
            lane_buckets=[1, 2] if h else None,
        )
        for h, peak, online in ((0, 5, 10), (1, 9, 8), (2, 7, 6))
    ]
    [row] = logic.roll_up_day(hours, {"city": 60.0}, day)
    assert (row.step, row.bucket, row.entries, row.capacity) == (Step.DAY, day, 3, 160)
    assert (row.occupied_peak, row.devices, row.devices_online) == (9, 10, 6)
    assert row.lane_buckets == [2, 4]
    assert row.stay_median_s == 60.0


def test_quantiles_interpolate_inside_a_bucket() -> None:
    counts = [0] * (len(LANE_BOUNDS_MS) + 1)
    counts[logic.bucket_of_ms(3)] = 100  # all in (2, 5] ms
    assert logic.quantile(counts, 0.5) == 3.5
    assert logic.quantile(counts, 0.99) == pytest.approx(4.97)
    counts[-1] = 100  # the other half above the last bound
    assert logic.quantile(counts, 0.99) == float(LANE_BOUNDS_MS[-1])
    assert logic.quantile([0, 0], 0.5) is None
    assert logic.bucket_of_ms(0.2) == 0
    assert logic.bucket_of_ms(1e9) == len(LANE_BOUNDS_MS)


def test_a_series_fills_quiet_buckets_and_carries_arrears_outstanding() -> None:
    start = datetime(2026, 12, 3, 0, tzinfo=UTC)
    wanted = logic.buckets(Step.HOUR, start, start + timedelta(hours=3))
    rows = [
        Rollup(scope="city", step=Step.HOUR, bucket=start, capacity=10, exits=5, arrears_fen=300),
        Rollup(
            scope="city",
            step=Step.HOUR,
            bucket=start + timedelta(hours=2),
            capacity=10,
            recovered_fen=100,
        ),
    ]
    kw = {"scope": "city", "capacity": 10, "outstanding_before": 50}
    owed = logic.points(Metric.ARREARS_OUTSTANDING, Step.HOUR, rows, wanted, **kw)  # type: ignore[arg-type]
    assert [p.value for p in owed] == [350.0, 350.0, 250.0]
    turnover = logic.points(Metric.TURNOVER, Step.HOUR, rows, wanted, **kw)  # type: ignore[arg-type]
    assert [p.value for p in turnover] == [0.5, 0.0, 0.0]
    rate = logic.points(Metric.COLLECTION_RATE, Step.HOUR, rows, wanted, **kw)  # type: ignore[arg-type]
    assert [p.value for p in rate] == [None, None, None]


def test_device_health_counts_a_device_heard_within_the_window() -> None:
    now = datetime(2026, 12, 3, 10, tzinfo=UTC)
    ms = int(now.timestamp() * 1000)
    health, per_lot = logic.device_health(
        [("g1", "L1", "gate"), ("g2", "L1", "gate"), ("s1", "L3", "sensor")],
        {"g1": ms - 1000, "g2": ms - 31 * 60 * 1000, "x": ms},
        now=now,
        silent_after=timedelta(minutes=30),
    )
    assert (health.devices, health.online, health.online_rate) == (3, 1, 1 / 3)
    assert health.by_kind == {"gate": [1, 2], "sensor": [0, 1]}
    assert per_lot == {"L1": (2, 1), "L3": (1, 0)}
