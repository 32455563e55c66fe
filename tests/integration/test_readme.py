from __future__ import annotations

from pathlib import Path

from parking.config import VARIABLES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_lists_every_variable_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    for name, default, _meaning in VARIABLES:
        shown = default if default.startswith("(") else f"`{default}`"
        assert f"| `{name}` | {shown} |" in text, name
