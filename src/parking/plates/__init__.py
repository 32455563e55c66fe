"""Chinese plates: normalising ANPR reads and validating them (GA 36-2018)."""

from parking.plates.logic import normalise, parse_plate
from parking.plates.model import PROVINCES, Plate, PlateColour, PlateError, PlateKind

__all__ = [
    "PROVINCES",
    "Plate",
    "PlateColour",
    "PlateError",
    "PlateKind",
    "normalise",
    "parse_plate",
]
