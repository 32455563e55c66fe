"""The platform's app plus a Litestar hello-world route, served together for bench_api.py.

The baseline is measured on the same server, same worker count, same middleware
stack as the real routes, so the ratio isolates what our handlers cost.
"""

from __future__ import annotations

from litestar import Litestar, get

from parking.api.app import create_app


@get("/bench/hello", opt={"exclude_from_auth": True}, sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


def make() -> Litestar:
    app = create_app()
    app.register(hello)
    return app
