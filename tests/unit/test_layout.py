"""The house's shape, checked: a source file over ~600 lines says at its top why it is
kept whole (docs/architecture.md, "The rule")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 620
#: how a file says why it is kept whole, in its first lines
REASONS = ("Kept whole", "Kept as one")


def test_every_long_source_file_says_why_it_is_kept_whole() -> None:
    unexplained = []
    for folder in ("src", "counterparts"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".lua"):
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
            if len(lines) > LIMIT and not any(r in "\n".join(lines[:12]) for r in REASONS):
                unexplained.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert unexplained == []


#: SQL that reads or writes a table of the lots domain
_LOTS_SQL = re.compile(r"\b(FROM|JOIN|INTO|UPDATE)\s+(lots|lanes|spaces)\b")


def test_only_the_lots_package_touches_the_lots_lanes_and_spaces_tables() -> None:
    """Every other package asks ``parking.lots`` (docs/architecture.md, the layout)."""
    outside = []
    for folder in ("src", "counterparts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if (ROOT / "src/parking/lots") in path.parents:
                continue
            text = path.read_text(encoding="utf-8")
            outside += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in _LOTS_SQL.finditer(text)]
    assert outside == []


def test_the_rule_sees_a_table_read() -> None:
    assert _LOTS_SQL.search("SELECT id FROM lots WHERE id = $1")
    assert _LOTS_SQL.search("LEFT JOIN lanes l ON l.lot_id = d.lot_id")
    assert not _LOTS_SQL.search("SELECT lot_id FROM lot_tariffs")
