"""``parking simulate``: drive the devices of some lots against the stack's broker."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from datetime import timedelta
from pathlib import Path
from typing import Final

import asyncpg
import click
import msgspec

from counterparts.devices.city import CityRunner, RunOptions, Totals, choose_lots, load_trace
from counterparts.devices.device import PAHO_LOG, BrokerAddress
from counterparts.devices.outbox import Outbox
from parking import config
from parking.devices import service
from parking.devices.messages import Topics
from parking.devices.model import FleetLot

#: The trace lives beside the project's shared data; PARKING_TRACE points elsewhere.
DEFAULT_TRACE: Final = "/work/shared/data/birmingham-carpark-occupancy-2016.csv"
# Each device is a TCP connection and a paho client (~100 KB); beyond a few
# thousand per process the event loop, not the broker, becomes the bottleneck.
MAX_DEVICES_PER_PROCESS: Final = 3000


def _clock_offsets(values: tuple[str, ...]) -> dict[str, timedelta]:
    offsets: dict[str, timedelta] = {}
    for value in values:
        device, sep, seconds = value.partition("=")
        try:
            offset = timedelta(seconds=float(seconds))
        except ValueError as error:
            raise click.BadParameter(
                f"{value!r} is not DEVICE=SECONDS", param_hint="--clock-skew"
            ) from error
        if not sep or not device:
            raise click.BadParameter(f"{value!r} is not DEVICE=SECONDS", param_hint="--clock-skew")
        offsets[device] = offset
    return offsets


def _echo(line: str) -> None:
    click.echo(line, err=True)


@click.command()
@click.option("--lots", "lot_count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="skip this many lots")
@click.option("--lot", "only", multiple=True, help="these lots instead (repeatable)")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=50.0,
    show_default=True,
    help="events per second, all devices together",
)
@click.option("--duration", type=click.FloatRange(min=0.1), help="seconds; default until Ctrl-C")
@click.option("--seed", type=int, default=1, show_default=True, help="lots, plates and trace day")
@click.option(
    "--drain",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="after --duration, wait up to this long for watermarks to empty the outboxes",
)
@click.option(
    "--republish-after",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="seconds before an uncovered event is published again",
)
@click.option("--progress-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PARKING_TRACE",
    default=DEFAULT_TRACE,
    show_default=True,
)
@click.option(
    "--outbox",
    "outbox_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="default: <stack dir>/simulator/outbox.sqlite3",
)
@click.option(
    "--max-devices", type=click.IntRange(min=1), default=MAX_DEVICES_PER_PROCESS, show_default=True
)
@click.option(
    "--clock-skew",
    "clock_skews",
    multiple=True,
    metavar="DEVICE=SECONDS",
    help="run this device's clock off by SECONDS (negative: behind); repeatable",
)
def simulate(
    lot_count: int,
    offset: int,
    only: tuple[str, ...],
    rate: float,
    duration: float | None,
    seed: int,
    drain: float,
    republish_after: float,
    progress_every: float,
    trace_path: Path,
    outbox_path: Path | None,
    max_devices: int,
    clock_skews: tuple[str, ...],
) -> None:
    """Simulate the gates and sensors of --lots lots (provisioned with `devices provision-city`).

    Occupancy follows the Birmingham trace scaled to each lot; every device
    keeps a persistent outbox, so a restarted simulator resumes each seq.
    Prints progress to stderr and a JSON summary to stdout.
    """
    clock_offsets = _clock_offsets(clock_skews)
    logging.basicConfig(
        level=logging.WARNING, format="[simulate] %(levelname)s %(name)s: %(message)s"
    )
    # A broker restart makes every device log a reset; the progress lines count them.
    PAHO_LOG.setLevel(logging.CRITICAL)
    settings = config.load()
    try:
        secrets = service.read_secrets(service.secrets_path(settings.stack_dir))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if not secrets:
        raise click.ClickException(
            f"no device secrets in {service.secrets_path(settings.stack_dir)}; "
            "run `parking devices provision-city` first"
        )
    try:
        trace = load_trace(trace_path)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot read the occupancy trace: {error}") from error

    async def fleet() -> list[FleetLot]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await service.fleet(conn)
        finally:
            await conn.close()

    lots = choose_lots(asyncio.run(fleet()), count=lot_count, offset=offset, seed=seed, only=only)
    count = sum(len(lot.devices) for lot in lots)
    if count > max_devices:
        raise click.ClickException(
            f"{len(lots)} lots have {count} devices, more than --max-devices {max_devices}; "
            "use fewer --lots, or several processes with disjoint --offset ranges"
        )
    outbox = Outbox(outbox_path or settings.stack_dir / "simulator" / "outbox.sqlite3")
    runner = CityRunner(
        lots,
        secrets,
        broker=BrokerAddress(settings.mqtt_host, settings.mqtt_port),
        topics=Topics(settings.topic_prefix),
        outbox=outbox,
        trace=trace,
        options=RunOptions(
            rate=rate,
            duration=duration,
            seed=seed,
            republish_after=republish_after,
            progress_every=progress_every,
            drain=drain,
            clock_offsets=clock_offsets,
        ),
        progress=_echo,
    )

    async def run() -> Totals:
        main = asyncio.current_task()
        assert main is not None
        # SIGTERM (a supervisor, `timeout`) stops as gracefully as Ctrl-C:
        # devices say offline and disconnect; outboxes stay for the next run.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        try:
            return await runner.run()
        except asyncio.CancelledError:
            _echo("[simulate] stopped; outboxes are kept for the next run")
            return runner.totals()

    try:
        totals = asyncio.run(run())
    except KeyboardInterrupt:
        _echo("[simulate] interrupted; outboxes are kept for the next run")
        totals = runner.totals()
    finally:
        outbox.close()
    click.echo(json.dumps(msgspec.to_builtins(totals), ensure_ascii=False))
