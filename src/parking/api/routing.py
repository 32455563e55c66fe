"""Route plumbing every API module shares: problem-details responses for the OpenAPI
document, the role guards, and the one clock of the app.

A route module imports these instead of defining its own: a guard list or a
response map defined twice drifts (one copy admits a role the other refuses).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter

from parking.api.auth import roles
from parking.api.problems import PROBLEM_JSON, Problem
from parking.auth.model import Role
from parking.clock import Clock


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI entries of the RFC 9457 answers a route gives besides its own."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description="RFC 9457 problem details",
            generate_examples=False,
        )
        for status in statuses
    }


# ------------------------------------------------------------------ guards

driver_only = [roles(Role.DRIVER)]
operator_only = [roles(Role.OPERATOR)]
finance_only = [roles(Role.FINANCE)]
#: operators read their company's lots, the city reads all; only operators change them
staff_readers = [roles(Role.OPERATOR, Role.CITY)]

#: a driver's binding of a plate, as routes name it: a plate is personal data and
#: never goes in a URL (paths reach proxies' logs, browser history and referrers),
#: so routes address a binding by its id and take a plate only in a body
VehicleIdParam = Annotated[str, PathParameter(pattern=r"^veh-[0-9A-HJKMNP-TV-Z]{26}$")]


# ------------------------------------------------------------------- clock


def clock_of(connection: Request[Any, Any, Any] | ASGIConnection[Any, Any, Any, Any]) -> Clock:
    """The app's one clock (``create_app(clock=...)``; the system clock unless a test
    gives another)."""
    clock: Clock = connection.app.state.clock
    return clock
