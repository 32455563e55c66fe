"""The pages the platform serves itself: the city dashboard (``GET /dashboard``).

Everything the page loads comes from this server (no CDN, no external fonts or
tiles): its script, style and the charting library copied from the npm registry's
package at bootstrap (``static/vendor/``, with its licence). The page holds no data:
it logs in with a ``city`` token kept in the browser tab and reads ``/v1/city/*``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Final

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router

STATIC: Final = Path(str(resources.files("parking.api").joinpath("static")))
_PUBLIC: Final = {"exclude_from_auth": True}
#: the page may load only what this server serves
_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


@get("/dashboard", opt=_PUBLIC, include_in_schema=False)
async def dashboard(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        (STATIC / "dashboard.html").read_bytes(),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": _POLICY, "Cache-Control": "no-cache"},
    )


static_files = create_static_files_router(
    path="/dashboard/static",
    directories=[STATIC],
    opt=_PUBLIC,
    cache_control=CacheControlHeader(max_age=300),
    name="dashboard-static",
)

#: the driver's page (``/q/<token>``) loads its script and style from here
page_files = create_static_files_router(
    path="/page/static",
    directories=[STATIC],
    opt=_PUBLIC,
    cache_control=CacheControlHeader(max_age=300),
    name="page-static",
)

ROUTES: Final[list[HTTPRouteHandler | Router]] = [dashboard, static_files, page_files]
