"""Vehicle classes (Ganzhou 一类 to 五类) and the class a stay is billed as."""

from parking.vehicles.logic import (
    class_for_goods_vehicle,
    class_for_passenger_vehicle,
    default_class_for,
    effective_class,
)
from parking.vehicles.model import VehicleClass

__all__ = [
    "VehicleClass",
    "class_for_goods_vehicle",
    "class_for_passenger_vehicle",
    "default_class_for",
    "effective_class",
]
