"""Calendars of day types (tariffs v2): read by staff, imported by the platform's
operations (a city token, or an operator acting for no company); a company's operator
cannot change the calendar every company's tariffs price by."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, get, post
from litestar.params import RawBody

from parking.api.auth import principal_of, roles
from parking.api.infra import connection, infra_of
from parking.api.routing import clock_of, problem_responses
from parking.auth.model import Forbidden, Role
from parking.pricing import service as pricing
from parking.tariffs.calendar import MAX_CALENDAR_BYTES, decode_calendar

READERS: Final = (Role.OPERATOR, Role.FINANCE, Role.CITY)


@get(
    "/v1/calendars",
    guards=[roles(*READERS)],
    tags=["operator"],
    summary="Calendar editions, the newest first (for a date, the first covering it decides)",
    responses=problem_responses(401, 403),
)
async def list_calendars(request: Request[Any, Any, Any]) -> list[pricing.CalendarView]:
    async with connection(infra_of(request.app)) as conn:
        return await pricing.calendars(conn)


@post(
    "/v1/calendars",
    guards=[roles(Role.OPERATOR, Role.CITY)],
    tags=["operator"],
    summary="Import a calendar edition (a year's holidays and adjusted working days)",
    status_code=201,
    request_max_body_size=MAX_CALENDAR_BYTES,
    responses=problem_responses(400, 401, 403, 409, 413),
)
async def import_calendar(request: Request[Any, Any, Any], body: RawBody) -> pricing.CalendarView:
    """The body is a calendar JSON file (docs/tariffs.md); a field at fault is named.
    A corrected notice is a new version (409 for a version that exists)."""
    who = principal_of(request)
    if who.role is Role.OPERATOR and who.company is not None:
        raise Forbidden("the calendar is the city's: a company's operator cannot change it")
    calendar = decode_calendar(body)
    async with connection(infra_of(request.app), transaction=True) as conn:
        view = await pricing.import_calendar(conn, calendar, by=who, now=clock_of(request).now())
    request.app.state.pricer_cache.invalidate()
    return view


ROUTES: Final = [list_calendars, import_calendar]
