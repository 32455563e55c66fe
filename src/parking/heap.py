"""The garbage collector's pauses in the long-running processes.

CPython's cyclic collector stops the process while it walks every tracked object
of the generation it collects. The oldest generation holds everything a process
loaded at start (the modules of the platform and its libraries, the gateway's
directory of 9,000 devices and its tariffs), so each of its collections walked
all of it: 36-60 ms pauses in the gateway every ~15 s at 1,000 events/s, and a
passage that arrived during one waited that long for its barrier (the lane
latency benchmark's worst probes; docs/performance.md).

``settle()``, called once a process has loaded what it keeps for its lifetime,
collects once and then moves every surviving object to the permanent generation
(``gc.freeze()``): later collections walk only what was made since. Frozen
objects are still freed by reference counting when dropped; only a reference
cycle among them would stay, which is why the collection runs first. ``watch()``
records every collection's pause in the ``python_gc_pause_seconds`` histogram by
generation, so the effect is visible on ``/metrics`` in production too.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

from prometheus_client import Histogram

GC_PAUSE: Final = Histogram(
    "python_gc_pause_seconds",
    "How long one run of the cyclic garbage collector stopped the process",
    ["generation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)

_started: list[float] = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    elif _started[0]:
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - _started[0])


def watch() -> None:
    """Time every collection (idempotent)."""
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)


def settle() -> int:
    """Collect what is garbage now and freeze the rest out of later collections,
    once per process (a test process starts many apps and workers; the first one
    settles it); the number of objects frozen (``gc.get_freeze_count()``)."""
    watch()
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    return gc.get_freeze_count()
