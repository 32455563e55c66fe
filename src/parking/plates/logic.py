"""Normalising ANPR reads and validating them as GA 36-2018 plates.

Accepted layouts (after normalisation; P a province abbreviation, A an issuing-
authority letter, S a serial character: a digit or a letter other than I and O):

| kind | layout | example |
|---|---|---|
| ordinary | P A SSSSS | 京A12345 |
| new_energy_small | P A x S dddd, x in A-K (no I) | 粤BD12345 |
| new_energy_large | P A ddddd x, x in D F | 粤B12345D |
| trailer / coach / police / consulate | P A SSSS 挂/学/警/领 | 赣B1234挂 |
| hong_kong / macau | 粤Z SSSS 港/澳 | 粤Z1234港 |
| embassy | 使dddddd or dddddd使 | 使014578 |
| armed_police | WJ [P] dddd x; WJ dd ddddd; WJ dd x dddd (x: see below) | WJ赣12345 |

Small new-energy plates began with D (pure electric) or F (other new energy);
cities that exhausted those now also issue A B C E (pure electric) and G H J K
(other), so the whole A-K set is accepted. The armed-police layouts are a
subset: the 2012 plates (WJ, the province or none for headquarters, four digits,
then a digit or a service letter B D H J S T X) and the 2007 plates (WJ, a
two-digit unit code, then five digits or a service mark 消边通森金警电 or letter
and four digits). Military (军) and temporary (临) plates are not billed by
plate here and are rejected.
"""

import re
import unicodedata
from typing import Final

from parking.plates.model import (
    NEW_ENERGY_KINDS,
    PROVINCES,
    Plate,
    PlateColour,
    PlateError,
    PlateKind,
)

# ANPR units emit at most a dozen characters; anything much longer is a
# malformed message, refused before any Unicode work is spent on it.
MAX_RAW_LENGTH: Final = 32

_PROVINCE = "[" + "".join(PROVINCES) + "]"
_AUTHORITY = "[A-HJ-Z]"  # O stays: provincial public-security plates use 浙O…警
_SERIAL = "[0-9A-HJ-NP-Z]"
_LAYOUTS: Final = (
    (PlateKind.ORDINARY, rf"{_PROVINCE}{_AUTHORITY}{_SERIAL}{{5}}"),
    (PlateKind.NEW_ENERGY_SMALL, rf"{_PROVINCE}{_AUTHORITY}[A-HJK]{_SERIAL}[0-9]{{4}}"),
    (PlateKind.NEW_ENERGY_LARGE, rf"{_PROVINCE}{_AUTHORITY}[0-9]{{5}}[DF]"),
    (PlateKind.TRAILER, rf"{_PROVINCE}{_AUTHORITY}{_SERIAL}{{4}}挂"),
    (PlateKind.COACH, rf"{_PROVINCE}{_AUTHORITY}{_SERIAL}{{4}}学"),
    (PlateKind.POLICE, rf"{_PROVINCE}{_AUTHORITY}{_SERIAL}{{4}}警"),
    (PlateKind.CONSULATE, rf"{_PROVINCE}{_AUTHORITY}{_SERIAL}{{4}}领"),
    (PlateKind.HONG_KONG, rf"粤Z{_SERIAL}{{4}}港"),
    (PlateKind.MACAU, rf"粤Z{_SERIAL}{{4}}澳"),
    (PlateKind.EMBASSY, r"使[0-9]{6}|[0-9]{6}使"),
    (
        PlateKind.ARMED_POLICE,
        rf"WJ{_PROVINCE}?[0-9]{{4}}[0-9BDHJSTX]|WJ[0-9]{{2}}(?:[0-9]{{5}}|[消边通森金警电BDHJSTX][0-9]{{4}})",
    ),
)
_MATCHERS: Final = tuple((kind, re.compile(pattern)) for kind, pattern in _LAYOUTS)

