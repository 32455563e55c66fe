"""An operator reviewing a camera's low-confidence read sees its picture (the anomaly's
image_ref, served by the API from the camera adapter's store), and only their company's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from camerakit import add_camera, free_port, start_adapter, vzenith_push, wait_rows
from pipekit import DEMO, Pipeline

from gateways.cameras.simulator import jpeg
from parking.auth import tokens
from parking.auth.model import Role
from parking.devices.model import Vendor
from parking.seed.city import DEMO_COMPANY


def _token(pipe: Pipeline, company: str, role: Role = Role.OPERATOR) -> str:
    return tokens.issue(
        pipe.settings.jwt_key,
        subject="reviewer",
        role=role,
        now=datetime.now(UTC),
        ttl=timedelta(minutes=10),
        company=company if role is Role.OPERATOR else None,
    )


async def test_an_operator_sees_the_picture_of_a_low_confidence_read(pipeline: Pipeline) -> None:
    pipeline.persister().start()
    adapter = await start_adapter(pipeline)
    api = await pipeline.api(free_port(), PARKING_IMAGE_DIR=str(adapter.image_dir))
    entry = await add_camera(
        pipeline, "in1", Vendor.VZENITH, "fe71e106-57263272", lot=DEMO, base_url=adapter.base_url
    )
    scene = jpeg((10, 20, 30))
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        pushed = await http.post(
            entry.push_url,
            content=vzenith_push(
                entry, plate="赣B12345", plateid=1, at=datetime.now(UTC), confidence=61, scene=scene
            ),
        )
        assert pushed.status_code == 200, pushed.text
        await wait_rows(pipeline, "SELECT count(*) FROM anomalies WHERE kind = 'low_confidence'")
        ref = await pipeline.fetchval(
            "SELECT image_ref FROM anomalies WHERE kind = 'low_confidence'"
        )
        assert isinstance(ref, str)
        assert ref.startswith(f"cam/{DEMO}/")
        url = f"{api}/v1/operator/images/{ref.removeprefix('cam/')}"
        own = await http.get(
            url, headers={"Authorization": f"Bearer {_token(pipeline, DEMO_COMPANY)}"}
        )
        city = await http.get(
            url, headers={"Authorization": f"Bearer {_token(pipeline, '', Role.CITY)}"}
        )
        other = await http.get(
            url, headers={"Authorization": f"Bearer {_token(pipeline, 'gz-county')}"}
        )
    assert own.status_code == 200, own.text
    assert (own.content, own.headers["content-type"]) == (scene, "image/jpeg")
    assert city.content == scene
    assert other.status_code == 404
