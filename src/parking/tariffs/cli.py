"""`parking tariff`: check tariff documents and price stays from the shell.

Finance staff run `check` before publishing a tariff; auditors run `quote` to
re-compute a bill from (tariff, entry, exit, vehicle) alone.
"""

import re
from datetime import datetime
from pathlib import Path

import click
import msgspec

from parking.money import format_yuan
from parking.tariffs.decode import decode_tariff
from parking.tariffs.logic import listed, quote_to_json
from parking.tariffs.logic import quote as price
from parking.tariffs.model import QuoteError, Tariff, TariffError

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


_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@click.group(name="tariff")
def tariff() -> None:
    """Check tariff documents and quote stays."""


@tariff.command()
@click.argument("file", type=_FILE)
def check(file: Path) -> None:
    """Validate FILE against the tariff contract and summarise it."""
    document = _load(file)
    click.echo(f"ok: {document.id} ({document.name}), {document.currency}, {document.timezone}")
    for band in document.bands:
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
        if band.segment_cap_fen is not None:
            pricing += f"; at most {format_yuan(band.segment_cap_fen)} per segment"
        click.echo(f"  band {band.name} {band.start}-{band.end}: {pricing}")
    if document.grace is not None:
        kind = "deductible" if document.grace.deductible else "not deductible"
        click.echo(f"  grace: {document.grace.minutes} min, {kind}")
    if document.cap is not None:
        cycle: str = document.cap.cycle
        if cycle == "daily":
            cycle += f" from {document.cap.reset_at or '00:00'}"
        click.echo(f"  cap: {format_yuan(document.cap.fen)} per {cycle}")
    if document.nev is not None:
        kind = "deductible" if document.nev.grace_deductible else "not deductible"
        click.echo(
            f"  nev: grace {document.nev.grace_minutes} min {kind}, pays {document.nev.percent}%"
        )


@tariff.command()
@click.argument("file", type=_FILE)
@click.option("--entry", required=True, type=_Timestamp(), help="Entry time, RFC 3339.")
@click.option("--exit", "exit_", required=True, type=_Timestamp(), help="Exit time, RFC 3339.")
@click.option("--nev", is_flag=True, help="Price as a new-energy vehicle.")
def quote(file: Path, entry: datetime, exit_: datetime, *, nev: bool) -> None:
    """Price a stay under FILE and print the itemised quote as JSON."""
    document = _load(file)
    try:
        result = price(document, entry, exit_, nev=nev)
    except QuoteError as error:
        raise click.ClickException(str(error)) from error
    # The same cut as the API's (parking.tariffs.MAX_LISTED_CHARGES).
    click.echo(msgspec.json.format(quote_to_json(listed(result)), indent=2).decode())
