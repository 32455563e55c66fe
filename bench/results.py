"""The rows every benchmark records, and the file ``bench/run.py`` collects them from.

A row is one figure beside the baseline measured in the same run. ``ratio`` is always
``value / baseline_value``: above 1 is better for a rate, below 1 for a latency, a
size or a time, so the unit says which way a row reads. A baseline is recorded as a
row of its own (its ratio is 1), and ``goal``/``met`` carry the goal an issue set.

``bench/run.py`` names the file a benchmark writes in ``BENCH_RESULTS_FILE``; a
benchmark run alone only prints. ``BENCH_SMOKE=1`` asks for a run of seconds at small
sizes (``make test`` runs every benchmark so, to keep them working; its figures say
nothing about performance).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import msgspec

RESULTS_FILE = "BENCH_RESULTS_FILE"
SMOKE = "BENCH_SMOKE"

T = TypeVar("T")


def smoke() -> bool:
    """Whether this is a smoke run (``BENCH_SMOKE`` set to anything but ``0``)."""
    return os.environ.get(SMOKE, "0") not in ("", "0")


def sized(full: T, small: T) -> T:
    """``small`` in a smoke run, else ``full``: one place per size to read both."""
    return small if smoke() else full


class Baseline(msgspec.Struct, frozen=True, kw_only=True):
    case: str
    value: float
    unit: str


class Row(msgspec.Struct, frozen=True, kw_only=True):
    bench: str
    case: str
    value: float
    unit: str
    baseline_case: str
    baseline_value: float
    #: ``value / baseline_value``; None only when the baseline measured 0
    ratio: float | None
    #: the goal as an issue states it ("p99 <= 20 ms"), or None
    goal: str | None = None
    #: whether this run met the goal; None without a goal
    met: bool | None = None
    #: further figures of the same measurement (p99, errors, sizes), by name
    extra: dict[str, Any] = {}


class Results:
    """The rows of one benchmark's run, written where ``bench/run.py`` asked."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.rows: list[Row] = []

    def baseline(self, case: str, value: float, unit: str, **extra: Any) -> Baseline:
        base = Baseline(case=case, value=value, unit=unit)
        self.row(case, value, unit, against=base, **extra)
        return base

    def row(
        self,
        case: str,
        value: float,
        unit: str,
        *,
        against: Baseline,
        goal: str | None = None,
        met: bool | None = None,
        **extra: Any,
    ) -> Row:
        row = Row(
            bench=self.bench,
            case=case,
            value=float(value),
            unit=unit,
            baseline_case=against.case,
            baseline_value=float(against.value),
            ratio=value / against.value if against.value else None,
            goal=goal,
            met=met,
            extra=extra,
        )
        self.rows.append(row)
        return row

    def write(self) -> Path | None:
        """Write the rows to ``BENCH_RESULTS_FILE``, when set; returns the path written."""
        target = os.environ.get(RESULTS_FILE)
        if not target:
            return None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(msgspec.json.encode(self.rows))
        return path


def read(path: Path) -> list[Row]:
    return msgspec.json.decode(path.read_bytes(), type=list[Row])
