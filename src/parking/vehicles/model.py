"""Ganzhou's five vehicle classes (一类 to 五类), which tariffs are chosen by."""

from enum import IntEnum
from typing import Final


class VehicleClass(IntEnum):
    """By seats for passenger vehicles, by rated load for goods vehicles.

    | class | passenger seats | rated load (核定载质量) |
    |---|---|---|
    | 一类 | up to 7 | up to 2 t |
    | 二类 | 8 to 19 | over 2 t, up to 5 t |
    | 三类 | 20 to 39 | over 5 t, up to 10 t |
    | 四类 | 40 or more | over 10 t, up to 15 t |
    | 五类 | - | over 15 t, and special vehicles |
    """

    CLASS_1 = 1
    CLASS_2 = 2
    CLASS_3 = 3
    CLASS_4 = 4
    CLASS_5 = 5

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS: Final = {
    VehicleClass.CLASS_1: "一类",
    VehicleClass.CLASS_2: "二类",
    VehicleClass.CLASS_3: "三类",
    VehicleClass.CLASS_4: "四类",
    VehicleClass.CLASS_5: "五类",
}
