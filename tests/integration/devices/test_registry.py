from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from parking.config import Settings
from parking.devices import broker as broker_files
from parking.devices import service
from parking.devices.messages import Topics
from parking.devices.model import (
    Credential,
    DeviceError,
    DeviceIdTaken,
    DeviceKind,
    DeviceNotFound,
    PlacementNotFound,
    PlacementTaken,
    grants,
)
from parking.stack import service as stack_service

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

SMALL_CITY = """
INSERT INTO districts (code, name, kind, latitude, longitude)
VALUES ('ZG', '章贡区', 'district', 25.83, 114.93) ON CONFLICT DO NOTHING;
INSERT INTO lots (id, name, district_code, kind, capacity, latitude, longitude) VALUES
    ('T-GATED', '测试停车场', 'ZG', 'gated', 50, 25.83, 114.93),
    ('T-OTHER', '另一停车场', 'ZG', 'gated', 30, 25.83, 114.93),
    ('T-STREET', '测试路段', 'ZG', 'on_street', 3, 25.83, 114.93);
INSERT INTO lanes (lot_id, lane_id, direction) VALUES
    ('T-GATED', 'in1', 'in'), ('T-GATED', 'out1', 'out'),
    ('T-OTHER', 'in1', 'in'), ('T-OTHER', 'out1', 'out');
INSERT INTO spaces (lot_id, space_id) VALUES
    ('T-STREET', 'S0001'), ('T-STREET', 'S0002'), ('T-STREET', 'S0003'), ('T-GATED', 'P0001');
"""