_COLOURS: Final = {
    PlateKind.ORDINARY: PlateColour.BLUE,
    PlateKind.NEW_ENERGY_SMALL: PlateColour.GREEN,
    PlateKind.NEW_ENERGY_LARGE: PlateColour.YELLOW_GREEN,
    PlateKind.TRAILER: PlateColour.YELLOW,
    PlateKind.COACH: PlateColour.YELLOW,
    PlateKind.POLICE: PlateColour.WHITE,
    PlateKind.ARMED_POLICE: PlateColour.WHITE,
    PlateKind.HONG_KONG: PlateColour.BLACK,
    PlateKind.MACAU: PlateColour.BLACK,
    PlateKind.CONSULATE: PlateColour.BLACK,
    PlateKind.EMBASSY: PlateColour.BLACK,
}

# Separators ANPR units and operators put inside plates: the dot after the
# authority letter (ASCII, middle dot, katakana middle dot, bullet) and dashes.
_SEPARATORS: Final = frozenset(".·・•‧∙-‐‑‒–—_")
_ASCII_UPPER: Final = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# GA 36 never uses the letters I and O in serials, so there they are misreads.
_SERIAL_FIXES: Final = str.maketrans("OI", "01")
# Unicode categories that never belong in a plate: control, format (zero-width
# characters, BOM), surrogate, private use, unassigned.
_JUNK_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def normalise(raw: str) -> str:
    """The canonical text of an ANPR read, not yet validated.

    Full-width forms become half-width (NFKC), separators and spaces go,
    ASCII letters are upper-cased, and O/I in serial positions become 0/1.
    Raises `PlateError` for input no camera could mean as a plate.
    """
    value: object = raw  # callers pass decoded JSON; check what really arrived
    if not isinstance(value, str):
        raise PlateError(f"a plate must be text, got {type(value).__name__}")
    if len(raw) > MAX_RAW_LENGTH:
        raise PlateError(f"plate read is {len(raw)} characters; at most {MAX_RAW_LENGTH} expected")
    for char in raw:
        if unicodedata.category(char) in _JUNK_CATEGORIES:
            raise PlateError(
                f"plate read contains a control or invalid character U+{ord(char):04X}"
            )
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(char for char in text if not char.isspace() and char not in _SEPARATORS)
    text = text.translate(_ASCII_UPPER)
    if not text:
        raise PlateError("plate read is empty")
    # The prefix kept verbatim: a province and authority letter (O is a real
    # authority letter), or the WJ of armed-police plates.
    keep = 2 if text[0] in PROVINCES or text.startswith("WJ") else 0
    return text[:keep] + text[keep:].translate(_SERIAL_FIXES)


def parse_plate(raw: str) -> Plate:
    """Normalise and validate an ANPR read; raises `PlateError` if it is no plate."""
    text = normalise(raw)
    for kind, matcher in _MATCHERS:
        if matcher.fullmatch(text):
            return Plate(
                raw=raw,
                text=text,
                kind=kind,
                colour=_COLOURS[kind],
                is_new_energy=kind in NEW_ENERGY_KINDS,
                province=_province_of(text),
            )
    raise PlateError(_diagnose(text))


def _province_of(text: str) -> str | None:
    if text[0] in PROVINCES:
        return text[0]
    if text.startswith("WJ") and len(text) > 2 and text[2] in PROVINCES:
        return text[2]
    return None


def _diagnose(text: str) -> str:
    first = text[0]
    if first not in PROVINCES and not text.startswith(("WJ", "使")) and not text.endswith("使"):
        if first.isascii():
            return f"{text!r} is not a plate: it must start with a province abbreviation, WJ or 使"
        return f"{text!r} is not a plate: {first!r} is not a province abbreviation"
    if text.endswith(("港", "澳")) and not text.startswith("粤Z"):
        return f"{text!r} is not a plate: 港 and 澳 plates are issued as 粤Z only"
    return f"{text!r} is not a valid GA 36-2018 plate"
