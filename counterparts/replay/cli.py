"""``parking replay``: a day of the city through the platform, then the ground truth."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import click

from counterparts.devices.cli import DEFAULT_TRACE
from counterparts.devices.device import PAHO_LOG
from counterparts.replay.runner import ReplayOptions, replay
from parking import config
from parking.clock import SHANGHAI


def _yesterday() -> date:
    return (datetime.now(UTC).astimezone(SHANGHAI) - timedelta(days=1)).date()


def _echo(line: str) -> None:
    click.echo(line, err=True)


@click.command()
@click.option("--seed", type=int, default=1, show_default=True, help="the day's random seed")
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="the business day replayed (Asia/Shanghai); default: yesterday",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=1.0),
    default=100.0,
    show_default=True,
    help="times real time: 100 plays a day in 14.4 minutes",
)
@click.option(
    "--lots", type=click.IntRange(min=1), help="this many lots (seeded choice); default all"
)
@click.option("--lot", "only", multiple=True, help="these lots instead (repeatable)")
@click.option("--hours", type=click.FloatRange(min=0.1, max=24.0), default=24.0, show_default=True)
@click.option(
    "--start",
    "start",
    default="00:00",
    show_default=True,
    help="time of day the window starts (HH:MM, Asia/Shanghai)",
)
@click.option(
    "--processes", type=click.IntRange(min=1), help="device processes; default 1 per 2,500 devices"
)
@click.option(
    "--drain",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="seconds to wait after the day for every event to be stored",
)
@click.option(
    "--republish-after",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="seconds before a device publishes again an event the watermark has not covered",
)
@click.option(
    "--pay-rate",
    type=click.FloatRange(min=0.1),
    default=40.0,
    show_default=True,
    help="payments per second the drivers make at most",
)
@click.option("--no-payments", is_flag=True, help="no drivers' side (devices only)")
@click.option(
    "--fault-scale",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="faults (duplicates, out of order, outages, flaps, malformed payloads) times this",
)
@click.option("--progress-every", type=click.FloatRange(min=0.5), default=5.0, show_default=True)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PARKING_TRACE",
    default=DEFAULT_TRACE,
    show_default=True,
)
@click.option(
    "--secrets",
    type=click.Path(dir_okay=False, path_type=Path),
    help="device secrets (JSON); default the stack's device-secrets.json",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="report folder; default .parking/loadtests/<run>")  # fmt: skip
@click.option("--api", "api_url", help="the platform's API; default the stack's")
@click.option("--sandbox", "sandbox_url", help="the sandbox payment provider; default the stack's")
def replay_command(
    seed: int,
    day: datetime | None,
    speedup: float,
    lots: int | None,
    only: tuple[str, ...],
    hours: float,
    start: str,
    processes: int | None,
    drain: float,
    republish_after: float,
    pay_rate: float,
    no_payments: bool,
    fault_scale: float,
    progress_every: float,
    trace_path: Path,
    secrets: Path | None,
    out: Path | None,
    api_url: str | None,
    sandbox_url: str | None,
) -> None:
    """Replay a day of the city through the broker as its devices, then check the platform.

    Deterministic by seed: the same seed, date, lots and starting state give the
    same day. Every device publishes with its own credentials and keeps the device
    contract (outbox, seq, watermark, re-publish); regular drivers sign up, pay
    through the app and the sandbox provider, or pay contactless. A progress line
    shows events sent, applied, persisted and the lag, the devices' health and
    the platform's. Afterwards the platform is checked against what was generated
    (sessions once each, fees priced a second time, bills, ledger, occupancy, dead
    letters) and a report is written (JSON and markdown). Exit status 1 when the
    ground truth has mismatches.
    """
    try:
        start_time = time.fromisoformat(start)
    except ValueError as error:
        raise click.BadParameter(f"{start!r} is not HH:MM", param_hint="--start") from error
    logging.basicConfig(
        level=logging.WARNING, format="[replay] %(levelname)s %(name)s: %(message)s"
    )
    PAHO_LOG.setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = config.load()
    options = ReplayOptions(
        seed=seed, day=day.date() if day is not None else _yesterday(), speedup=speedup,
        start=start_time, hours=hours, lots=lots, only=only, processes=processes,
        drain_s=drain, republish_after=republish_after, progress_every=progress_every,
        trace=trace_path, secrets=secrets, out=out, api_url=api_url, sandbox_url=sandbox_url,
        pay_rate=pay_rate, payments=not no_payments, fault_scale=fault_scale,
    )  # fmt: skip

    async def main() -> tuple[bool, Path]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        report, path = await replay(options, settings, _echo)
        return report.passed, path

    try:
        passed, path = asyncio.run(main())
    except KeyboardInterrupt:
        _echo("[replay] interrupted")
        sys.exit(130)
    except (RuntimeError, TimeoutError, OSError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    report = json.loads(path.read_text())
    checked = report["check"]
    _echo((path.parent / "report.md").read_text())
    click.echo(
        json.dumps(
            {
                "report": str(path),
                "passed": checked["passed"],
                "mismatches": checked["mismatches"],
                "achieved_events_per_s": report["timing"]["achieved_events_per_s"],
                "lag_s": report["lag_s"]["day_events"],
            },
            ensure_ascii=False,
        )
    )
    if not passed:
        sys.exit(1)
