"""The table ``make bench`` writes into docs/performance.md: every row with its
baseline and ratio, between markers that keep the rest of the page as it is."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """bench/run.py as a module (it imports bench/results.py beside it)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", module)
    spec.loader.exec_module(module)
    return module


def a_run(run: ModuleType) -> object:
    results = sys.modules["results"].Results("api")
    hello = results.baseline("hello-world (baseline)", 6085.4, "req/s", p99_ms=8.5)
    results.row(
        "city overview", 4634.2, "req/s", against=hello, goal=">= 0.5x hello-world", met=True
    )
    results.row("quote at a lot", 1264.0, "req/s", against=hello)
    return run.Run(
        date="2026-12-04T14:00:00+00:00",
        smoke=False,
        machine={"cpus": 2, "memory_gib": 23.4},
        git={"commit": "0123456789abcdef", "dirty": False},
        python="3.11.7",
        load_average={"start": [0.5, 0.4, 0.3], "end": [1.8, 0.9, 0.4]},
        benches=[run.Outcome(bench="api", script="bench/bench_api.py", exit=0, seconds=9, rows=3)],
        rows=results.rows,
    )


def test_every_row_shows_its_value_baseline_ratio_and_goal(run: ModuleType) -> None:
    table = run.table(a_run(run), ".parking/bench/results-x.json")
    assert "commit 0123456789" in table
    assert "| api | hello-world (baseline) | 6,085 req/s |  | 1x |  |  |" in table
    assert (
        "| api | city overview | 4,634 req/s | hello-world (baseline): 6,085 req/s | 0.762x "
        "| >= 0.5x hello-world | met |"
    ) in table
    assert (
        "| api | quote at a lot | 1,264 req/s | hello-world (baseline): 6,085 req/s | 0.208x |"
        in (table)
    )


def test_the_table_replaces_only_what_is_between_the_markers(run: ModuleType) -> None:
    doc = f"# Performance\n\nbefore\n\n{run.START}\nold table\n{run.END}\n\nafter\n"
    table = run.table(a_run(run), "results.json")
    once = run.with_table(doc, table)
    assert once.startswith("# Performance\n\nbefore\n\n")
    assert once.endswith(f"{run.END}\n\nafter\n")
    assert "old table" not in once
    assert table in once
    assert run.with_table(once, table) == once


def test_the_performance_page_has_the_markers_once() -> None:
    doc = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert doc.count("<!-- bench-table:start -->") == 1
    assert doc.count("<!-- bench-table:end -->") == 1
