"""The chaos table's rows are the reliability matrix's, each names tests that exist,
and docs/reliability.md names the same tests for every row."""

from __future__ import annotations

import re
from pathlib import Path

from chaos_rows import ROWS
from chaoskit import row_of

ROOT = Path(__file__).resolve().parents[2]
#: the shared matrix beside the repo (CI lays shared/ there), else /work/shared
_BESIDE = ROOT.parent / "shared" / "reliability-matrix.md"
MATRIX = _BESIDE if _BESIDE.exists() else Path("/work/shared/reliability-matrix.md")
DOC = ROOT / "docs" / "reliability.md"


def test_every_row_of_the_shared_matrix_has_a_chaos_row() -> None:
    matrix_rows = set(re.findall(r"^\| ([MRPA]\d+) \|", MATRIX.read_text(encoding="utf-8"), re.M))
    assert len(matrix_rows) == 33
    assert {row.row for row in ROWS} == matrix_rows


def test_every_named_test_exists() -> None:
    for row in ROWS:
        for test in row.tests:
            path, _, name = test.partition("::")
            source = (ROOT / "tests" / "integration" / path).read_text(encoding="utf-8")
            if name:
                assert re.search(rf"^(async )?def {name}\(", source, re.M), (row.row, test)


def test_the_reliability_page_names_every_rows_tests() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for row in ROWS:
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| {row.row} |")), None)
        assert line is not None, row.row
        for test in row.tests:
            path, _, name = test.partition("::")
            assert path in line, (row.row, test)
            assert name in line, (row.row, test)


def test_a_test_id_finds_its_row() -> None:
    row = row_of(
        "tests/integration/persister/test_persister_recovery.py::"
        "test_r2_a_hung_persisters_entries_are_claimed_and_written_once_when_it_wakes"
        "[before-its-ack]"
    )
    assert row is not None
    assert row.row == "R2"
    slots = row_of("tests/integration/occupancy/test_occupancy_slots.py::anything")
    assert slots is not None
    assert slots.row == "R7"
    assert row_of("tests/integration/gateway/test_gateway_delivery.py::test_other") is None
    assert row_of("tests/unit/test_chaos_rows.py::test_a_test_id_finds_its_row") is None
