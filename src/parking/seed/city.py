"""The synthetic city: pure and deterministic for a given seed.

651 lots and exactly 112,000 spaces across Ganzhou's districts, development
zones, counties and county-level cities, with coordinates around each seat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Final

import msgspec

from parking.lots.model import LaneView, Lot, NewLane

TOTAL_LOTS = 651
TOTAL_SPACES = 112_000
DEMO_LOT = "GZ-DEMO-01"
DEMO_CAPACITY = 200


@dataclass(frozen=True, slots=True)
class Company:
    """An operator company (运营公司): it owns lots, and its operators act on those only."""

    id: str
    name: str


# The city's lots are run by three companies: the centre's, the south-west's
# (南康 and the development zone) and the counties'. Which one owns a lot
# follows from its district alone, so a re-seed gives every lot the same owner.
COMPANIES: tuple[Company, ...] = (
    Company("gz-urban", "赣州城发停车运营有限公司"),
    Company("gz-south", "赣州南康经开停车有限公司"),
    Company("gz-county", "赣南县域智慧停车有限公司"),
)
DEMO_COMPANY = "gz-urban"


@dataclass(frozen=True, slots=True)
class District:
    code: str
    name: str
    kind: str
    latitude: float
    longitude: float
    #: share of the city's lots; the centre holds most of them
    weight: int
    core: bool


# Seats (approximate) of Ganzhou's 3 districts, 2 functional zones, 13 counties
# and 2 county-level cities.
DISTRICTS: tuple[District, ...] = (
    District("ZG", "章贡区", "district", 25.8310, 114.9350, 150, True),
    District("NK", "南康区", "district", 25.6610, 114.7650, 60, True),
    District("GX", "赣县区", "district", 25.8600, 115.0120, 45, True),
    District("JK", "经开区", "zone", 25.8080, 114.8600, 60, True),
    District("RJ", "蓉江新区", "zone", 25.7700, 114.9000, 45, True),
    District("XF", "信丰县", "county", 25.3860, 114.9220, 20, False),
    District("DY", "大余县", "county", 25.4010, 114.3620, 12, False),
    District("SY", "上犹县", "county", 25.7850, 114.5510, 10, False),
    District("CY", "崇义县", "county", 25.6820, 114.3080, 8, False),
    District("AY", "安远县", "county", 25.1370, 115.3930, 10, False),
    District("DN", "定南县", "county", 24.7840, 115.0270, 10, False),
    District("QN", "全南县", "county", 24.7430, 114.5300, 8, False),
    District("ND", "宁都县", "county", 26.4700, 116.0090, 20, False),
    District("YD", "于都县", "county", 25.9520, 115.4150, 25, False),
    District("XG", "兴国县", "county", 26.3380, 115.3630, 20, False),
    District("HC", "会昌县", "county", 25.6000, 115.7860, 12, False),
    District("XW", "寻乌县", "county", 24.9630, 115.6470, 10, False),
    District("SC", "石城县", "county", 26.3150, 116.3460, 8, False),
    District("RJS", "瑞金市", "city", 25.8860, 116.0270, 25, False),
    District("LN", "龙南市", "city", 24.9110, 114.7900, 20, False),
)


@dataclass(frozen=True, slots=True)
class PlannedLot:
    """A lot of the synthetic city: its record, lanes and tariffs."""

    lot: Lot
    lanes: tuple[NewLane, ...]
    #: tariff id per vehicle class 1..5
    tariffs: tuple[str, str, str, str, str]

    @property
    def id(self) -> str:
        return self.lot.id

    def lane_views(self) -> list[LaneView]:
        return [
            LaneView(lot_id=self.lot.id, lane_id=x.lane_id, direction=x.direction)
            for x in self.lanes
        ]

    def space_ids(self) -> list[str]:
        prefix = "P" if self.lot.kind == "gated" else "S"
        return [f"{prefix}{n:04d}" for n in range(1, self.lot.capacity + 1)]


_GATED_NAMES = ("停车场", "地下停车场", "立体停车库", "广场停车场", "医院停车场", "商业中心停车场")
_STREETS = (
    "文清路",
    "红旗大道",
    "章江路",
    "长征大道",
    "赣江源大道",
    "登峰大道",
    "华坛路",
    "东阳山路",
)


def _lanes_for(capacity: int) -> tuple[NewLane, ...]:
    pairs = min(4, 1 + capacity // 400)
    lanes = [NewLane(lane_id=f"in{i}", direction="in") for i in range(1, pairs + 1)]
    lanes += [NewLane(lane_id=f"out{i}", direction="out") for i in range(1, pairs + 1)]
    return tuple(lanes)


#: 赣县区's street spaces charge on workdays only (tariffs v2 schedules by day type)
WORKDAY_STREETS: Final = "GX"
#: 江南宋城's lots: the last ``SONGCHENG_LOTS`` gated lots of 章贡区, priced by the
#: real rule (contract v2's worked example: the first-hour price again after 24 h)
SONGCHENG_LOTS: Final = 3
SONGCHENG_TARIFF: Final = "ganzhou-songcheng-1"


def _tariffs_for(district: District, kind: str) -> tuple[str, str, str, str, str]:
    if not district.core:
        small = "ganzhou-county"
    elif kind == "gated":
        small = "ganzhou-core-gated"
    elif district.code == WORKDAY_STREETS:
        small = "ganzhou-gx-onstreet"
    else:
        small = "ganzhou-core-onstreet"
    large = "ganzhou-large"
    return (small, large, large, large, large)


def _company_for(district: District) -> str:
    if not district.core:
        return "gz-county"
    return "gz-south" if district.code in ("NK", "JK") else "gz-urban"


def build(seed: int) -> list[PlannedLot]:
    """Every lot of the city; the same seed always gives the same city."""
    rng = random.Random(seed)
    weights = [d.weight for d in DISTRICTS]
    picks = rng.choices(DISTRICTS, weights=weights, k=TOTAL_LOTS - 1)
    kinds = ["gated" if rng.random() < 0.6 else "on_street" for _ in picks]

    # On-street segments are short; gated lots take the rest of the spaces in
    # proportion to a long-tailed size draw, then rounding is settled on the
    # largest lots so the city holds exactly TOTAL_SPACES.
    street_caps = [rng.randint(8, 60) for k in kinds if k == "on_street"]
    gated_draw = [rng.lognormvariate(5.2, 0.7) for k in kinds if k == "gated"]
    remaining = TOTAL_SPACES - DEMO_CAPACITY - sum(street_caps)
    scale = remaining / sum(gated_draw)
    gated_caps = [max(30, round(x * scale)) for x in gated_draw]
    diff = remaining - sum(gated_caps)
    order = sorted(range(len(gated_caps)), key=lambda i: -gated_caps[i])
    i = 0
    while diff != 0:
        step = 1 if diff > 0 else -1
        gated_caps[order[i % len(order)]] += step
        diff -= step
        i += 1

    lots = [
        PlannedLot(
            Lot(
                id=DEMO_LOT,
                name="畅泊演示停车场 (章贡区)",
                district_code="ZG",
                kind="gated",
                capacity=DEMO_CAPACITY,
                latitude=25.8322,
                longitude=114.9336,
                company_id=DEMO_COMPANY,
                address="赣州市章贡区文清路88号",
            ),
            lanes=(
                NewLane(lane_id="in1", direction="in"),
                NewLane(lane_id="out1", direction="out"),
            ),
            tariffs=(
                "suizhou-zone1",
                "ganzhou-large",
                "ganzhou-large",
                "ganzhou-large",
                "ganzhou-large",
            ),
        )
    ]
    street_iter = iter(street_caps)
    gated_iter = iter(gated_caps)
    # Addresses draw from their own generator: the city of a seed stays what it was.
    places = random.Random(seed * 7919 + 1)
    counters: dict[str, int] = {}
    for district, kind in zip(picks, kinds, strict=True):
        counters[district.code] = counters.get(district.code, 0) + 1
        n = counters[district.code]
        capacity = next(gated_iter) if kind == "gated" else next(street_iter)
        if kind == "gated":
            name = f"{district.name}{rng.choice(_GATED_NAMES)}{n}号"
        else:
            name = f"{district.name}{rng.choice(_STREETS)}路段{n}"
        spread = 0.05 if district.core else 0.03
        lots.append(
            PlannedLot(
                Lot(
                    id=f"GZ-{district.code}-{n:04d}",
                    name=name,
                    district_code=district.code,
                    kind=kind,
                    capacity=capacity,
                    latitude=round(district.latitude + rng.uniform(-spread, spread), 6),
                    longitude=round(district.longitude + rng.uniform(-spread, spread), 6),
                    company_id=_company_for(district),
                    address=f"赣州市{district.name}{places.choice(_STREETS)}"
                    + (f"{places.randint(1, 399)}号" if kind == "gated" else ""),
                ),
                lanes=_lanes_for(capacity) if kind == "gated" else (),
                tariffs=_tariffs_for(district, kind),
            )
        )
    return _songcheng(lots)


def _songcheng(lots: list[PlannedLot]) -> list[PlannedLot]:
    """The last gated lots of 章贡区 are 江南宋城's, named and priced as such."""
    chosen = [p.id for p in lots if p.lot.district_code == "ZG" and p.lot.kind == "gated"]
    chosen = [i for i in chosen if i != DEMO_LOT][-SONGCHENG_LOTS:]
    out = []
    for planned in lots:
        if planned.id in chosen:
            n = chosen.index(planned.id) + 1
            planned = replace(
                planned,
                lot=msgspec.structs.replace(planned.lot, name=f"江南宋城停车场{n}号 (章贡区)"),
                tariffs=(SONGCHENG_TARIFF, *planned.tariffs[1:]),
            )
        out.append(planned)
    return out
