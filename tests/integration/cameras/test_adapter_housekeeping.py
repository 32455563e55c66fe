"""What the camera adapter does on its own: an event given a seq but never applied (the
adapter died in between) is applied by the sweep; pictures go after their retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from camerakit import add_camera, wait_rows
from pipekit import DEMO, Pipeline, eventually

from gateways.cameras.adapter import CameraAdapter
from gateways.cameras.simulator import jpeg
from parking.clock import SystemClock
from parking.devices import camera_store, messages
from parking.devices.images import ImageRefused, ImageStore, parse_ref
from parking.devices.model import Vendor


async def test_a_seq_granted_but_never_applied_is_applied_by_the_sweep(pipeline: Pipeline) -> None:
    pipeline.persister().start()
    camera = await add_camera(
        pipeline, "in1", Vendor.VZENITH, "fe71e106-57263272", lot=DEMO, base_url="http://x"
    )
    seen = datetime.now(UTC) - timedelta(minutes=3)
    # What an adapter that died after PostgreSQL and before the core left behind.
    await camera_store.grant_seq(
        pipeline.conn,
        device_id=camera.device_id,
        push_key="vz:1@lost",
        received_at=seen,
        passage_for=lambda seq: messages.encode(
            messages.Passage(
                device_id=camera.device_id,
                seq=seq,
                observed_at=seen,
                sent_at=seen,
                direction="in",
                plate="赣B12345",
                plate_color="blue",
                confidence=0.96,
            )
        ),
        vendor_record=b"{}",
        images=[],
    )
    settings = msgspec.structs.replace(pipeline.settings, image_dir=pipeline.tmp / "images")
    adapter = CameraAdapter(settings, clock=SystemClock())
    await adapter.start()
    try:
        assert await adapter.reapply() == 1
        await wait_rows(
            pipeline, "SELECT count(*) FROM passages WHERE device_id = $1", camera.device_id
        )
        stored = await pipeline.conn.fetchrow(
            "SELECT received_at, event_at FROM passages WHERE device_id = $1", camera.device_id
        )
        assert stored is not None
        # Applied as received then: its clock sample is the one it had.
        assert abs(stored["received_at"] - seen) < timedelta(milliseconds=1)

        async def covered() -> bool:
            return (
                await adapter.reapply() == 0
                and await pipeline.fetchval(
                    "SELECT seq FROM device_watermarks WHERE device_id = $1", camera.device_id
                )
                == 1
            )

        await eventually(covered, what="the watermark to cover the camera's event")
    finally:
        await adapter.stop()


def test_pictures_are_kept_by_content_and_day_and_removed_after_their_retention(
    tmp_path: Path,
) -> None:
    store = ImageStore(tmp_path)
    now = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    picture = jpeg((1, 2, 3))
    ref = store.put(picture, lot_id=DEMO, at=now - timedelta(days=181))
    again = store.put(picture, lot_id=DEMO, at=now - timedelta(days=181))
    recent = store.put(picture, lot_id=DEMO, at=now)
    assert ref == again
    assert parse_ref(ref.text) == ref
    assert parse_ref("cam/../20261204/" + "0" * 64 + ".jpg") is None
    assert store.read(recent) == picture
    assert store.sweep(now, keep=timedelta(days=180)) == [f"{ref.day:%Y%m%d}"]
    assert store.read(ref) is None
    assert store.read(recent) == picture
    with pytest.raises(ImageRefused):
        store.put(b"GIF89a not a jpeg", lot_id=DEMO, at=now)


def test_a_picture_held_as_evidence_outlives_its_retention(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    now = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    held = store.put(jpeg((9, 9, 9)), lot_id=DEMO, at=now - timedelta(days=200))
    other = store.put(jpeg((8, 8, 8)), lot_id=DEMO, at=now - timedelta(days=200))
    assert held.day == other.day
    swept = store.sweep(now, keep=timedelta(days=180), hold=frozenset({held.text}))
    assert swept == [f"{held.day:%Y%m%d}"]
    assert store.read(held) == jpeg((9, 9, 9))
    assert store.read(other) is None
