"""The house's shape, checked: a source file over ~600 lines says at its top why it is
kept whole (docs/architecture.md, "The rule")."""

from __future__ import annotations

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
