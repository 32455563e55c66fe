"""No plate or phone number unmasked in any log line the run's processes wrote (issue 19,
point 3). Collected last (``tests/zz_logs``): it reads the log of every platform process
the tests started (gateways, persisters, APIs, jobs, adapters, each a ``*.log`` under the
run's temporary folder) and fails on the first line that still carries one."""

from __future__ import annotations

from pathlib import Path

import pytest

from parking.observability import mask_personal


def test_no_log_line_of_the_run_carries_a_plate_or_a_phone(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.getbasetemp()
    leaks = []
    for path in sorted(root.rglob("*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if mask_personal(line) != line:
                leaks.append(f"{Path(path).relative_to(root)}:{number}: {mask_personal(line)}")
    assert leaks == [], "\n".join(leaks[:20])
