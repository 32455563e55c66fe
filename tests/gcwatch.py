"""How long the test process stood still for Python's garbage collector, printed at the
end of the run (a pytest plugin, loaded by ``tests/conftest.py``).

Why: a CI run's API, served in this process, once took 2.1 s to connect to Redis on
loopback; the next request connected in milliseconds. A full collection of a large
heap holds the interpreter (every thread, the app's event loop too) for its whole
length, so the run says how long its collections took and during which test: a pause
near a second names the cause of such a stall instead of leaving it a guess.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

#: Collections at least this long are counted and the longest ones named.
SLOW_S = 0.1


@dataclass
class _Watch:
    test: str = "(collection)"
    started: float = 0.0
    count: int = 0
    total_s: float = 0.0
    slow: list[tuple[float, int, str]] = field(default_factory=list)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        self.count += 1
        self.total_s += took
        if took >= SLOW_S:
            self.slow.append((took, int(info.get("generation", -1)), self.test))


_watch = _Watch()


def pytest_configure(config: pytest.Config) -> None:
    if _watch not in gc.callbacks:
        gc.callbacks.append(_watch)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _watch.test = nodeid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.section("garbage collection in the test process")
    terminalreporter.write_line(
        f"{_watch.count} collections, {_watch.total_s:.2f} s in all; "
        f"{len(_watch.slow)} of them {SLOW_S * 1000:.0f} ms or longer; "
        f"{len(gc.get_objects())} objects tracked at the end"
    )
    for took, generation, test in sorted(_watch.slow, reverse=True)[:5]:
        terminalreporter.write_line(f"  {took * 1000:.0f} ms (generation {generation}) in {test}")
