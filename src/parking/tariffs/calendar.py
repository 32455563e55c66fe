"""Calendars of day types (contract v2): which local dates are workdays, rest days
and holidays. Pure: decoding bytes into a `Calendar`, and classing a date.

The State Council publishes each year's public holidays and the weekend days
that become working days (调休); a calendar is that notice written as data,
versioned, so a quote can name the calendar version it used. The rule, from
the contract: a `holiday` is a statutory holiday date; a `workday` is a Monday
to Friday that is not a holiday, or a weekend date the calendar marks as a
working day; every other date is a `rest_day`. A date no calendar covers is
classed by weekday alone (Monday to Friday workday, else rest day), and the
quote says so.

JSON format (`decode_calendar`), one calendar per file::

    {
      "version": "cn-2026.1",
      "name": "国务院办公厅关于2026年部分节假日安排的通知",
      "source": "国办发明电〔2025〕N号",
      "years": [2026],
      "holidays": ["2026-01-01", "2026-01-02", "2026-01-03", "..."],
      "workdays": ["2026-01-04", "2026-10-10", "..."]
    }

- `version` (required): a slug (letters, digits, `.`, `_`, `-`, at most 64)
  naming this edition of the calendar; quotes cite it, so a corrected notice
  gets a new version.
- `name` (required): display name, e.g. the notice's title.
- `source` (optional): where the dates come from (the notice's number or address).
- `years` (required): the years whose every date this calendar classes,
  strictly increasing.
- `holidays`: the dates of the announced holiday periods (放假), weekend days
  inside a period included; `YYYY-MM-DD`, no repeats.
- `workdays`: the weekend dates that are working days (调休上班); each a
  Saturday or Sunday, and not also a holiday.

Listed dates must lie in the calendar's years, so a typo such as 2062 for
2026 is caught. A notice sometimes reaches into the neighbouring year (the
2019 notice moved 2018-12-29 to a working day): such a date goes in a calendar
whose `years` include it (a new version of the earlier year's, or one covering
both years).

CSV format (`decode_calendar_csv`), the notice transcribed as rows, with the
version, name and source given by whoever imports it::

    date,kind
    2026-01-01,holiday
    2026-01-04,workday

`kind` is `holiday` or `workday`; the header row is required; `years` default
to the years of the listed dates. Errors name the line and column
(`line 3, kind: ...`).

Errors are `CalendarError` with the path of the offending field
(`workdays[2]: 2026-10-12 is a Monday ...`), as tariff documents have.
"""

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Final, NamedTuple, NoReturn

import msgspec

from parking.tariffs.decode import locate, reject_duplicate_keys
from parking.tariffs.model import DayType

# Calendars are a few kilobytes, like tariffs.
MAX_CALENDAR_BYTES: Final = 1 << 20
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SATURDAY: Final = 5