@pytest.fixture
async def city(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(SMALL_CITY)
    return db


@pytest.fixture
def broker(settings: Settings) -> service.Broker:
    return stack_service.mosquitto_broker(settings)


async def _parking(db_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parking",
        *args,
        env={**os.environ, "PARKING_DATABASE_URL": db_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_add_prints_the_secret_once_and_the_registry_keeps_only_its_hash(
    city: asyncpg.Connection, db_url: str, broker: service.Broker
) -> None:
    code, out, err = await _parking(db_url, "devices", "add", "--lot", "T-GATED", "--lane", "in1")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["device_id"] == "t-gated-in1"
    assert printed["kind"] == "gate"
    password = printed["password"]
    assert len(password) >= 32

    stored = await city.fetchrow("SELECT * FROM devices WHERE device_id = 't-gated-in1'")
    assert stored is not None
    assert password not in stored["password_hash"]
    assert stored["password_hash"].startswith("$7$101$")
    assert broker_files.verify_password(password, stored["password_hash"])

    code, listed, err = await _parking(db_url, "devices", "list", "--lot", "T-GATED", "--json")
    assert code == 0, err
    assert password not in listed
    assert "$7$" not in listed
    assert [d["device_id"] for d in json.loads(listed)] == ["t-gated-in1"]

    # the broker files now hold the device (hash only) with its lane grants
    assert f"t-gated-in1:{stored['password_hash']}\n" in broker.files.password_file.read_text()
    acl = broker.files.acl_file.read_text()
    assert "user t-gated-in1\ntopic write parking/v1/lots/T-GATED/lanes/in1/passages\n" in acl
    assert password not in acl


async def test_add_refuses_unknown_placements_bad_ids_and_kinds_that_do_not_fit(
    city: asyncpg.Connection,
) -> None:
    with pytest.raises(PlacementNotFound):
        await service.add_device(city, lot_id="NOPE", lane_id="in1", broker=None)
    with pytest.raises(PlacementNotFound):
        await service.add_device(city, lot_id="T-GATED", lane_id="in9", broker=None)
    with pytest.raises(PlacementNotFound):
        await service.add_device(city, lot_id="T-STREET", space_id="S0999", broker=None)
    with pytest.raises(DeviceError):
        await service.add_device(
            city, lot_id="T-GATED", lane_id="in1", device_id="gate/in1", broker=None
        )
    with pytest.raises(DeviceError):
        await service.add_device(
            city, lot_id="T-GATED", lane_id="in1", device_id="x" * 65, broker=None
        )
    with pytest.raises(DeviceError):
        await service.add_device(city, lot_id="T-GATED", kind=DeviceKind.GATE, broker=None)
    with pytest.raises(DeviceError):
        await service.add_device(
            city, lot_id="T-STREET", space_id="S0001", kind=DeviceKind.SIGN, broker=None
        )
    assert await city.fetchval("SELECT count(*) FROM devices") == 0


async def test_kind_defaults_to_gate_at_a_lane_and_sensor_at_a_space(
    city: asyncpg.Connection,
) -> None:
    gate = await service.add_device(city, lot_id="T-GATED", lane_id="out1", broker=None)
    sensor = await service.add_device(city, lot_id="T-STREET", space_id="S0002", broker=None)
    sign = await service.add_device(city, lot_id="T-GATED", kind=DeviceKind.SIGN, broker=None)
    assert (gate.device_id, gate.kind) == ("t-gated-out1", DeviceKind.GATE)
    assert (sensor.device_id, sensor.kind) == ("t-street-s0002", DeviceKind.SENSOR)
    assert (sign.device_id, sign.kind) == ("t-gated-sign", DeviceKind.SIGN)


async def test_a_lane_has_one_live_gate_and_a_revoked_id_is_never_reused(
    city: asyncpg.Connection,
) -> None:
    first = await service.add_device(city, lot_id="T-GATED", lane_id="in1", broker=None)
    with pytest.raises(PlacementTaken):
        await service.add_device(city, lot_id="T-GATED", lane_id="in1", broker=None)
    with pytest.raises(DeviceIdTaken):
        await service.add_device(
            city, lot_id="T-GATED", lane_id="out1", device_id=first.device_id, broker=None
        )
    await service.revoke_device(city, first.device_id, at=NOW, broker=None)
    replacement = await service.add_device(city, lot_id="T-GATED", lane_id="in1", broker=None)
    assert replacement.device_id == "t-gated-in1-2"


async def test_revoke_keeps_the_first_revocation_time_and_unknown_devices_are_not_found(
    city: asyncpg.Connection,
) -> None:
    added = await service.add_device(city, lot_id="T-GATED", lane_id="in1", broker=None)
    revoked = await service.revoke_device(city, added.device_id, at=NOW, broker=None)
    again = await service.revoke_device(
        city, added.device_id, at=datetime(2027, 1, 1, tzinfo=UTC), broker=None
    )
    assert revoked.revoked_at == NOW
    assert again.revoked_at == NOW
    with pytest.raises(DeviceNotFound):
        await service.revoke_device(city, "nope", at=NOW, broker=None)
    live = await service.list_devices(city, live_only=True)
    assert live == []
    assert [d.device_id for d in await service.list_devices(city)] == [added.device_id]


async def test_registry_changes_refuse_to_run_inside_a_transaction(
    city: asyncpg.Connection,
) -> None:
    async with city.transaction():
        with pytest.raises(RuntimeError, match="outside a transaction"):
            await service.add_device(city, lot_id="T-GATED", lane_id="in1", broker=None)


async def test_revoke_removes_the_device_from_the_broker_files(
    city: asyncpg.Connection, broker: service.Broker
) -> None:
    kept = await service.add_device(city, lot_id="T-GATED", lane_id="in1", broker=broker)
    gone = await service.add_device(city, lot_id="T-OTHER", lane_id="in1", broker=broker)
    await service.revoke_device(city, gone.device_id, at=NOW, broker=broker)
    users = [line.split(":")[0] for line in broker.files.password_file.read_text().splitlines()]
    assert sorted(users) == sorted(["platform", service.CANARY_USER, kept.device_id])
    acl = broker.files.acl_file.read_text()
    assert f"user {gone.device_id}\n" not in acl
    # the platform keeps everything under the prefix and $SYS
    assert "user platform\ntopic readwrite parking/v1/#\ntopic read $SYS/#\n" in acl


async def test_provision_city_is_idempotent_and_writes_secrets_only_to_a_private_file(
    city: asyncpg.Connection, tmp_path: Path, broker: service.Broker
) -> None:
    secrets_file = tmp_path / "device-secrets.json"
    manual = await service.add_device(city, lot_id="T-OTHER", lane_id="in1", broker=None)

    first = await service.provision_city(city, secrets_file=secrets_file, broker=broker)
    assert (first.gates_created, first.sensors_created) == (3, 3)  # T-GATED in1/out1, T-OTHER out1
    assert first.live_devices == 7
    assert first.live_without_secret == 1  # the manually added gate's secret was shown, not kept
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    secrets = json.loads(secrets_file.read_text())
    assert set(secrets) == {
        "t-gated-in1",
        "t-gated-out1",
        "t-other-out1",
        "t-street-s0001",
        "t-street-s0002",
        "t-street-s0003",
    }
    hashes = {
        r["device_id"]: r["password_hash"]
        for r in await city.fetch("SELECT device_id, password_hash FROM devices")
    }
    assert all(broker_files.verify_password(secrets[d], hashes[d]) for d in secrets)
    assert manual.device_id not in secrets
    # gated lots' spaces get no sensor; a lane's existing gate is kept
    assert await city.fetchval("SELECT count(*) FROM devices WHERE space_id = 'P0001'") == 0

    content = secrets_file.read_bytes()
    before = await city.fetch("SELECT * FROM devices ORDER BY device_id")
    again = await service.provision_city(city, secrets_file=secrets_file, broker=broker)
    assert (again.gates_created, again.sensors_created) == (0, 0)
    assert secrets_file.read_bytes() == content
    assert await city.fetch("SELECT * FROM devices ORDER BY device_id") == before

    # a revoked sensor is not replaced behind the operator's back
    await service.revoke_device(city, "t-street-s0001", at=NOW, broker=None)
    third = await service.provision_city(city, secrets_file=secrets_file, broker=broker)
    assert (third.gates_created, third.sensors_created) == (0, 0)
    users = broker.files.password_file.read_text().splitlines()
    assert len(users) == 6 + 2  # live devices + the platform + the reload canary
    assert not any(u.startswith("t-street-s0001:") for u in users)


async def test_provision_city_covers_the_seeded_city(
    city_db: asyncpg.Connection, tmp_path: Path, broker: service.Broker
) -> None:
    secrets_file = tmp_path / "device-secrets.json"
    report = await service.provision_city(city_db, secrets_file=secrets_file, broker=broker)
    lanes = await city_db.fetchval("SELECT count(*) FROM lanes")
    street = await city_db.fetchval(
        "SELECT count(*) FROM spaces s JOIN lots l ON l.id = s.lot_id WHERE l.kind = 'on_street'"
    )
    assert report.gates_created == lanes
    assert report.sensors_created == street
    assert report.live_devices == lanes + street
    assert len(json.loads(secrets_file.read_text())) == lanes + street
    demo = await service.list_devices(city_db, lot_id="GZ-DEMO-01")
    assert [d.device_id for d in demo] == ["gz-demo-01-in1", "gz-demo-01-out1"]
    lines = broker.files.password_file.read_text().count("\n")
    assert lines == lanes + street + 2


def test_grants_follow_the_contract_for_each_kind() -> None:
    topics = Topics("parking/v1")

    def credential(
        kind: DeviceKind, lane: str | None = None, space: str | None = None
    ) -> Credential:
        return Credential(
            device_id="d1", kind=kind, lot_id="L1", lane_id=lane, space_id=space, password_hash=""
        )

    assert grants(credential(DeviceKind.GATE, lane="in1"), topics) == (
        ("write", "parking/v1/lots/L1/lanes/in1/passages"),
        ("write", "parking/v1/lots/L1/lanes/in1/commands/ack"),
        ("read", "parking/v1/lots/L1/lanes/in1/commands"),
    )
    assert grants(credential(DeviceKind.SENSOR, space="S1"), topics) == (
        ("write", "parking/v1/lots/L1/spaces/S1/state"),
    )
    assert grants(credential(DeviceKind.SIGN), topics) == (
        ("read", "parking/v1/lots/L1/availability"),
    )
