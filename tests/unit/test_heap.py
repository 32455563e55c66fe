"""The collector's pauses: timed on /metrics, and a process's start-up heap frozen once."""

from __future__ import annotations

import gc
import subprocess
import sys

from prometheus_client import REGISTRY

from parking import heap


def _runs(generation: str) -> float:
    value = REGISTRY.get_sample_value("python_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_every_collection_is_timed_by_generation() -> None:
    heap.watch()
    heap.watch()  # idempotent: one callback, one observation per run
    before = _runs("2")
    gc.collect()
    assert _runs("2") == before + 1


def test_a_process_is_settled_once_and_keeps_what_it_froze() -> None:
    code = (
        "import gc\n"
        "from parking import heap\n"
        "kept = [[i] for i in range(1000)]\n"
        "first = heap.settle()\n"
        "again = heap.settle()\n"
        "print(first, again, gc.get_freeze_count(), len(kept))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    first, again, frozen, kept = (int(x) for x in out)
    assert first > 1000  # the modules, and the 1,000 lists above
    assert again == first == frozen  # a second call freezes nothing more
    assert kept == 1000
