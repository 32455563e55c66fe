"""The chaos table: every reliability-matrix row, the tests that cause its fault, and
what they found (a pytest plugin, loaded by ``tests/conftest.py``).

``make chaos`` runs ``pytest --chaos``: only the tests `chaos_rows.ROWS` names,
under city load (``CHAOS_LOAD=city``: a bigger fleet, see ``pipekit``), and fails
unless every row ran, passed and lost no event. ``make test`` runs the same tests
among the others at the CI-sized load, and prints the table for the rows it ran.
The table also goes to ``<stack dir>/../chaos/chaos-<time>.md``.

Events come from the tests themselves: `note_events` (called by the pipeline's
invariant check) records how many events the devices sent, how many distinct ones
PostgreSQL stored, and which invariants were checked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from chaos_rows import ROWS, Row

_INTEGRATION = "tests/integration/"


@dataclass
class _Found:
    tests: int = 0
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    sent: int = 0
    stored: int = 0
    invariants: set[str] = field(default_factory=set)
    seconds: float = 0.0
    with_events: bool = False


_found: dict[str, _Found] = {}
_current: list[str] = []


def row_of(nodeid: str) -> Row | None:
    """The row whose tests include this test (``tests/integration/...::name[case]``)."""
    if not nodeid.startswith(_INTEGRATION):
        return None
    path, _, name = nodeid[len(_INTEGRATION) :].partition("::")
    name = name.split("[", 1)[0]
    for row in ROWS:
        for test in row.tests:
            want_path, _, want_name = test.partition("::")
            if want_path == path and want_name in ("", name):
                return row
    return None


def note_events(*, sent: int, stored: int, invariants: str) -> None:
    """What the running test's devices sent and PostgreSQL stored (distinct events);
    a test that checks more than once counts its last check."""
    if _current:
        _note[:] = [(sent, stored, invariants)]


_note: list[tuple[int, int, str]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos",
        action="store_true",
        help="run only the reliability matrix's fault tests and require every row to pass",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--chaos"):
        return
    keep = [item for item in items if row_of(item.nodeid) is not None]
    dropped = [item for item in items if row_of(item.nodeid) is None]
    config.hook.pytest_deselected(items=dropped)
    items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    row = row_of(item.nodeid)
    if row is None:
        return (yield)
    _current[:] = [row.row]
    _note.clear()
    found = _found.setdefault(row.row, _Found())
    started = time.monotonic()
    try:
        return (yield)
    finally:
        found.seconds += time.monotonic() - started
        _current.clear()
        for sent, stored, invariants in _note:
            found.sent += sent
            found.stored += stored
            found.with_events = True
            found.invariants.update(invariants.split(","))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    row = row_of(item.nodeid)
    if row is not None:
        found = _found.setdefault(row.row, _Found())
        if report.when == "call" and report.passed:
            found.tests += 1
            found.passed += 1
        elif report.failed:
            found.tests += report.when == "call"
            found.failed.append(item.nodeid.rsplit("::", 1)[-1])
        elif report.when == "call" and report.skipped:
            found.failed.append(item.nodeid.rsplit("::", 1)[-1] + " (skipped)")
    return report


def table(*, every_row: bool) -> tuple[list[str], bool]:
    """The table's lines, and whether it is all green (every row, when asked)."""
    lines = [
        "| row | fault | checked | tests | events sent | stored | lost | invariants | seconds "
        "| result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    green = True
    for row in ROWS:
        found = _found.get(row.row)
        if found is None:
            if every_row:
                green = False
                lines.append(f"| {row.row} | {row.fault} | {row.checked} | 0 | | | | | | NOT RUN |")
            continue
        lost = found.sent - found.stored if found.with_events else 0
        ok = not found.failed and found.passed > 0 and lost == 0
        green = green and ok
        events = (
            (f"{found.sent:,}", f"{found.stored:,}", str(lost))
            if found.with_events
            else ("-", "-", "-")
        )
        result = "pass" if ok else "FAIL " + ", ".join(found.failed)[:200]
        lines.append(
            f"| {row.row} | {row.fault} | {row.checked} | {found.passed}/{found.tests} | "
            f"{' | '.join(events)} | {','.join(sorted(found.invariants)) or '-'} | "
            f"{found.seconds:.0f} | {result} |"
        )
    return lines, green


_summary: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _found:
        return
    chaos = bool(session.config.getoption("--chaos"))
    lines, green = table(every_row=chaos)
    load = os.environ.get("CHAOS_LOAD", "ci")
    stack = Path(os.environ.get("PARKING_STACK_DIR", ".parking/test"))
    out = stack.parent / "chaos" / f"chaos-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"load: {load}\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    _summary[:] = [f"chaos table (reliability matrix, load: {load})", *lines, f"written to {out}"]
    if chaos and not green:
        _summary.append("chaos: a row failed, lost events or did not run")
        if exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _summary:
        return
    terminalreporter.section(_summary[0])
    for line in _summary[1:]:
        terminalreporter.write_line(line)
