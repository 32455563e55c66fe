"""A driver's own data (PIPL): a copy to take away, and the account's deletion."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, delete, get

from parking.api.auth import principal_of
from parking.api.infra import connection, infra_of
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, driver_only, problem_responses
from parking.privacy import service as privacy


@get(
    "/v1/me/export",
    guards=driver_only,
    tags=["drivers"],
    summary="A copy of everything the platform holds about me (JSON)",
    responses=problem_responses(401, 403, 404, 429),
)
async def export_my_data(request: Request[Any, Any, Any]) -> Response[privacy.MyData]:
    """The account, its plates, stays with fees and bills, mandates and reports, as a
    download; a few a day (an export reads much)."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    await RateLimiter(infra.redis).enforce([(f"export:{me}", EXPORTS_PER_ACCOUNT)])
    async with connection(infra) as conn:
        data = await privacy.export(conn, me, now=clock_of(request).now())
    return Response(
        data,
        headers={
            "Content-Disposition": 'attachment; filename="changbo-my-data.json"',
            "Cache-Control": "no-store",
        },
    )


@delete(
    "/v1/me",
    guards=driver_only,
    tags=["drivers"],
    summary="Delete my account: plates released, mandates and logins revoked, phone erased",
    status_code=200,
    responses=problem_responses(401, 403, 404),
)
async def delete_me(request: Request[Any, Any, Any]) -> privacy.Deleted:
    """Financial records stay with the account, which no longer names anyone; a bill
    still open is still owed by its plate. The phone may make a new account later."""
    infra = infra_of(request.app)
    async with connection(infra, transaction=True) as conn:
        return await privacy.delete_account(
            conn,
            infra.redis,
            principal_of(request).subject,
            access_token=str(request.auth),
            now=clock_of(request).now(),
        )


#: exports one account may ask for a day
EXPORTS_PER_ACCOUNT: Final = (Rule("export-1d", 5, 86400),)


ROUTES: Final = [export_my_data, delete_me]
