from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from parking.config import VARIABLES, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_configuration_table_lists_every_variable_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    for name, default, _meaning in VARIABLES:
        shown = default if default.startswith("(") else f"`{default}`"
        assert f"| `{name}` | {shown} |" in text, name


def test_every_token_the_walkthrough_issues_is_issued(settings: Settings, city_db_url: str) -> None:
    """Each ``parking tokens issue`` line of the walkthrough runs as written (an
    operator's once lacked ``--company``, which the CLI requires, and every later step
    of that section answered 401)."""
    env = {**os.environ, "PARKING_DATABASE_URL": city_db_url}  # the seeded city
    lines = re.findall(r"uv run parking (tokens issue [^)`\n]*)", README.read_text("utf-8"))
    assert len(lines) >= 5, lines
    for line in sorted(set(lines)):
        done = subprocess.run(
            [sys.executable, "-m", "parking", *shlex.split(line)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, (line, done.stderr)
        assert done.stdout.count(".") == 2, (line, "not a token")  # header.payload.signature
