"""Finance's reconciliation routes: the runs with their totals, the discrepancies, their
resolution (audited with the person and a remark), a run's CSV export."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from parking.api.auth import principal_of
from parking.api.infra import connection, infra_of
from parking.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    LimitParam,
    decode_cursor,
    page,
)
from parking.api.routing import clock_of, finance_only, problem_responses
from parking.reconciliation import service as reconcile
from parking.reconciliation.model import Discrepancy, DiscrepancyKind, Resolve, Run, UnknownRun

BODY_MAX: Final = 4 * 1024
RunIdParam = Annotated[str, PathParameter(pattern=r"^rc-[0-9A-HJKMNP-TV-Z]{26}$")]
DiscrepancyIdParam = Annotated[str, PathParameter(pattern=r"^dc-[0-9A-HJKMNP-TV-Z]{26}$")]
ProviderQuery = Annotated[
    str | None, QueryParameter(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="wechat, alipay")
]


class Runs(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Run]


class DiscrepancyPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Discrepancy]
    next_cursor: str | None


@get(
    "/v1/finance/reconciliations",
    guards=finance_only,
    tags=["finance"],
    summary="Reconciliation runs with their totals, newest business day first",
    responses=problem_responses(400, 401, 403),
)
async def list_runs(
    request: Request[Any, Any, Any],
    provider: ProviderQuery = None,
    first: Annotated[date | None, QueryParameter(name="from")] = None,
    last: Annotated[date | None, QueryParameter(name="to")] = None,
) -> Runs:
    async with connection(infra_of(request.app)) as conn:
        return Runs(items=await reconcile.runs(conn, provider=provider, first=first, last=last))


@get(
    "/v1/finance/discrepancies",
    guards=finance_only,
    tags=["finance"],
    summary="What statements and our records disagree on, oldest found first",
    responses=problem_responses(400, 401, 403),
)
async def list_discrepancies(
    request: Request[Any, Any, Any],
    status: Annotated[Literal["open", "resolved", "withdrawn"] | None, QueryParameter()] = None,
    kind: Annotated[DiscrepancyKind | None, QueryParameter()] = None,
    provider: ProviderQuery = None,
    day: Annotated[date | None, QueryParameter(name="date")] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> DiscrepancyPage:
    async with connection(infra_of(request.app)) as conn:
        found = await reconcile.discrepancies(
            conn,
            status=status,
            kind=kind.value if kind is not None else None,
            provider=provider,
            day=day,
            after=decode_cursor(cursor),
            limit=limit + 1,
        )
    items, next_cursor = page(found, limit, lambda d: d.id)
    return DiscrepancyPage(items=items, next_cursor=next_cursor)


@post(
    "/v1/finance/discrepancies/{discrepancy_id:str}/resolve",
    guards=finance_only,
    tags=["finance"],
    summary="Resolve a discrepancy with a remark (apply_payment applies the provider's line)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def resolve_discrepancy(
    request: Request[Any, Any, Any],
    discrepancy_id: DiscrepancyIdParam,
    data: JSONBody[Resolve],
) -> Discrepancy:
    infra = infra_of(request.app)
    return await reconcile.resolve_discrepancy(
        infra.pool,
        infra.providers,
        discrepancy_id,
        data,
        by=principal_of(request),
        now=clock_of(request).now(),
        notify_base_url=infra.notify_base_url,
        fee_rates=dict(infra.settings.fee_rates),
    )


@get(
    "/v1/finance/reconciliations/{run_id:str}/export.csv",
    guards=finance_only,
    tags=["finance"],
    summary="A run and its discrepancies as CSV",
    responses=problem_responses(401, 403, 404),
)
async def export_run(request: Request[Any, Any, Any], run_id: RunIdParam) -> Response[str]:
    async with connection(infra_of(request.app)) as conn:
        run = await reconcile.find_run(conn, run_id)
        if run is None:
            raise UnknownRun(f"reconciliation run {run_id} does not exist")
        found = await reconcile.run_discrepancies(conn, run_id)
    return Response(
        content=reconcile.export_csv(run, found),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": (
                f'attachment; filename="reconciliation-{run.provider}-{run.business_date}.csv"'
            )
        },
    )


ROUTES: Final = [list_runs, list_discrepancies, resolve_discrepancy, export_run]
