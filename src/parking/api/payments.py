"""Payment routes: provider notifications (public), drivers paying and disputing their own
bills, finance deciding disputes, reviewing payment anomalies and refunding the money
an anomaly holds in suspense.

``POST /v1/bills/pay`` follows Stripe's idempotency rules: the ``Idempotency-Key``
header is required; the first response for a key (a payment, or a 4xx
problem) is stored and replayed to every retry with the same body; another
body with the key is 422; a retry while the first is still running is 409.
A 5xx (provider or database unavailable) is not stored: the retry runs again,
and finds the same payment attempt (the use case is idempotent on the key).

A driver sees, pays and disputes only their own bills and payments; anyone
else's is a 404, the same as one that does not exist, and the attempt is
written to the audit log (``denied:<action>``, reliability matrix A1).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.exceptions import ServiceUnavailableException
from litestar.params import FromPath, HeaderParameter, JSONBody, PathParameter, QueryParameter

from parking.api.auth import principal_of
from parking.api.denied import audit_denied
from parking.api.infra import Infra, connection, infra_of
from parking.api.problems import PROBLEM_JSON, domain_exception_handler
from parking.api.routing import clock_of, driver_only, finance_only, problem_responses
from parking.bills import service as bills
from parking.bills.model import UnknownBill
from parking.errors import InvalidInput, NotFound, ParkingError
from parking.payments import anomalies as payment_anomalies
from parking.payments import disputes as payment_disputes
from parking.payments import idempotency as payment_idempotency
from parking.payments import logic, refunds
from parking.payments import notifications as payment_notifications
from parking.payments import pay as pay_flow
from parking.payments.model import (
    Anomaly,
    AnomalyRefund,
    AnomalyStatus,
    DisputeStatus,
    DisputeView,
    Payer,
    PaymentView,
    Replay,
    StoredResponse,
    UnknownAttempt,
    UnknownProvider,
)
from parking.payments.port import H5Scene, PaymentProvider, ProviderUnavailable
from parking.plates import normalise

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
PAY_ENDPOINT: Final = "POST /v1/bills/pay"
#: Bodies here are a few ids and a sentence.
BODY_MAX: Final = 4 * 1024
_RETRY_AFTER_S: Final = "5"
# Free text goes to PostgreSQL (no NUL) and to finance's screens: no control characters.
_PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"

BillId = Annotated[str, msgspec.Meta(pattern=r"^b-[0-9A-HJKMNP-TV-Z]{26}$")]
ProviderName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
#: a page a scanned code opened, with at most a short query (``?payment=pa-...``)
ReturnPath = Annotated[
    str, msgspec.Meta(pattern=r"^/q/[A-Za-z0-9_-]{1,512}(\?[A-Za-z0-9_=&-]{1,128})?$")
]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=_PRINTABLE)]
Remark = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=_PRINTABLE)]
BillIdParam = Annotated[str, PathParameter(pattern=r"^b-[0-9A-HJKMNP-TV-Z]{26}$")]
PaymentIdParam = Annotated[str, PathParameter(pattern=r"^pa-[0-9A-HJKMNP-TV-Z]{26}$")]
DisputeIdParam = Annotated[str, PathParameter(pattern=r"^dp-[0-9A-HJKMNP-TV-Z]{26}$")]
AnomalyIdParam = Annotated[str, PathParameter(pattern=r"^pan-[0-9A-HJKMNP-TV-Z]{26}$")]
IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name=IDEMPOTENCY_HEADER,
        required=False,
        description="required: a key of 1-255 printable ASCII characters, one per payment "
        "the driver means to make; retries reuse it",
    ),
]


def _provider(infra: Infra, name: str) -> PaymentProvider:
    provider = infra.providers.get(name)
    if provider is None:
        raise UnknownProvider(name)
    return provider


# --------------------------------------------------------------------------- notifications


@post(
    "/v1/payments/notify/{provider:str}",
    opt={"exclude_from_auth": True},
    tags=["payments"],
    summary="A payment provider's signed notification (WeChat Pay v3 JSON, Alipay form)",
    description="Answers exactly what the provider's protocol asks: WeChat 204 (taken) or "
    '500 {"code": "FAIL"} (send again); Alipay 200 "success" or "fail".',
    status_code=200,
)
async def provider_notification(
    request: Request[Any, Any, Any], provider: FromPath[str]
) -> Response[bytes]:
    infra = infra_of(request.app)
    adapter = infra.providers.get(provider)
    if adapter is None:
        raise NotFound(f"no payment provider {provider!r}")
    # The raw bytes: they are what the provider signed.
    body = await request.body()
    reply = await payment_notifications.handle_notification(
        infra.pool,
        adapter,
        dict(request.headers.items()),
        body,
        clock_of(request).now(),
        refund_notify_url=logic.notify_url(infra.notify_base_url, adapter.name),
        received_at=infra.wall_clock.now(),
    )
    headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-type"}
    media_type = next(
        (v for k, v in reply.headers.items() if k.lower() == "content-type"), MediaType.TEXT
    )
    return Response(
        content=reply.body, status_code=reply.status, headers=headers, media_type=media_type
    )


# --------------------------------------------------------------------------- drivers


async def _audit_denied_bill(infra: Infra, *, actor: str, action: str, bill_id: str) -> None:
    """Someone else's bill was named: the answer is the 404 of a missing bill, the audit
    log gets a line. On a connection of its own, outside the request's transaction,
    which rolls back with the 404. A bill that does not exist is not logged."""
    async with connection(infra) as conn:
        try:
            await bills.get(conn, bill_id)
        except UnknownBill:
            return
        await audit_denied(
            conn, actor=actor, action=action, target=f"bill:{bill_id}", now=infra.clock.now()
        )


class PayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bills to pay: my own, or (naming ``plate``) that plate's, a friend's car's say
    (先离后缴): their ids come from ``POST /v1/plate-bills``."""

    bill_ids: Annotated[
        list[BillId], msgspec.Meta(min_length=1, max_length=logic.MAX_BILLS_PER_PAYMENT)
    ]
    provider: ProviderName = "wechat"
    plate: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    #: ``h5``: pay in this phone's browser at the provider's cashier page (WeChat H5),
    #: which sends the browser back to ``return_to``; ``native``: a QR code to scan.
    channel: Literal["native", "h5"] = "native"
    #: for ``h5``: the page on this platform to come back to (a path under ``/q/``)
    return_to: ReturnPath | None = None


class DisputeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Text


def _idempotency_key(value: str | None) -> str:
    if value is None:
        raise InvalidInput(f"the {IDEMPOTENCY_HEADER} header is required to pay")
    if not 1 <= len(value) <= 255 or not all(33 <= ord(c) <= 126 for c in value):
        raise InvalidInput(f"{IDEMPOTENCY_HEADER} is 1-255 printable ASCII characters")
    return value


def _replay(stored: StoredResponse) -> Response[bytes]:
    return Response(
        content=stored.body,
        status_code=stored.status,
        media_type=MediaType.JSON if stored.status < 400 else PROBLEM_JSON,
        headers={"Idempotent-Replayed": "true"},
    )


@post(
    "/v1/bills/pay",
    guards=driver_only,
    tags=["bills"],
    summary="Pay my open bills: one provider order (its code_url is the QR code)",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 502, 503),
)
async def pay_bills(
    request: Request[Any, Any, Any],
    data: JSONBody[PayRequest],
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response[bytes]:
    key = _idempotency_key(idempotency_key)
    infra = infra_of(request.app)
    plate = None if data.plate is None else normalise(data.plate)
    payer = Payer(account_id=principal_of(request).subject, plate=plate)
    now = clock_of(request).now()
    canonical = msgspec.structs.replace(data, bill_ids=sorted(set(data.bill_ids)), plate=plate)
    h5 = _h5_scene(request, infra, data)
    async with connection(infra) as conn:
        claim = await payment_idempotency.claim_idempotency_key(
            conn,
            scope=payer.scope,
            key=key,
            endpoint=PAY_ENDPOINT,
            request_hash=logic.request_hash(PAY_ENDPOINT, canonical),
            now=now,
        )
    if isinstance(claim, Replay):
        return _replay(claim.response)
    try:
        provider = _provider(infra, data.provider)
        view = await pay_flow.pay(
            infra.pool,
            provider,
            bill_ids=canonical.bill_ids,
            payer=payer,
            idempotency_key=key,
            notify_url=logic.notify_url(infra.notify_base_url, provider.name),
            now=now,
            h5=h5,
        )
    except ProviderUnavailable as exc:
        await _release(infra, payer, key)
        raise ServiceUnavailableException(
            detail=f"the payment provider did not answer; retry with the same {IDEMPOTENCY_HEADER}",
            headers={"Retry-After": _RETRY_AFTER_S},
        ) from exc
    except ParkingError as exc:
        if isinstance(exc, UnknownBill) and payer.account_id is not None:
            await _audit_denied_bill(
                infra, actor=payer.account_id, action="denied:pay", bill_id=exc.bill_id
            )
        problem = domain_exception_handler(request, exc)
        status = problem.status_code or 500
        if status >= 500:
            await _release(infra, payer, key)
        else:
            await _complete(infra, payer, key, status, problem.content, now)
        return problem
    except Exception:
        await _release(infra, payer, key)
        raise
    body = msgspec.json.encode(view)
    await _complete(infra, payer, key, 201, body, now)
    return Response(content=body, status_code=201, media_type=MediaType.JSON)


def _h5_scene(request: Request[Any, Any, Any], infra: Infra, data: PayRequest) -> H5Scene | None:
    """An ``h5`` payment comes back to the page it started on, at the platform's public
    address (what the printed codes carry)."""
    if data.channel == "native":
        if data.return_to is not None:
            raise InvalidInput("return_to is for a payment in the browser (channel h5)")
        return None
    if data.return_to is None:
        raise InvalidInput("a payment in the browser (channel h5) needs return_to")
    client = request.client.host if request.client is not None else "127.0.0.1"
    return H5Scene(
        client_ip=client, return_url=infra.settings.public_base_url.rstrip("/") + data.return_to
    )


async def _complete(
    infra: Infra, payer: Payer, key: str, status: int, body: bytes, now: datetime
) -> None:
    async with connection(infra) as conn:
        await payment_idempotency.complete_idempotency_key(
            conn,
            scope=payer.scope,
            key=key,
            response=StoredResponse(status=status, body=body),
            now=now,
        )


async def _release(infra: Infra, payer: Payer, key: str) -> None:
    async with connection(infra) as conn:
        await payment_idempotency.release_idempotency_key(conn, scope=payer.scope, key=key)


@get(
    "/v1/payments/{payment_id:str}",
    guards=driver_only,
    tags=["bills"],
    summary="One of my payments (poll it after showing the QR code)",
    responses=problem_responses(400, 401, 403, 404),
)
async def my_payment(request: Request[Any, Any, Any], payment_id: PaymentIdParam) -> PaymentView:
    account_id = principal_of(request).subject
    async with connection(infra_of(request.app)) as conn:
        try:
            return await pay_flow.payment(conn, payment_id, payer=Payer(account_id=account_id))
        except UnknownAttempt:
            if await pay_flow.exists(conn, payment_id):
                await audit_denied(
                    conn,
                    actor=account_id,
                    action="denied:payment",
                    target=f"payment:{payment_id}",
                    now=clock_of(request).now(),
                )
            raise


@post(
    "/v1/bills/{bill_id:str}/dispute",
    guards=driver_only,
    tags=["bills"],
    summary="Dispute one of my bills, with a reason",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def dispute_bill(
    request: Request[Any, Any, Any], bill_id: BillIdParam, data: JSONBody[DisputeRequest]
) -> DisputeView:
    infra = infra_of(request.app)
    account_id = principal_of(request).subject
    try:
        async with connection(infra, transaction=True) as conn:
            return await payment_disputes.open_dispute(
                conn,
                bill_id,
                account_id=account_id,
                reason=data.reason,
                now=clock_of(request).now(),
            )
    except UnknownBill:
        await _audit_denied_bill(infra, actor=account_id, action="denied:dispute", bill_id=bill_id)
        raise


# --------------------------------------------------------------------------- finance


class ApproveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    remark: Remark
    #: the refund; omitted: everything not refunded yet (a paid bill) / a write-off (unpaid)
    amount_fen: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] | None = None


class DecisionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    remark: Remark


@get(
    "/v1/finance/disputes",
    guards=finance_only,
    tags=["finance"],
    summary="Disputes, oldest first (open ones by default)",
    responses=problem_responses(400, 401, 403),
)
async def list_disputes(
    request: Request[Any, Any, Any],
    status: Annotated[Literal["open", "approved", "rejected", "all"], QueryParameter()] = "open",
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[DisputeView]:
    async with connection(infra_of(request.app)) as conn:
        return await payment_disputes.disputes(
            conn, status=None if status == "all" else DisputeStatus(status), limit=limit
        )


@post(
    "/v1/finance/disputes/{dispute_id:str}/approve",
    guards=finance_only,
    tags=["finance"],
    summary="Uphold a dispute: refund (full or partial) through the provider, or write off",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
async def approve_dispute(
    request: Request[Any, Any, Any], dispute_id: DisputeIdParam, data: JSONBody[ApproveRequest]
) -> DisputeView:
    infra = infra_of(request.app)
    return await payment_disputes.approve_dispute(
        infra.pool,
        infra.providers,
        dispute_id,
        by=principal_of(request).subject,
        remark=data.remark,
        amount_fen=data.amount_fen,
        notify_base_url=infra.notify_base_url,
        now=clock_of(request).now(),
    )


@post(
    "/v1/finance/disputes/{dispute_id:str}/reject",
    guards=finance_only,
    tags=["finance"],
    summary="Reject a dispute, with a remark",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def reject_dispute(
    request: Request[Any, Any, Any], dispute_id: DisputeIdParam, data: JSONBody[DecisionRequest]
) -> DisputeView:
    async with connection(infra_of(request.app), transaction=True) as conn:
        return await payment_disputes.reject_dispute(
            conn,
            dispute_id,
            by=principal_of(request).subject,
            remark=data.remark,
            now=clock_of(request).now(),
        )


@get(
    "/v1/finance/payment-anomalies",
    guards=finance_only,
    tags=["finance"],
    summary="What providers reported that could not simply be applied, newest first",
    responses=problem_responses(400, 401, 403),
)
async def list_payment_anomalies(
    request: Request[Any, Any, Any],
    status: Annotated[Literal["open", "resolved", "all"], QueryParameter()] = "open",
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
) -> list[Anomaly]:
    async with connection(infra_of(request.app)) as conn:
        return await payment_anomalies.anomalies(
            conn, status=None if status == "all" else AnomalyStatus(status), limit=limit
        )


@post(
    "/v1/finance/payment-anomalies/{anomaly_id:str}/resolve",
    guards=finance_only,
    tags=["finance"],
    summary="Mark an anomaly resolved, with a remark",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413),
)
async def resolve_payment_anomaly(
    request: Request[Any, Any, Any], anomaly_id: AnomalyIdParam, data: JSONBody[DecisionRequest]
) -> Anomaly:
    async with connection(infra_of(request.app), transaction=True) as conn:
        return await payment_anomalies.resolve_anomaly(
            conn,
            anomaly_id,
            by=principal_of(request).subject,
            remark=data.remark,
            now=clock_of(request).now(),
        )


@post(
    "/v1/finance/payment-anomalies/{anomaly_id:str}/refund",
    guards=finance_only,
    tags=["finance"],
    summary="Refund through the provider the money an anomaly holds in suspense, with a remark",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def refund_payment_anomaly(
    request: Request[Any, Any, Any], anomaly_id: AnomalyIdParam, data: JSONBody[DecisionRequest]
) -> AnomalyRefund:
    infra = infra_of(request.app)
    return await refunds.refund_anomaly(
        infra.pool,
        infra.providers,
        anomaly_id,
        by=principal_of(request).subject,
        remark=data.remark,
        notify_base_url=infra.notify_base_url,
        now=clock_of(request).now(),
    )


ROUTES = [
    provider_notification,
    pay_bills,
    my_payment,
    dispute_bill,
    list_disputes,
    approve_dispute,
    reject_dispute,
    list_payment_anomalies,
    resolve_payment_anomaly,
    refund_payment_anomaly,
]
