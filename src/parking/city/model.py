"""The city's figures as city management (and an operator, for its own lots) reads them."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final

import msgspec


class LotNow(msgspec.Struct, frozen=True, kw_only=True):
    lot_id: str
    name: str
    district_code: str
    kind: str
    capacity: int
    #: cars in the lot now: a gated lot's open sessions, an on-street lot's occupied spaces
    occupied: int
    free: int
    #: occupied / capacity, in percent (one decimal)
    occupancy_pct: float
    full: bool
    #: false when the live core does not have the lot (not loaded): counted as empty
    live: bool
    latitude: float
    longitude: float


class DistrictNow(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    name: str
    lots: int
    capacity: int
    occupied: int
    free: int
    occupancy_pct: float
    full_lots: int


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    lots: int
    districts: int
    capacity: int
    occupied: int
    free: int
    occupancy_pct: float
    full_lots: int
    #: open sessions in the core (gated cars and claimed on-street stays)
    open_sessions: int
    #: lots the live core does not have (not loaded yet): counted as empty
    lots_not_live: int


class LotOrder(StrEnum):
    """How ``/v1/city/lots`` sorts: fullest first, emptiest first, most free, by id."""

    FULLEST = "fullest"
    EMPTIEST = "emptiest"
    FREE = "free"
    ID = "id"


class Step(StrEnum):
    HOUR = "hour"
    DAY = "day"


class Metric(StrEnum):
    """What ``/v1/city/timeseries`` draws; the unit of each is in ``UNITS``."""

    ENTRIES = "entries"
    EXITS = "exits"
    #: exits / capacity
    TURNOVER = "turnover"
    STAY_AVG = "stay_avg"
    STAY_MEDIAN = "stay_median"
    #: 应收: bills opened
    BILLED = "billed"
    #: 实收: bills paid
    COLLECTED = "collected"
    #: 实收率: collected / billed
    COLLECTION_RATE = "collection_rate"
    #: 欠费: stay bills still unpaid ARREARS_AFTER after the car left
    ARREARS = "arrears"
    #: 追缴: arrears paid
    RECOVERED = "recovered"
    #: arrears not yet paid at the bucket's end
    ARREARS_OUTSTANDING = "arrears_outstanding"
    #: 无感支付占比: bills paid by contactless deduction / bills paid
    CONTACTLESS_SHARE = "contactless_share"
    #: exits paid ahead in the lot / exits
    PREPAID_SHARE = "prepaid_share"
    DISPUTES = "disputes"
    #: devices heard within their heartbeat window / devices registered
    DEVICE_ONLINE_RATE = "device_online_rate"
    #: the bucket's highest occupied / capacity
    OCCUPANCY_PEAK = "occupancy_peak"
    LANE_P50 = "lane_p50"
    LANE_P99 = "lane_p99"


UNITS: Final = {
    Metric.ENTRIES: "cars",
    Metric.EXITS: "cars",
    Metric.TURNOVER: "exits per space",
    Metric.STAY_AVG: "seconds",
    Metric.STAY_MEDIAN: "seconds",
    Metric.BILLED: "fen",
    Metric.COLLECTED: "fen",
    Metric.COLLECTION_RATE: "ratio",
    Metric.ARREARS: "fen",
    Metric.RECOVERED: "fen",
    Metric.ARREARS_OUTSTANDING: "fen",
    Metric.CONTACTLESS_SHARE: "ratio",
    Metric.PREPAID_SHARE: "ratio",
    Metric.DISPUTES: "disputes",
    Metric.DEVICE_ONLINE_RATE: "ratio",
    Metric.OCCUPANCY_PEAK: "ratio",
    Metric.LANE_P50: "milliseconds",
    Metric.LANE_P99: "milliseconds",
}

#: A stay bill still unpaid this long after the car left is arrears (欠费): a
#: contactless deduction or a driver paying from the exit page comes within it.
ARREARS_AFTER: Final = timedelta(minutes=15)

#: Upper bounds (ms) of the lane decision latency histogram's buckets; the last
#: bucket is everything above the last bound.
LANE_BOUNDS_MS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


#: The figures of a bucket that add up: a day's are its hours' sums, a district's its
#: lots' (medians, samples and capacity do not add).
ADDED: Final = (
    "entries",
    "exits",
    "stays",
    "stay_seconds",
    "prepaid_exits",
    "billed_fen",
    "bills",
    "collected_fen",
    "paid_bills",
    "contactless_bills",
    "arrears_fen",
    "arrears_bills",
    "recovered_fen",
    "recovered_bills",
    "disputes",
)


class Rollup(msgspec.Struct, kw_only=True):
    """One scope's figures for one hour or day, as kept in ``city_rollups``."""

    scope: str
    step: Step
    bucket: datetime
    capacity: int = 0
    entries: int = 0
    exits: int = 0
    stays: int = 0
    stay_seconds: float = 0.0
    stay_median_s: float | None = None
    prepaid_exits: int = 0
    billed_fen: int = 0
    bills: int = 0
    collected_fen: int = 0
    paid_bills: int = 0
    contactless_bills: int = 0
    arrears_fen: int = 0
    arrears_bills: int = 0
    recovered_fen: int = 0
    recovered_bills: int = 0
    disputes: int = 0
    occupied_peak: int | None = None
    occupied_last: int | None = None
    devices: int | None = None
    devices_online: int | None = None
    lane_buckets: list[int] | None = None
    #: when the job last wrote the row (None: not rolled up)
    refreshed_at: datetime | None = None


class Point(msgspec.Struct, frozen=True, kw_only=True):
    at: datetime
    #: None where the figure has no meaning (a rate over nothing, no sample)
    value: float | None


class Series(msgspec.Struct, frozen=True, kw_only=True):
    metric: Metric
    step: Step
    #: city | district:<code> | company:<id> | lot:<id>
    scope: str
    unit: str
    points: list[Point]


class LotDay(msgspec.Struct, frozen=True, kw_only=True):
    lot_id: str
    name: str
    capacity: int
    #: the day's highest occupied / capacity, in percent
    peak_pct: float | None


class ProviderDay(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's reconciliation of the day (issue 12): not_run, settled or open."""

    provider: str
    status: str
    matched_fen: int = 0
    discrepancies: int = 0
    pending: int = 0


class DayFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One business day (Asia/Shanghai) of a scope, from the rollups."""

    day: date
    scope: str
    capacity: int
    entries: int
    exits: int
    turnover: float | None
    stays: int
    stay_avg_s: float | None
    stay_median_s: float | None
    billed_fen: int
    collected_fen: int
    collection_rate: float | None
    arrears_fen: int
    arrears_recovered_fen: int
    arrears_outstanding_fen: int
    contactless_share: float | None
    prepaid_share: float | None
    disputes: int
    device_online_rate: float | None
    occupancy_peak_pct: float | None
    lane_p50_ms: float | None
    lane_p99_ms: float | None
    lane_decisions: int
    fullest: list[LotDay]
    emptiest: list[LotDay]
    reconciliation: list[ProviderDay]
    #: when the job last refreshed the day (None: not rolled up yet)
    refreshed_at: datetime | None


class DeviceHealth(msgspec.Struct, frozen=True, kw_only=True):
    """Devices now: heard from within their heartbeat window, of those registered."""

    at: datetime
    devices: int
    online: int
    online_rate: float | None
    #: kind (gate, sensor, sign) -> [online, registered]
    by_kind: dict[str, list[int]]
    silent_after_s: int
