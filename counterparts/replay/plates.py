"""Plates of the replayed day: fresh ones, misreads, and what a camera makes of them.

Every plate is valid for the platform's parser (``parking.plates``) and in the
normalised form it stores, so the checker can compare plates as text; a misread
is another valid plate one character off, never a real car's.
"""

from __future__ import annotations

import random
from typing import Final

from parking.plates import PlateError, PlateKind, parse_plate

_LETTERS: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_DIGITS: Final = "0123456789"
_ORIGINS: Final = (("赣B", 80), ("赣A", 4), ("赣C", 2), ("赣D", 2), ("粤B", 3), ("湘A", 3),
                   ("闽D", 3), ("浙A", 2), ("沪A", 1))  # fmt: skip
_ACCEPTED: Final = frozenset(
    {PlateKind.ORDINARY, PlateKind.NEW_ENERGY_SMALL, PlateKind.NEW_ENERGY_LARGE}
)


class Plates:
    """Fresh plates, unique within the plan, valid for the platform's parser."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()
        self._origins = [o for o, _ in _ORIGINS]
        self._weights = [w for _, w in _ORIGINS]

    def _draw(self, vehicle: str) -> str:
        rng = self._rng
        origin = rng.choices(self._origins, self._weights)[0]
        if vehicle == "nev_small":
            return origin + rng.choice("DF") + "".join(rng.choice(_DIGITS) for _ in range(5))
        if vehicle == "nev_large":
            return origin + "".join(rng.choice(_DIGITS) for _ in range(5)) + rng.choice("DF")
        chars = [rng.choice(_DIGITS) for _ in range(5)]
        for _ in range(rng.choice((0, 0, 0, 1, 2))):
            chars[rng.randrange(5)] = rng.choice(_LETTERS)
        return origin + "".join(chars)

    def new(self, vehicle: str) -> str:
        while True:
            plate = self._draw(vehicle)
            if plate in self._used or not valid(plate):
                continue
            self._used.add(plate)
            return plate

    def misread(self, plate: str) -> str:
        """Another valid plate, one character off, never used by a real car."""
        rng = self._rng
        while True:
            chars = list(plate)
            at = rng.randrange(2, len(chars))
            chars[at] = rng.choice(_DIGITS + _LETTERS)
            other = "".join(chars)
            if other != plate and other not in self._used and valid(other):
                self._used.add(other)
                return other


def valid(plate: str) -> bool:
    try:
        parsed = parse_plate(plate)
    except PlateError:
        return False
    return parsed.text == plate and parsed.kind in _ACCEPTED


def camera_read(
    plate: str | None, kind: str, plates: Plates, rng: random.Random
) -> tuple[str | None, str | None, float | None]:
    """(plate as read, colour, confidence) of one camera read."""
    if plate is None or kind == "missed":
        return None, None, 0.0
    color = "green" if plate[2] in "DF" or plate[-1] in "DF" else "blue"
    if kind == "misread":
        return plates.misread(plate), color, round(rng.uniform(0.5, 0.79), 3)
    if kind == "low":
        return plate, color, round(rng.uniform(0.6, 0.79), 3)
    return plate, color, round(rng.uniform(0.9, 0.995), 3)
