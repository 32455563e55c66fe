"""Which vehicle class a stay is billed as.

A camera sees a plate, not a registration certificate, so the default class
comes from the plate kind and errs low: overcharging a driver is a complaint
and a refund, undercharging is corrected by an operator's override (from the
registration, or staff at the lane), which always wins.
"""

from typing import Final

from parking.plates import Plate, PlateKind
from parking.vehicles.model import VehicleClass

_DEFAULTS: Final = {
    # Blue ordinary and green new-energy plates are small vehicles.
    PlateKind.ORDINARY: VehicleClass.CLASS_1,
    PlateKind.NEW_ENERGY_SMALL: VehicleClass.CLASS_1,
    # GA 36 gives yellow and yellow-green plates to large vehicles: 20 seats or
    # more, or a total mass of 4.5 t or more, or 6 m or longer. The lowest
    # Ganzhou class such a vehicle can be in is 二类 (a 4.5 t truck with a load
    # of 2 to 5 t), so that is the default; trailers are billed alike.
    PlateKind.NEW_ENERGY_LARGE: VehicleClass.CLASS_2,
    PlateKind.TRAILER: VehicleClass.CLASS_2,
    # 学 plates are yellow, but nearly all driving-school vehicles are small
    # cars for C1 licences; coaches for large licences need an override.
    PlateKind.COACH: VehicleClass.CLASS_1,
    # Official, cross-border and diplomatic plates are mostly passenger cars.
    PlateKind.POLICE: VehicleClass.CLASS_1,
    PlateKind.ARMED_POLICE: VehicleClass.CLASS_1,
    PlateKind.HONG_KONG: VehicleClass.CLASS_1,
    PlateKind.MACAU: VehicleClass.CLASS_1,
    PlateKind.CONSULATE: VehicleClass.CLASS_1,
    PlateKind.EMBASSY: VehicleClass.CLASS_1,
}


def default_class_for(plate: Plate) -> VehicleClass:
    """The class a plate is billed as when nobody has said otherwise."""
    return _DEFAULTS[plate.kind]


def effective_class(plate: Plate, override: VehicleClass | None) -> VehicleClass:
    """The operator's override when there is one, else the plate's default."""
    return default_class_for(plate) if override is None else override


def class_for_passenger_vehicle(seats: int) -> VehicleClass:
    """Class of a passenger vehicle from its approved seats (核定载客), driver included."""
    if seats < 1:
        raise ValueError(f"seats must be at least 1, got {seats}")
    if seats <= 7:
        return VehicleClass.CLASS_1
    if seats <= 19:
        return VehicleClass.CLASS_2
    if seats <= 39:
        return VehicleClass.CLASS_3
    return VehicleClass.CLASS_4


def class_for_goods_vehicle(rated_load_kg: int) -> VehicleClass:
    """Class of a goods vehicle from its rated load in kilograms (核定载质量)."""
    if rated_load_kg < 0:
        raise ValueError(f"rated load must be >= 0 kg, got {rated_load_kg}")
    for limit_kg, vehicle_class in _LOAD_LIMITS_KG:
        if rated_load_kg <= limit_kg:
            return vehicle_class
    return VehicleClass.CLASS_5


_LOAD_LIMITS_KG: Final = (
    (2_000, VehicleClass.CLASS_1),
    (5_000, VehicleClass.CLASS_2),
    (10_000, VehicleClass.CLASS_3),
    (15_000, VehicleClass.CLASS_4),
)
