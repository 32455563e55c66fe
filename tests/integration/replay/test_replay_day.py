"""A shortened city day (20 lots, two morning hours at 120x) replayed through the real
broker, gateway, persister, API and sandbox provider, with faults on top of the plan's
own (duplicates, events out of order, a device outage with its backlog, misreads,
unplated cars, malformed payloads): the gateway and the persister are killed with
``kill -9`` while it plays. Its ground-truth check must find nothing missing, nothing
twice and every fee right."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from kits import free_port
from payment_servers import running_sandbox
from pipekit import Pipeline

from parking.devices import service as devices
from parking.lots import service as lots

#: the replay reads the trace beside the repo (CI lays shared/ there), else /work/shared
TRACE_NAME = "birmingham-carpark-occupancy-2016.csv"
GATED_LOTS = 14
STREET_LOTS = 6


def trace() -> Path:
    beside = Path(__file__).resolve().parents[4] / "shared" / "data" / TRACE_NAME
    return beside if beside.exists() else Path("/work/shared/data") / TRACE_NAME


async def provision(pipe: Pipeline, path: Path) -> list[str]:
    """Gates on every lane and sensors on every space of a few small lots, registered
    through the device registry (ids unique to this test: the broker keeps retained
    watermarks across tests); their secrets in ``path`` as the simulators read them."""
    gated = [
        r["id"]
        for r in await pipe.conn.fetch(
            "SELECT id FROM lots WHERE kind = 'gated' ORDER BY capacity, id LIMIT $1", GATED_LOTS
        )
    ]
    street = [
        r["id"]
        for r in await pipe.conn.fetch(
            "SELECT l.id FROM lots l JOIN spaces s ON s.lot_id = l.id "
            "WHERE l.kind = 'on_street' GROUP BY l.id HAVING count(*) BETWEEN 8 AND 25 "
            "ORDER BY l.id LIMIT $1",
            STREET_LOTS,
        )
    ]
    secrets: dict[str, str] = {}
    for lane in await lots.every_lane(pipe.conn):
        if lane.lot_id in gated:
            made = await devices.add_device(
                pipe.conn, lot_id=lane.lot_id, lane_id=lane.lane_id,
                device_id=f"{lane.lot_id}-{lane.lane_id}-{pipe.run}".lower(), broker=None,
            )  # fmt: skip
            secrets[made.device_id] = made.password
    for space in await lots.spaces_of(pipe.conn, street):
        made = await devices.add_device(
            pipe.conn, lot_id=space.lot_id, space_id=space.space_id,
            device_id=f"{space.lot_id}-{space.space_id}-{pipe.run}".lower(), broker=None,
        )  # fmt: skip
        secrets[made.device_id] = made.password
    await devices.sync_broker(pipe.conn, pipe.broker)
    devices.write_secrets(path, secrets)
    return gated + street


def _read(log: Path) -> str:
    return log.read_text(errors="replace")


async def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    while text not in await asyncio.to_thread(_read, log):
        if proc.poll() is not None:
            raise AssertionError(f"the replay ended early:\n{_read(log)[-4000:]}")
        await asyncio.sleep(0.5)


async def test_a_shortened_day_with_faults_loses_nothing_and_misprices_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    chosen = await provision(pipeline, tmp_path / "device-secrets.json")
    with running_sandbox(tmp_path / "sandbox", free_port()) as sandbox:
        port = free_port()
        env = {
            "PARKING_WECHATPAY_CONFIG": str(sandbox.config_path),
            "PARKING_NOTIFY_BASE_URL": f"http://127.0.0.1:{port}",
            "PARKING_PERSISTER_RECLAIM_IDLE_MS": "2000",
        }
        gateway = pipeline.gateway(**env).start()
        persister = pipeline.persister(**env).start()
        api = await pipeline.api(port, **env)
        await pipeline.subscribed()
        out = tmp_path / "report"
        log = tmp_path / "replay.log"
        argv = [
            sys.executable, "-m", "parking", "replay", "--seed", "17", "--date", "2026-12-01",
            "--start", "07:30", "--hours", "2", "--speedup", "120", "--fault-scale", "8",
            "--secrets", str(tmp_path / "device-secrets.json"), "--trace", str(trace()),
            "--api", api, "--sandbox", sandbox.base_url, "--out", str(out),
            "--republish-after", "5", "--drain", "180", "--progress-every", "10",
        ]  # fmt: skip
        replay = await asyncio.to_thread(start_replay, argv, {**pipeline.env, **env}, log)
        try:
            await wait_for_line(log, "devices connected", replay)
            # Faults of the platform's side while the day plays (M1, R1).
            await asyncio.sleep(15)
            gateway.kill()
            await asyncio.sleep(1)
            gateway.start(**env)
            await asyncio.sleep(10)
            persister.kill()
            persister.start(**env)
            stdout, _ = await asyncio.to_thread(replay.communicate, timeout=400)
        finally:
            if replay.poll() is None:
                replay.kill()
        report = json.loads(await asyncio.to_thread((out / "report.json").read_text))
    assert (gateway.starts, persister.starts) == (2, 2)
    checked = report["check"]
    assert checked["mismatches"] == {}, (checked["examples"], _read(log)[-3000:])
    assert checked["passed"]
    assert json.loads(stdout)["passed"]
    assert replay.returncode == 0
    assert report["plan"]["lots"] == len(chosen)
    compared = checked["compared"]
    assert compared["sessions"] > 100
    assert compared["fees"] > 50
    assert compared["dead_letters"] >= 3
    assert report["plan"]["faults"]["duplicate"] > 0
    assert report["plan"]["faults"]["hold_back"] > 0
    assert report["plan"]["outages"] > 0
    assert report["drivers"]["payments"] > 0
    assert checked["figures"]["bills_by_status"]["paid"] >= report["drivers"]["bills_paid"]
    assert checked["figures"]["trial_balance_fen"] == 0


def start_replay(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=stderr)
