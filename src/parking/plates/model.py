"""Chinese motor-vehicle plates (GA 36-2018) as the platform keeps them."""

from enum import StrEnum
from typing import Final

import msgspec

# The 31 mainland provincial-level divisions that issue plates, abbreviation to
# name. Hong Kong, Macau and Taiwan are the other three of the 34 provincial-
# level divisions; they issue no mainland plates (港 and 澳 appear only as the
# suffix of cross-border 粤Z plates, and 台 not at all).
PROVINCES: Final = {
    "京": "北京",
    "津": "天津",
    "冀": "河北",
    "晋": "山西",
    "蒙": "内蒙古",
    "辽": "辽宁",
    "吉": "吉林",
    "黑": "黑龙江",
    "沪": "上海",
    "苏": "江苏",
    "浙": "浙江",
    "皖": "安徽",
    "闽": "福建",
    "赣": "江西",
    "鲁": "山东",
    "豫": "河南",
    "鄂": "湖北",
    "湘": "湖南",
    "粤": "广东",
    "桂": "广西",
    "琼": "海南",
    "渝": "重庆",
    "川": "四川",
    "贵": "贵州",
    "云": "云南",
    "藏": "西藏",
    "陕": "陕西",
    "甘": "甘肃",
    "青": "青海",
    "宁": "宁夏",
    "新": "新疆",
}


class PlateKind(StrEnum):
    ORDINARY = "ordinary"
    NEW_ENERGY_SMALL = "new_energy_small"
    NEW_ENERGY_LARGE = "new_energy_large"
    TRAILER = "trailer"  # 挂
    COACH = "coach"  # 学, driving-school vehicles
    POLICE = "police"  # 警
    HONG_KONG = "hong_kong"  # 粤Z…港
    MACAU = "macau"  # 粤Z…澳
    CONSULATE = "consulate"  # 领
    EMBASSY = "embassy"  # 使
    ARMED_POLICE = "armed_police"  # WJ


class PlateColour(StrEnum):
    BLUE = "blue"
    YELLOW = "yellow"
    GREEN = "green"  # gradient green, small new-energy vehicles
    YELLOW_GREEN = "yellow_green"  # large new-energy vehicles
    WHITE = "white"
    BLACK = "black"


NEW_ENERGY_KINDS: Final = frozenset({PlateKind.NEW_ENERGY_SMALL, PlateKind.NEW_ENERGY_LARGE})


class PlateError(ValueError):
    """An ANPR read that is not a plate we can bill."""


class Plate(msgspec.Struct, frozen=True, kw_only=True):
    """A validated plate.

    `text` is the normalised form, the identity used for matching entries to
    exits; `raw` keeps the camera's exact read for disputes. `colour` is derived
    from the plate text, never taken from the camera: ANPR colour reads are
    unreliable at night and on dirty plates, and the text decides the colour
    for every kind except one: an ordinary 7-character plate is blue on small
    vehicles and yellow on large ones, and the text cannot tell them apart, so
    it is reported blue and a large vehicle's class is set by an override
    (`parking.vehicles.effective_class`).
    """

    raw: str
    text: str
    kind: PlateKind
    colour: PlateColour
    is_new_energy: bool
    province: str | None
