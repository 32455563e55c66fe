"""Decoding tariff documents at the edge, with errors that name the field.

Finance staff fix what the message points at, so every rejection is a
`TariffError` whose message starts with the JSON path of the offending field:
`bands[1].tiers[0].unit_minutes: must be > 0, got 0`.
"""

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, get_args

import msgspec

from parking.tariffs.model import (
    CapCycle,
    ContractVersion,
    PartialUnit,
    Tariff,
    TariffError,
    TiersRestart,
)

# Tariffs are a few kilobytes; the bound keeps a hostile upload from costing
# more than a decode of this size.
MAX_DOCUMENT_BYTES: Final = 1 << 20

_decoder: Final = msgspec.json.Decoder(Tariff)
_AT = re.compile(r"(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]*)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")
_ENUM = re.compile(r"Invalid enum value (?P<value>.*)")
_CHOICES: Final[Mapping[str, tuple[object, ...]]] = {
    "cycle": get_args(CapCycle),
    "partial_unit": get_args(PartialUnit),
    "tiers_restart": get_args(TiersRestart),
    "version": get_args(ContractVersion),
}


def decode_tariff(data: bytes | str) -> Tariff:
    """Decode a JSON tariff document; raises `TariffError` naming the field at fault."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TariffError("$", f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
    reject_duplicate_keys(data, TariffError)
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as error:
        raise _translate(error) from error
    except msgspec.DecodeError as error:
        raise TariffError("$", f"malformed JSON: {error}") from error


def tariff_from_dict(document: Mapping[str, Any]) -> Tariff:
    """Build a tariff from already-parsed JSON data (e.g. a JSONB column)."""
    try:
        return msgspec.convert(document, Tariff, strict=True)
    except msgspec.ValidationError as error:
        raise _translate(error) from error


def reject_duplicate_keys(data: bytes | str, error: Callable[[str, str], Exception]) -> None:
    """Raise ``error(path, reason)`` at the first key repeated within one JSON object."""
    # JSON parsers keep the last of two equal keys silently; a tariff must have
    # one meaning, so a repeated key is an error rather than a guess.
    try:
        tree = json.loads(data, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return  # malformed or absurdly nested: msgspec reports it
    duplicate = _first_duplicate(tree, "")
    if duplicate is not None:
        raise error(duplicate, "duplicate key")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as parsed, keys in order and duplicates kept."""


def _first_duplicate(node: Any, path: str) -> str | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            child = _join(path, key)
            if key in seen:
                return child
            seen.add(key)
            if (found := _first_duplicate(value, child)) is not None:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if (found := _first_duplicate(item, f"{path}[{i}]")) is not None:
                return found
    return None


def _join(path: str, field: str) -> str:
    if not path:
        return field
    if not field:
        return path
    return f"{path}{field}" if field.startswith("[") else f"{path}.{field}"


def _translate(error: msgspec.ValidationError) -> TariffError:
    return TariffError(*locate(error))


def locate(error: msgspec.ValidationError) -> tuple[str, str]:
    """(path, reason) of a msgspec validation error: the JSON path of the field
    at fault (``$`` for the document itself) and what is wrong with it.

    A ``__post_init__`` that raised an error with ``path`` and ``reason``
    (`TariffError`, `parking.tariffs.calendar.CalendarError`) has its path
    appended to where msgspec found the struct.
    """
    match = _AT.fullmatch(str(error))
    assert match is not None  # the pattern accepts any text
    message = match["message"]
    path = (match["path"] or "").removeprefix(".")
    cause = error.__cause__
    cause_path, cause_reason = getattr(cause, "path", None), getattr(cause, "reason", None)
    if isinstance(cause_path, str) and isinstance(cause_reason, str):
        return _join(path, cause_path) or "$", cause_reason
    if found := _UNKNOWN.fullmatch(message):
        return _join(path, found["field"]), "unknown field"
    if found := _MISSING.fullmatch(message):
        return _join(path, found["field"]), "required field is missing"
    if found := _EXPECTED.fullmatch(message):
        return path or "$", f"expected {found['want']}, got {found['got']}"
    if found := _ENUM.fullmatch(message):
        choices = _CHOICES.get(path.rpartition(".")[2], ())
        allowed = f"must be one of {', '.join(map(str, choices))}, " if choices else ""
        return path or "$", f"{allowed}got {found['value']}"
    return path or "$", message
