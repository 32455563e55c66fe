"""`parking tariff`: check tariff documents and price stays from the shell.

Finance staff run `check` before publishing a tariff; auditors run `quote` to
re-compute a bill from (tariff version, calendar version, entry, exit,
vehicle, stay of the day) alone: `--calendar` gives the calendar files a
document with `schedules` is read by, `--stay-of-day` the stay's place among
the plate's stays of that day for `nev.daily_grace`.
"""

import re
from datetime import datetime
from pathlib import Path

import click
import msgspec

from parking.money import format_yuan
from parking.tariffs.calendar import Calendar, CalendarError, decode_calendar
from parking.tariffs.decode import decode_tariff
from parking.tariffs.logic import listed, quote_to_json
from parking.tariffs.logic import quote as price
from parking.tariffs.model import Band, Cap, QuoteError, Tariff, TariffError

# RFC 3339 date-time: seconds are required, the offset is required, and
# fractions stop at microseconds, the resolution of the engine.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})",
)


class _Timestamp(click.ParamType[datetime]):
    name = "RFC3339"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not an RFC 3339 time, e.g. 2026-11-27T10:00:00+08:00", param, ctx
            )
        if moment.tzinfo is None:
            self.fail(
                f"{text!r} has no UTC offset; a bill needs an exact instant, "
                "e.g. 2026-11-27T10:00:00+08:00",
                param,
                ctx,
            )
        if _RFC3339.fullmatch(text) is None:
            self.fail(
                f"{text!r} is not an RFC 3339 time, e.g. 2026-11-27T10:00:00+08:00", param, ctx
            )
        return moment


def _load(path: Path) -> Tariff:
    try:
        return decode_tariff(path.read_bytes())
    except TariffError as error:
        raise click.ClickException(f"{path}: {error}") from error


def _load_calendar(path: Path) -> Calendar:
    try:
        return decode_calendar(path.read_bytes())
    except CalendarError as error:
        raise click.ClickException(f"{path}: {error}") from error


_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


def _band_line(band: Band) -> str:
    if band.flat is not None:
        pricing = f"flat {format_yuan(band.flat)} per segment"
    else:
        assert band.tiers is not None  # a band has exactly one of flat and tiers
        pricing = "; ".join(
            f"from {tier.after_minutes} min: {format_yuan(tier.unit_fen)} "
            f"per {tier.unit_minutes} min"
            for tier in band.tiers
        )
        if band.partial_unit == "free":
            pricing += "; partial unit free"
        elif not isinstance(band.partial_unit, str):
            pricing += f"; partial unit free up to {band.partial_unit.free_up_to_minutes} min"
    if band.segment_cap_fen is not None:
        pricing += f"; at most {format_yuan(band.segment_cap_fen)} per segment"
    return f"band {band.name} {band.start}-{band.end}: {pricing}"


def _cap_line(cap: Cap) -> str:
    cycle: str = cap.cycle
    if cycle == "daily":
        cycle += f" from {cap.reset_at or '00:00'}"
    amounts = cap.amounts
    if not amounts:
        return f"cap: none; cycles {cycle} (for tiers_restart)"
    if len(amounts) == 1:
        return f"cap: {format_yuan(amounts[0])} per {cycle}"
    rising = ", ".join(format_yuan(fen) for fen in amounts)
    return f"cap: {rising} per {cycle} (cycle 1, 2, ...; the last repeats)"


def _summary(document: Tariff, indent: str) -> list[str]:
    lines: list[str] = []
    schedules = document.day_schedules
    if schedules is None:
        lines.extend(f"{indent}{_band_line(band)}" for band in document.bands)
    else:
        for i, schedule in enumerate(schedules):
            lines.append(f"{indent}schedule {i}: {', '.join(schedule.days)}")
            lines.extend(f"{indent}  {_band_line(band)}" for band in schedule.bands)
    if document.restart != "stay":
        lines.append(f"{indent}tiers restart per {document.restart}")
    if document.grace is not None:
        kind = "deductible" if document.grace.deductible else "not deductible"
        lines.append(f"{indent}grace: {document.grace.minutes} min, {kind}")
    if document.cap is not None:
        lines.append(f"{indent}{_cap_line(document.cap)}")
    return lines


@click.group(name="tariff")
def tariff() -> None:
    """Check tariff documents and quote stays."""


@tariff.command()
@click.argument("file", type=_FILE)
def check(file: Path) -> None:
    """Validate FILE against the tariff contract and summarise it."""
    document = _load(file)
    version = f", contract v{document.contract_version}" if document.contract_version > 1 else ""
    click.echo(
        f"ok: {document.id} ({document.name}), {document.currency}, {document.timezone}{version}"
    )
    for line in _summary(document, "  "):
        click.echo(line)
    policy = document.nev
    if policy is not None:
        kind = "deductible" if policy.grace_deductible else "not deductible"
        click.echo(f"  nev: grace {policy.grace_minutes} min {kind}, pays {policy.percent}%")
        if isinstance(policy.daily_grace, tuple):
            graces = ", ".join(
                f"{g.minutes} min {'deductible' if g.deductible else 'not deductible'}"
                for g in policy.daily_grace
            )
            click.echo(
                f"  nev daily grace (stay 1, 2, ... of the day in {document.group}): {graces}"
            )
        if isinstance(policy.tariff, Tariff):
            click.echo(f"  nev tariff: {policy.tariff.id} ({policy.tariff.name})")
            for line in _summary(policy.tariff, "    "):
                click.echo(line)


@tariff.command()
@click.argument("file", type=_FILE)
@click.option("--entry", required=True, type=_Timestamp(), help="Entry time, RFC 3339.")
@click.option("--exit", "exit_", required=True, type=_Timestamp(), help="Exit time, RFC 3339.")
@click.option("--nev", is_flag=True, help="Price as a new-energy vehicle.")
@click.option(
    "--calendar",
    "calendar_files",
    multiple=True,
    type=_FILE,
    help="A calendar file (JSON) classing dates into workday, rest day and holiday; "
    "repeat for more years. Dates no calendar covers are classed by weekday.",
)
@click.option(
    "--stay-of-day",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="This stay's place among the plate's stays entering that local day "
    "(same grace_group), for nev.daily_grace.",
)
def quote(
    file: Path,
    entry: datetime,
    exit_: datetime,
    *,
    nev: bool,
    calendar_files: tuple[Path, ...],
    stay_of_day: int,
) -> None:
    """Price a stay under FILE and print the itemised quote as JSON."""
    document = _load(file)
    calendars = [_load_calendar(path) for path in calendar_files]
    try:
        result = price(
            document, entry, exit_, nev=nev, calendars=calendars, stay_of_day=stay_of_day
        )
    except QuoteError as error:
        raise click.ClickException(str(error)) from error
    # The same cut as the API's (parking.tariffs.MAX_LISTED_CHARGES).
    click.echo(msgspec.json.format(quote_to_json(listed(result)), indent=2).decode())
