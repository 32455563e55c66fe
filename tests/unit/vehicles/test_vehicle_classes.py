"""Ganzhou vehicle classes and the class a plate is billed as."""

import pytest

from parking.plates import PlateKind, parse_plate
from parking.vehicles import (
    VehicleClass,
    class_for_goods_vehicle,
    class_for_passenger_vehicle,
    default_class_for,
    effective_class,
)


def test_classes_are_numbered_one_to_five_with_chinese_labels() -> None:
    assert [int(c) for c in VehicleClass] == [1, 2, 3, 4, 5]
    assert [c.label for c in VehicleClass] == ["一类", "二类", "三类", "四类", "五类"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("赣B12345", VehicleClass.CLASS_1),  # blue ordinary
        ("赣BD12345", VehicleClass.CLASS_1),  # green small new energy
        ("赣B12345D", VehicleClass.CLASS_2),  # yellow-green large new energy
        ("赣B1234挂", VehicleClass.CLASS_2),  # trailer
        ("赣B1234学", VehicleClass.CLASS_1),  # driving-school car
        ("赣B1234警", VehicleClass.CLASS_1),
        ("WJ赣12345", VehicleClass.CLASS_1),
        ("粤Z1234港", VehicleClass.CLASS_1),
        ("粤Z1234澳", VehicleClass.CLASS_1),
        ("沪A1234领", VehicleClass.CLASS_1),
        ("使014578", VehicleClass.CLASS_1),
    ],
)
def test_default_class_follows_the_plate_kind(raw: str, expected: VehicleClass) -> None:
    assert default_class_for(parse_plate(raw)) is expected


def test_every_plate_kind_has_a_default_class() -> None:
    samples = {
        PlateKind.ORDINARY: "赣B12345",
        PlateKind.NEW_ENERGY_SMALL: "赣BD12345",
        PlateKind.NEW_ENERGY_LARGE: "赣B12345D",
        PlateKind.TRAILER: "赣B1234挂",
        PlateKind.COACH: "赣B1234学",
        PlateKind.POLICE: "赣B1234警",
        PlateKind.HONG_KONG: "粤Z1234港",
        PlateKind.MACAU: "粤Z1234澳",
        PlateKind.CONSULATE: "沪A1234领",
        PlateKind.EMBASSY: "使014578",
        PlateKind.ARMED_POLICE: "WJ赣12345",
    }
    assert set(samples) == set(PlateKind)
    for kind, raw in samples.items():
        plate = parse_plate(raw)
        assert plate.kind is kind
        assert default_class_for(plate) in VehicleClass


def test_an_override_always_wins() -> None:
    plate = parse_plate("赣B12345")
    assert effective_class(plate, None) is VehicleClass.CLASS_1
    assert effective_class(plate, VehicleClass.CLASS_4) is VehicleClass.CLASS_4
    large = parse_plate("赣B12345D")
    assert effective_class(large, VehicleClass.CLASS_1) is VehicleClass.CLASS_1


@pytest.mark.parametrize(
    ("seats", "expected"),
    [(1, 1), (5, 1), (7, 1), (8, 2), (19, 2), (20, 3), (39, 3), (40, 4), (60, 4)],
)
def test_passenger_vehicle_class_by_seats(seats: int, expected: int) -> None:
    assert class_for_passenger_vehicle(seats) == expected


@pytest.mark.parametrize(
    ("load_kg", "expected"),
    [
        (0, 1),
        (2_000, 1),
        (2_001, 2),
        (5_000, 2),
        (5_001, 3),
        (10_000, 3),
        (10_001, 4),
        (15_000, 4),
        (15_001, 5),
        (49_000, 5),
    ],
)
def test_goods_vehicle_class_by_rated_load(load_kg: int, expected: int) -> None:
    assert class_for_goods_vehicle(load_kg) == expected


def test_impossible_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="seats"):
        class_for_passenger_vehicle(0)
    with pytest.raises(ValueError, match="rated load"):
        class_for_goods_vehicle(-1)
