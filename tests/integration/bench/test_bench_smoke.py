"""Every benchmark runs at smoke sizes (seconds, not minutes) through ``bench/run.py``,
so none of them rots unnoticed: each must finish and record its rows. Nothing here is
timed; the figures of a smoke run say nothing about performance."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from parking.config import Settings

ROOT = Path(__file__).resolve().parents[3]
BENCHES = sorted(path.stem for path in (ROOT / "bench").glob("bench_*.py"))
#: what every row carries (bench/results.py)
FIELDS = {
    "bench",
    "case",
    "value",
    "unit",
    "baseline_case",
    "baseline_value",
    "ratio",
    "goal",
    "met",
    "extra",
}
#: benchmarks that serve the app over the stack's own database: given a fresh copy of
#: the seeded city instead, so they leave the test stack's database as they found it
OVER_THE_APP_DATABASE = {"bench_api", "bench_driver_api"}
#: the rows that show how a path scales with cores (issue 20), measured in the same run
#: against the one-process figure
SCALING = {
    "bench_ingest": "two gateways on the share group -> Redis -> persister -> PostgreSQL",
    "bench_driver_api": "current session with fee, 2 workers",
}


def two_free_ports() -> int:
    """A port whose next one is free too (the city bench serves on BENCH_API_PORT + 1)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.parametrize("bench", BENCHES)
def test_benchmark_completes_at_smoke_sizes_and_records_its_rows(
    bench: str, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {
        **os.environ,
        "BENCH_RESULTS_DIR": str(tmp_path),
        "BENCH_API_PORT": str(two_free_ports()),
    }
    if bench in OVER_THE_APP_DATABASE:
        env["PARKING_DATABASE_URL"] = request.getfixturevalue("city_db_url")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", bench],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, output
    (written,) = tmp_path.glob("results-*-smoke.json")
    run = json.loads(written.read_text())
    assert run["smoke"] is True
    assert [(b["bench"], b["exit"]) for b in run["benches"]] == [(bench.removeprefix("bench_"), 0)]
    assert run["rows"], output
    for row in run["rows"]:
        assert row.keys() >= FIELDS, row
    if bench in SCALING:
        (scaled,) = [row for row in run["rows"] if row["case"] == SCALING[bench]]
        assert scaled["baseline_case"] != scaled["case"], scaled
        assert scaled["value"] > 0, scaled
        assert row["bench"] == bench.removeprefix("bench_")
        for figure in ("value", "baseline_value", "ratio"):
            assert isinstance(row[figure], float), row
            assert row[figure] > 0, row
        assert row["met"] is None or isinstance(row["met"], bool), row
    if bench == "bench_ingest":  # the core on the Redis Cluster, against the single Redis
        (clustered,) = [row for row in run["rows"] if "Redis Cluster" in row["case"]]
        assert clustered["value"] > 0, clustered
        assert "single Redis" in clustered["baseline_case"], clustered
    assert not (tmp_path / "latest.json").exists()
