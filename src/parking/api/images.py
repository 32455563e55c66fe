"""Cameras' pictures for the review queue: an operator looking at a low-confidence read (an
anomaly's or passage's ``image_ref``, ``cam/<lot>/<day>/<sha256>.jpg``) sees the car.

The pictures are files of the camera adapter's store (``parking.devices.images``, under
PARKING_IMAGE_DIR); the lot in the reference decides who may see one: an operator of
that lot's company (another company's is a 404 and an audit line), or the city.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, Response, get
from litestar.params import PathParameter

from parking.api.auth import principal_of
from parking.api.denied import require_lot
from parking.api.infra import connection, infra_of
from parking.api.routing import clock_of, problem_responses, staff_readers
from parking.devices.images import ImageStore, parse_ref
from parking.errors import NotFound
from parking.lots.model import Access

LotParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
DayParam = Annotated[str, PathParameter(pattern=r"^\d{8}$")]
NameParam = Annotated[str, PathParameter(pattern=r"^[0-9a-f]{64}\.jpg$")]
#: A picture never changes (its name is its hash): a browser may keep it.
_CACHE: Final = "private, max-age=86400, immutable"


class ImageNotFound(NotFound):
    pass


@get(
    "/v1/operator/images/{lot_id:str}/{day:str}/{name:str}",
    guards=staff_readers,
    tags=["operator"],
    summary="A camera's picture of a read (an image_ref cam/<lot>/<day>/<name>), as JPEG",
    responses=problem_responses(400, 401, 403, 404),
    media_type="image/jpeg",
)
async def camera_image(
    request: Request[Any, Any, Any], lot_id: LotParam, day: DayParam, name: NameParam
) -> Response[bytes]:
    infra = infra_of(request.app)
    ref = parse_ref(f"cam/{lot_id}/{day}/{name}")
    if ref is None:
        raise ImageNotFound("no such picture")
    async with connection(infra) as conn:
        await require_lot(
            infra,
            conn,
            principal_of(request),
            lot_id,
            access=Access.READ,
            action="image.read",
            now=clock_of(request).now(),
        )
    data = ImageStore(infra.settings.image_dir).read(ref)
    if data is None:
        raise ImageNotFound("no such picture (past its retention, or never stored)")
    return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": _CACHE})


ROUTES = [camera_image]
