"""Quotes per second of the fee engine, against a baseline measured in the same run.

    uv run python bench/bench_tariffs.py

The baseline is decoding the tariff document itself (`msgspec.json.decode` to
the Tariff struct, validation included): a fixed amount of work on this
machine, so the ratios stay comparable across machines and runs.
"""

import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
from results import Results, sized

from parking.tariffs import Tariff, decode_tariff, quote, quote_to_json

BEIJING = b"""{"id": "beijing-class1", "name": "\xe5\x8c\x97\xe4\xba\xac", "currency": "CNY",
 "timezone": "Asia/Shanghai",
 "bands": [
   {"name": "day", "from": "07:00", "to": "21:00",
    "tiers": [{"after_minutes": 0, "unit_minutes": 15, "unit_fen": 250},
              {"after_minutes": 60, "unit_minutes": 15, "unit_fen": 375}]},
   {"name": "night", "from": "21:00", "to": "07:00",
    "tiers": [{"after_minutes": 0, "unit_minutes": 120, "unit_fen": 100}]}],
 "cap": {"fen": 10000, "cycle": "rolling_24h"}}"""

# Each measurement runs this long; five of them keep the script near 8 s.
SECONDS_PER_CASE = sized(1.5, 0.05)


def rate(work: Callable[[], object]) -> float:
    """Calls per second of `work`, timed in batches for `SECONDS_PER_CASE`."""
    batch = 1
    while True:  # size a batch to about 10 ms so the clock is read rarely
        start = time.perf_counter()
        for _ in range(batch):
            work()
        if time.perf_counter() - start > 0.01:
            break
        batch *= 2
    calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SECONDS_PER_CASE:
        for _ in range(batch):
            work()
        calls += batch
    return calls / elapsed


def main() -> None:
    tariff = decode_tariff(BEIJING)
    shanghai = ZoneInfo(tariff.timezone)
    entry = datetime(2026, 11, 27, 10, 0, tzinfo=shanghai)
    three_days = entry + timedelta(days=3)
    two_hours = entry + timedelta(hours=2)
    charges = len(quote(tariff, entry, three_days, nev=False).charges)

    print(f"tariff engine bench: Python {platform.python_version()} on {sys.platform}")
    results = Results("tariffs")
    baseline = rate(lambda: msgspec.json.decode(BEIJING, type=Tariff))
    print(f"baseline  decode the tariff document    {baseline:>10,.0f} /s")
    base = results.baseline("decode the tariff document (baseline)", baseline, "/s")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("quote 2-hour stay", lambda: quote(tariff, entry, two_hours, nev=False)),
        (
            f"quote 3-day stay ({charges} charges)",
            lambda: quote(tariff, entry, three_days, nev=False),
        ),
        (
            "quote 3-day stay + JSON",
            lambda: quote_to_json(quote(tariff, entry, three_days, nev=False)),
        ),
        ("quote 3-day stay, NEV", lambda: quote(tariff, entry, three_days, nev=True)),
    ]
    for name, work in cases:
        per_second = rate(work)
        print(
            f"{name:<38}  {per_second:>10,.0f} /s  {1e6 / per_second:>8.1f} us"
            f"  ratio to baseline {per_second / baseline:.3f}"
        )
        results.row(name, per_second, "/s", against=base, us_per_call=1e6 / per_second)
    results.write()


if __name__ == "__main__":
    main()
