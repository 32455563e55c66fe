"""Two lots of the seeded city run on cameras under ``make run`` (parking.seed.cameras), and
``parking devices add --vendor`` registers one by hand; the camera simulators drive them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from camerakit import free_port, start_adapter, wait_rows
from pipekit import DEMO, Pipeline

from parking.devices import cameras, service, store
from parking.seed import cameras as camera_seed

VZENITH_LOT, HIKVISION_LOT = "GZ-ZG-0001", "GZ-ZG-0007"


async def _provision(conn: asyncpg.Connection, stack: Path, isapi_port: int = 8031) -> list[str]:
    return await camera_seed.provision(
        conn,
        stack_dir=stack,
        push_base_url="http://127.0.0.1:8030",
        isapi_base_url=f"http://127.0.0.1:{isapi_port}",
        broker=None,
        now=datetime.now(UTC),
    )


async def _gates(conn: asyncpg.Connection, lot: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT device_id, lane_id, vendor, serial, control_url FROM devices "
        "WHERE lot_id = $1 AND revoked_at IS NULL ORDER BY lane_id",
        lot,
    )


async def test_the_camera_lots_get_their_makers_cameras_and_no_mqtt_gates(
    city_db: asyncpg.Connection, tmp_path: Path
) -> None:
    added = await _provision(city_db, tmp_path)
    await service.provision_city(city_db, secrets_file=service.secrets_path(tmp_path), broker=None)
    vz, hik = await _gates(city_db, VZENITH_LOT), await _gates(city_db, HIKVISION_LOT)
    assert [(r["lane_id"], r["vendor"]) for r in vz] == [("in1", "vzenith"), ("out1", "vzenith")]
    assert [(r["lane_id"], r["vendor"]) for r in hik] == [
        ("in1", "hikvision"),
        ("out1", "hikvision"),
    ]
    assert all(r["control_url"].startswith("http://127.0.0.1:8031/cam/") for r in hik)
    assert sorted(added) == sorted(r["device_id"] for r in [*vz, *hik])
    secrets = service.read_secrets(service.secrets_path(tmp_path))
    assert set(added) <= set(secrets)
    assert set(cameras.control_credentials(cameras.control_secrets_path(tmp_path))) == {
        r["device_id"] for r in hik
    }
    # Cameras have no MQTT account and no MQTT simulator drives their lots.
    broker_users = {c.device_id for c in await store.live_credentials(city_db)}
    assert broker_users.isdisjoint(added)
    fleet_lots = {lot.lot.id for lot in await service.fleet(city_db)}
    assert {VZENITH_LOT, HIKVISION_LOT}.isdisjoint(fleet_lots)
    # Again: nothing changes.
    assert await _provision(city_db, tmp_path) == []


async def test_a_stack_seeded_before_cameras_has_the_camera_lots_gates_replaced(
    city_db: asyncpg.Connection, tmp_path: Path
) -> None:
    await service.provision_city(city_db, secrets_file=service.secrets_path(tmp_path), broker=None)
    before = await _gates(city_db, VZENITH_LOT)
    assert [r["vendor"] for r in before] == [None, None]
    await _provision(city_db, tmp_path)
    assert [r["vendor"] for r in await _gates(city_db, VZENITH_LOT)] == ["vzenith", "vzenith"]
    revoked = await city_db.fetchval(
        "SELECT count(*) FROM devices WHERE device_id = ANY($1::text[]) AND revoked_at IS NOT NULL",
        [r["device_id"] for r in before],
    )
    assert revoked == 2


async def test_devices_add_with_a_vendor_prints_the_push_url_and_hikvision_credentials(
    pipeline: Pipeline,
) -> None:
    vz = pipeline.cli(
        "devices", "add", "--lot", DEMO, "--lane", "in1", "--vendor", "vzenith",
        "--serial", "fe71e106-57263272",
    )  # fmt: skip
    assert vz.returncode == 0, vz.stderr
    made = json.loads(vz.stdout)
    base = pipeline.settings.camera_public_url
    assert made["push_url"] == f"{base}/cameras/vzenith/{made['device_id']}/{made['password']}"
    assert (made["vendor"], made["serial"], made["control_password"]) == (
        "vzenith",
        "fe71e106-57263272",
        None,
    )
    missing = pipeline.cli(
        "devices", "add", "--lot", DEMO, "--lane", "out1", "--vendor", "hikvision", "--serial", "X1"
    )  # fmt: skip
    assert missing.returncode != 0
    assert "--control-url" in missing.stderr
    hik = pipeline.cli(
        "devices", "add", "--lot", DEMO, "--lane", "out1", "--vendor", "hikvision",
        "--serial", "20220323AIJ67694167", "--control-url", "http://192.168.1.64",
    )  # fmt: skip
    assert hik.returncode == 0, hik.stderr
    camera = json.loads(hik.stdout)
    assert camera["control_user"] == "changbo"
    controls = cameras.control_credentials(
        cameras.control_secrets_path(pipeline.settings.stack_dir)
    )
    assert controls[camera["device_id"]] == ("changbo", camera["control_password"])
    taken = pipeline.cli(
        "devices", "add", "--lot", DEMO, "--lane", "in1", "--vendor", "vzenith",
        "--serial", "fe71e106-57263272", "--id", "another-camera",
    )  # fmt: skip
    assert taken.returncode != 0
    assert await pipeline.fetchval("SELECT count(*) FROM devices WHERE vendor IS NOT NULL") == 2


async def test_the_camera_simulators_drive_both_camera_lots_through_the_adapter(
    pipeline: Pipeline,
) -> None:
    stack = pipeline.tmp / "stack"
    isapi_port = free_port()
    pipeline.persister().start()
    own = {"PARKING_STACK_DIR": str(stack), "PARKING_REDIS_URL": pipeline.settings.redis_url}
    adapter = await start_adapter(pipeline, **own)
    await camera_seed.provision(
        pipeline.conn,
        stack_dir=stack,
        push_base_url=adapter.base_url,
        isapi_base_url=f"http://127.0.0.1:{isapi_port}",
        broker=None,
        now=datetime.now(UTC),
    )
    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "parking", "cameras", "simulate", "--duration", "12",
            "--rate", "5", "--isapi-port", str(isapi_port), "--seed", "3",
        ],
        env={**os.environ, **pipeline.env, **own, "PARKING_CAMERA_PUBLIC_URL": adapter.base_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    totals = json.loads(run.stdout)
    assert totals["pushes"] > 20
    assert (totals["failed"], totals["bad_replies"]) == (0, 0), (totals, adapter.proc.log()[-3000:])
    assert totals["opened"] > 0
    assert totals["heartbeats"] == 4
    for lot in (VZENITH_LOT, HIKVISION_LOT):
        await wait_rows(pipeline, "SELECT count(*) FROM passages WHERE lot_id = $1", lot)