class CalendarError(ValueError):
    """A calendar file breaks the format; `path` names the offending field."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def _fail(path: str, reason: str) -> NoReturn:
    raise CalendarError(path, reason)


class Calendar(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A versioned calendar of holidays and adjusted working days (see the module doc)."""

    version: str
    name: str
    years: tuple[int, ...]
    holidays: tuple[date, ...] = ()
    workdays: tuple[date, ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        if _VERSION.fullmatch(self.version) is None:
            _fail(
                "version",
                f"must be a slug (letters, digits, '.', '_', '-'), got {self.version!r}",
            )
        if not self.name.strip():
            _fail("name", "must not be empty")
        if not self.years:
            _fail("years", "must list at least one year")
        for i, year in enumerate(self.years):
            if not 1900 <= year <= 9999:
                _fail(f"years[{i}]", f"must be a year from 1900 to 9999, got {year}")
            if i and year <= self.years[i - 1]:
                _fail(f"years[{i}]", f"must be after years[{i - 1}] ({self.years[i - 1]})")
        holidays = self._check_dates("holidays", self.holidays)
        self._check_dates("workdays", self.workdays)
        for i, day in enumerate(self.workdays):
            if day.weekday() < _SATURDAY:
                _fail(
                    f"workdays[{i}]",
                    f"{day.isoformat()} is a {day.strftime('%A')}; only a Saturday or "
                    "Sunday can be made a working day",
                )
            if day in holidays:
                _fail(f"workdays[{i}]", f"{day.isoformat()} is also listed as a holiday")

    def _check_dates(self, field: str, dates: tuple[date, ...]) -> set[date]:
        seen: set[date] = set()
        for i, day in enumerate(dates):
            if day.year not in self.years:
                _fail(
                    f"{field}[{i}]",
                    f"{day.isoformat()} is outside the calendar's years "
                    f"{', '.join(map(str, self.years))}",
                )
            if day in seen:
                _fail(f"{field}[{i}]", f"{day.isoformat()} is listed twice")
            seen.add(day)
        return seen

    def covers(self, day: date) -> bool:
        return day.year in self.years

    def day_type(self, day: date) -> DayType:
        """The day type of a date this calendar covers (the contract's rule)."""
        if day in self.holidays:
            return "holiday"
        if day in self.workdays or day.weekday() < _SATURDAY:
            return "workday"
        return "rest_day"


class DayClass(NamedTuple):
    """A local date's day type and the version of the calendar that classed it
    (None: no calendar covers the date, classed by weekday alone)."""

    day_type: DayType
    calendar: str | None


def weekday_type(day: date) -> DayType:
    """The day type by weekday alone: Monday to Friday workday, else rest day."""
    return "workday" if day.weekday() < _SATURDAY else "rest_day"


def classify(day: date, calendars: Iterable[Calendar]) -> DayClass:
    """The day type of a local date under the first of `calendars` that covers
    it, or by weekday alone when none does."""
    for calendar in calendars:
        if calendar.covers(day):
            return DayClass(calendar.day_type(day), calendar.version)
    return DayClass(weekday_type(day), None)


_decoder: Final = msgspec.json.Decoder(Calendar)


def decode_calendar(data: bytes | str) -> Calendar:
    """Decode a JSON calendar file; raises `CalendarError` naming the field at fault."""
    if len(data) > MAX_CALENDAR_BYTES:
        raise CalendarError("$", f"file is larger than {MAX_CALENDAR_BYTES} bytes")
    reject_duplicate_keys(data, CalendarError)
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as error:
        raise CalendarError(*locate(error)) from error
    except msgspec.DecodeError as error:
        raise CalendarError("$", f"malformed JSON: {error}") from error


def calendar_from_dict(document: Mapping[str, Any]) -> Calendar:
    """Build a calendar from already-parsed JSON data (e.g. a JSONB column)."""
    try:
        return msgspec.convert(document, Calendar, strict=True)
    except msgspec.ValidationError as error:
        raise CalendarError(*locate(error)) from error


_KINDS: Final = ("holiday", "workday")


def decode_calendar_csv(
    data: bytes | str,
    *,
    version: str,
    name: str,
    years: Sequence[int] | None = None,
    source: str | None = None,
) -> Calendar:
    """Decode the CSV form (rows of `date,kind`); the rest of the calendar is given."""
    if len(data) > MAX_CALENDAR_BYTES:
        raise CalendarError("$", f"file is larger than {MAX_CALENDAR_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as error:
        raise CalendarError("$", f"not UTF-8: {error}") from error
    rows = csv.reader(io.StringIO(text, newline=""))
    # Each listed date with the line it came from, to point an error at it.
    listed: dict[str, list[tuple[date, int]]] = {kind: [] for kind in _KINDS}
    header = False
    for row in rows:
        line = rows.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if not header:
            if cells != list(_COLUMNS):
                _fail(f"line {line}", f"the header must be date,kind, got {','.join(cells)!r}")
            header = True
            continue
        if len(cells) != len(_COLUMNS):
            _fail(f"line {line}", f"expected 2 columns (date,kind), got {len(cells)}")
        text_date, kind = cells
        listed_kind = listed.get(kind)
        if listed_kind is None:
            _fail(f"line {line}, kind", f"must be one of holiday, workday, got {kind!r}")
        listed_kind.append((_csv_date(text_date, line), line))
    if not header:
        _fail("line 1", "the header must be date,kind; the file is empty")
    holidays = tuple(day for day, _ in listed["holiday"])
    workdays = tuple(day for day, _ in listed["workday"])
    if years is None:
        years = sorted({day.year for day in holidays + workdays})
    try:
        return Calendar(
            version=version,
            name=name,
            years=tuple(years),
            holidays=holidays,
            workdays=workdays,
            source=source,
        )
    except CalendarError as error:
        # `holidays[3]: ...` means a line of the file: say which.
        found = _LISTED.fullmatch(error.path)
        if found is None:
            raise
        line = listed[found["kind"]][int(found["index"])][1]
        raise CalendarError(f"line {line}, date", error.reason) from error


_COLUMNS: Final = ("date", "kind")
_LISTED = re.compile(r"(?P<kind>holiday|workday)s\[(?P<index>\d+)\]")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _csv_date(text: str, line: int) -> date:
    if _ISO_DATE.fullmatch(text) is not None:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    _fail(f"line {line}, date", f"must be a date YYYY-MM-DD, got {text!r}")
