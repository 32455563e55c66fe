"""Drivers' routes: phone login, their account and plates, plate claims, QR resolve;
and the operators' review of plate claims.

Login routes are public and rate limited per phone and per client address
(api/rate_limit.py). Every other route here also refuses access tokens that
were revoked by a logout (checked by `BearerAuth` on every route). A driver only ever sees their own
account: anything else is a 404.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from parking.accounts import claims as plate_claims
from parking.accounts import logic as account_logic
from parking.accounts import service as accounts
from parking.accounts.model import (
    AccountView,
    ClaimDecision,
    ClaimStatus,
    ClaimView,
    CodeSent,
    IssuedTokens,
    OperatorClaimView,
    VehicleNotFound,
    VehicleView,
)
from parking.accounts.notifier import Notifier
from parking.api.auth import principal_of, roles
from parking.api.denied import audit_denied
from parking.api.infra import Infra, connection, infra_of
from parking.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    LimitParam,
    decode_cursor,
    page,
)
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import (
    VehicleIdParam,
    clock_of,
    driver_only,
    operator_only,
    problem_responses,
)
from parking.auth.model import Role
from parking.payments import contactless as payment_contactless
from parking.qr import keys as qr_keys
from parking.qr import logic as qr_logic
from parking.qr import service as qr
from parking.qr.model import Keyring

# ------------------------------------------------------------------ limits

# Bodies here are a phone number, a plate or a token: a few hundred bytes.
AUTH_BODY_MAX: Final = 2 * 1024
BODY_MAX: Final = 4 * 1024

# Per phone, tight: an SMS costs money and a driver needs one code a minute
# at most. Per client address, loose: Chinese mobile carriers put many phones
# behind one NAT address, so this only stops a single client spraying many
# numbers. Behind a reverse proxy the client address must be the real one
# (the proxy's trusted forwarding header, configured in granian), or every
# driver shares the proxy's limit.
SEND_PER_PHONE: Final = (Rule("send-1m", 1, 60), Rule("send-1h", 5, 3600))
SEND_PER_CLIENT: Final = (Rule("send-10m", 30, 600),)
# A code allows 5 wrong tries itself; this also bounds tries across codes.
VERIFY_PER_PHONE: Final = (Rule("verify-15m", 10, 900),)
VERIFY_PER_CLIENT: Final = (Rule("verify-10m", 60, 600),)
REFRESH_PER_CLIENT: Final = (Rule("refresh-1m", 60, 60),)
# Binding is typing a plate: it proves nothing, and each one tried is a guess at
# someone's car. An honest driver binds a handful of plates in a lifetime (5 at
# once at most); these let a household re-bind after mistakes and stop anyone
# sweeping plates. Per account and per phone: an account is its phone today,
# but the phone's limit outlives the account (re-registration after a
# suspension starts no fresh allowance).
BIND_PER_ACCOUNT: Final = (Rule("bind-1h", 10, 3600), Rule("bind-1d", 20, 86400))
BIND_PER_PHONE: Final = (Rule("bind-1d", 20, 86400),)

_RETRY_AFTER_S: Final = "5"

# Free text goes to PostgreSQL, which refuses NUL; control characters are
# refused for all of it, so they never reach a log or an operator's screen.
_PRINTABLE: Final = r"^[^\x00-\x1f\x7f]+$"
Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["13812345678"])]
Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$", examples=["123456"])]
PlateText = Annotated[str, msgspec.Meta(min_length=1, max_length=32, examples=["赣B12345"])]
VehicleClassNumber = Annotated[int, msgspec.Meta(ge=1, le=5)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_PRINTABLE)]
Evidence = Annotated[str, msgspec.Meta(min_length=1, max_length=500, pattern=_PRINTABLE)]
ClaimId = Annotated[str, PathParameter(pattern=r"^pc-[0-9A-HJKMNP-TV-Z]{26}$")]
PhotoRef = Annotated[
    str, msgspec.Meta(pattern=r"^[\x21-\x7e]{1,200}$", examples=["upload/xsz-7Q3K9.jpg"])
]


# ------------------------------------------------------------------ guards


def client_of(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _limiter(infra: Infra) -> RateLimiter:
    return RateLimiter(infra.redis)


def _notifier(infra: Infra) -> Notifier:
    if infra.notifier is None:
        raise RuntimeError("the API's lifespan sets the notifier before serving")
    return infra.notifier


_keyrings: dict[Path, qr_keys.KeyringFile] = {}


def keyring_of(infra: Infra) -> Keyring:
    path = qr_keys.path_in(infra.settings.stack_dir)
    holder = _keyrings.get(path)
    if holder is None:
        holder = _keyrings.setdefault(path, qr_keys.KeyringFile(path))
    return holder.current()


# ------------------------------------------------------------------ login


class OtpRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    phone: Phone


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    phone: Phone
    code: Code


class RefreshRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


@post(
    "/v1/auth/otp",
    opt={"exclude_from_auth": True},
    tags=["auth"],
    summary="Send a one-time login code to a mobile number",
    status_code=202,
    request_max_body_size=AUTH_BODY_MAX,
    responses=problem_responses(400, 413, 429, 503),
)
async def send_code(
    request: Request[Any, Any, Any], data: JSONBody[OtpRequest]
) -> Response[CodeSent]:
    """One code a minute and five an hour per phone; a new code replaces the old one."""
    infra = infra_of(request.app)
    phone = accounts.phone_of(data.phone)
    decision = await _limiter(infra).enforce(
        [
            (f"otp-send:client:{client_of(request)}", SEND_PER_CLIENT),
            (f"otp-send:phone:{phone}", SEND_PER_PHONE),
        ]
    )
    sent = await accounts.send_code(
        infra.redis,
        _notifier(infra),
        pepper=account_logic.code_pepper(infra.settings.jwt_key),
        phone=phone,
    )
    return Response(sent, status_code=202, headers=decision.headers)


@post(
    "/v1/auth/token",
    opt={"exclude_from_auth": True},
    tags=["auth"],
    summary="Log in with the code: an access token and a refresh token",
    status_code=200,
    request_max_body_size=AUTH_BODY_MAX,
    responses=problem_responses(400, 401, 403, 413, 429, 503),
)
async def issue_tokens(
    request: Request[Any, Any, Any], data: JSONBody[TokenRequest]
) -> Response[IssuedTokens]:
    """The first login of a phone creates its account."""
    issued, limits = await log_in(request, data.phone, data.code)
    return Response(issued, headers={**limits, "Cache-Control": "no-store"})


async def log_in(
    request: Request[Any, Any, Any], phone_text: str, code: str
) -> tuple[IssuedTokens, dict[str, str]]:
    """Check the one-time code (rate limited per client and phone) and issue a token
    pair; with the rate limit's headers. The app's login and the page's share it."""
    infra = infra_of(request.app)
    phone = accounts.phone_of(phone_text)
    decision = await _limiter(infra).enforce(
        [
            (f"otp-verify:client:{client_of(request)}", VERIFY_PER_CLIENT),
            (f"otp-verify:phone:{phone}", VERIFY_PER_PHONE),
        ]
    )
    async with connection(infra, transaction=True) as conn:
        issued = await accounts.log_in(
            conn,
            infra.redis,
            key=infra.settings.jwt_key,
            pepper=account_logic.code_pepper(infra.settings.jwt_key),
            phone=phone,
            code=code,
            now=clock_of(request).now(),
        )
    return issued, decision.headers


@post(
    "/v1/auth/refresh",
    opt={"exclude_from_auth": True},
    tags=["auth"],
    summary="Exchange a refresh token for a new pair (the old one stops working)",
    status_code=200,
    request_max_body_size=AUTH_BODY_MAX,
    responses=problem_responses(400, 401, 413, 429, 503),
)
async def refresh_tokens(
    request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]
) -> Response[IssuedTokens]:
    """Presenting a refresh token a second time revokes the whole login."""
    return Response(
        await refresh(request, data.refresh_token), headers={"Cache-Control": "no-store"}
    )


async def refresh(request: Request[Any, Any, Any], refresh_token: str) -> IssuedTokens:
    """A new token pair for a refresh token (rate limited per client); a reused one
    revokes the whole login. The app's refresh and the page's share it."""
    infra = infra_of(request.app)
    await _limiter(infra).enforce([(f"refresh:client:{client_of(request)}", REFRESH_PER_CLIENT)])
    async with connection(infra, transaction=True) as conn:
        outcome = await accounts.refresh(
            conn,
            infra.redis,
            key=infra.settings.jwt_key,
            refresh_token=refresh_token,
            now=clock_of(request).now(),
        )
    # Raised only now, after the revocation of a reused token's login committed.
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@post(
    "/v1/auth/logout",
    guards=driver_only,
    tags=["auth"],
    summary="Revoke this login: its refresh token and live access tokens",
    status_code=204,
    request_max_body_size=AUTH_BODY_MAX,
    responses=problem_responses(401, 403, 503),
)
async def log_out(request: Request[Any, Any, Any]) -> None:
    infra = infra_of(request.app)
    async with connection(infra, transaction=True) as conn:
        await accounts.log_out(
            conn, infra.redis, access_token=str(request.auth), now=clock_of(request).now()
        )


# ------------------------------------------------------------------ account and plates


class BindRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A plate to bind; optionally the vehicle's class when the plate understates it
    (a 9-seat van on blue plates is class 2), with the reason."""

    plate: PlateText
    vehicle_class: VehicleClassNumber | None = None
    reason: Reason | None = None


class ClaimRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The plate, and evidence the vehicle is yours: the registration certificate (行驶证)
    number, and the reference of the photo of it uploaded through the app (required:
    the number alone can be copied from a parking ticket)."""

    plate: PlateText
    evidence: Evidence
    photo_ref: PhotoRef


class VehiclePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[VehicleView]
    next_cursor: str | None


class ClaimPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[ClaimView]
    next_cursor: str | None


class OperatorClaimPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[OperatorClaimView]
    next_cursor: str | None


@get(
    "/v1/me",
    guards=driver_only,
    tags=["drivers"],
    summary="My account",
    responses=problem_responses(401, 403, 404),
)
async def me(request: Request[Any, Any, Any]) -> AccountView:
    async with connection(infra_of(request.app)) as conn:
        return await accounts.account_view(conn, principal_of(request).subject)


@get(
    "/v1/me/vehicles",
    guards=driver_only,
    tags=["drivers"],
    summary="My bound plates, with the class each is billed as",
    responses=problem_responses(400, 401, 403),
)
async def my_vehicles(
    request: Request[Any, Any, Any], cursor: CursorParam = None, limit: LimitParam = DEFAULT_LIMIT
) -> VehiclePage:
    async with connection(infra_of(request.app)) as conn:
        found = await accounts.vehicles(
            conn, principal_of(request).subject, after=decode_cursor(cursor), limit=limit + 1
        )
    items, next_cursor = page(found, limit, key=lambda v: v.plate)
    return VehiclePage(items=items, next_cursor=next_cursor)


@post(
    "/v1/me/vehicles",
    guards=driver_only,
    tags=["drivers"],
    summary="Bind a plate, unverified (at most 5; one held by another account is a 409 naming "
    "the claim route)",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503),
)
async def bind_vehicle(
    request: Request[Any, Any, Any], data: JSONBody[BindRequest]
) -> Response[VehicleView]:
    """The plate is normalised (full-width, separators, O/I misreads) and validated;
    its kind, new-energy status and billing class are derived from it. The binding
    starts unverified: it shows no session, history or bill times until a claim with
    the 行驶证 photo is approved or a provider confirms the plate (contactless)."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    async with connection(infra) as conn:
        phone = (await accounts.account_view(conn, me)).phone
    decision = await _limiter(infra).enforce(
        [(f"bind:account:{me}", BIND_PER_ACCOUNT), (f"bind:phone:{phone}", BIND_PER_PHONE)]
    )
    async with connection(infra, transaction=True) as conn:
        view = await accounts.bind_vehicle(
            conn,
            account_id=me,
            plate_raw=data.plate,
            vehicle_class=data.vehicle_class,
            reason=data.reason,
            now=clock_of(request).now(),
        )
    if data.vehicle_class is not None:
        request.app.state.pricer_cache.invalidate()
    return Response(view, status_code=201, headers=decision.headers)


@delete(
    "/v1/me/vehicles/{vehicle_id:str}",
    guards=driver_only,
    tags=["drivers"],
    summary="Unbind one of my plates (named by the binding's id from GET /v1/me/vehicles)",
    responses=problem_responses(400, 401, 403, 404),
)
async def unbind_vehicle(request: Request[Any, Any, Any], vehicle_id: VehicleIdParam) -> None:
    """Another account's binding is a 404, audited (matrix A1)."""
    infra = infra_of(request.app)
    me = principal_of(request).subject
    now = clock_of(request).now()
    try:
        async with connection(infra, transaction=True) as conn:
            await accounts.unbind_vehicle(
                conn,
                account_id=me,
                vehicle_id=vehicle_id,
                now=now,
                revoke_mandates=payment_contactless.revoke_mandates_of,
            )
    except VehicleNotFound:
        async with connection(infra) as conn:
            if await accounts.vehicle_of_another(conn, me, vehicle_id):
                await audit_denied(
                    conn,
                    actor=me,
                    action="denied:vehicle.unbind",
                    target=f"vehicle:{vehicle_id}",
                    now=now,
                )
        raise
    request.app.state.pricer_cache.invalidate()


@post(
    "/v1/me/plate-claims",
    guards=driver_only,
    tags=["drivers"],
    summary="Claim a plate another account holds, or verify my own binding: an operator "
    "checks the 行驶证 number and photo (the plate goes in the body, never in a URL)",
    status_code=201,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def claim_plate(request: Request[Any, Any, Any], data: JSONBody[ClaimRequest]) -> ClaimView:
    """Approval leaves the plate bound to you, verified; the holder can also simply unbind it."""
    async with connection(infra_of(request.app), transaction=True) as conn:
        return await plate_claims.claim_plate(
            conn,
            account_id=principal_of(request).subject,
            plate_raw=data.plate,
            evidence=data.evidence,
            photo_ref=data.photo_ref,
            now=clock_of(request).now(),
        )


@get(
    "/v1/me/plate-claims",
    guards=driver_only,
    tags=["drivers"],
    summary="My plate claims and their decisions",
    responses=problem_responses(400, 401, 403),
)
async def my_claims(
    request: Request[Any, Any, Any], cursor: CursorParam = None, limit: LimitParam = DEFAULT_LIMIT
) -> ClaimPage:
    async with connection(infra_of(request.app)) as conn:
        found = await plate_claims.claims_of(
            conn, principal_of(request).subject, after=decode_cursor(cursor), limit=limit + 1
        )
    items, next_cursor = page(found, limit, key=lambda c: c.id)
    return ClaimPage(items=items, next_cursor=next_cursor)


# ------------------------------------------------------------------ operators


class DecisionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A note for the claimant (required to reject)."""

    note: Evidence | None = None


@get(
    "/v1/operator/plate-claims",
    guards=operator_only,
    tags=["operator"],
    summary="Plate claims to review, oldest first",
    responses=problem_responses(400, 401, 403),
)
async def claim_queue(
    request: Request[Any, Any, Any],
    status: Annotated[ClaimStatus, QueryParameter()] = ClaimStatus.PENDING,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> OperatorClaimPage:
    async with connection(infra_of(request.app)) as conn:
        found = await plate_claims.review_queue(
            conn, status=status, after=decode_cursor(cursor), limit=limit + 1
        )
    items, next_cursor = page(found, limit, key=lambda c: c.id)
    return OperatorClaimPage(items=items, next_cursor=next_cursor)


async def _decide(
    request: Request[Any, Any, Any], claim_id: str, decision: ClaimDecision, note: str | None
) -> OperatorClaimView:
    async with connection(infra_of(request.app), transaction=True) as conn:
        view = await plate_claims.decide_claim(
            conn,
            claim_id=claim_id,
            decision=decision,
            note=note,
            by=principal_of(request),
            now=clock_of(request).now(),
            revoke_mandates=payment_contactless.revoke_mandates_of,
        )
    request.app.state.pricer_cache.invalidate()
    return view


@post(
    "/v1/operator/plate-claims/{claim_id:str}/approve",
    guards=operator_only,
    tags=["operator"],
    summary="Approve a claim: the plate moves to the claimant (audited)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def approve_claim(
    request: Request[Any, Any, Any], claim_id: ClaimId, data: JSONBody[DecisionRequest]
) -> OperatorClaimView:
    return await _decide(request, claim_id, ClaimDecision.APPROVE, data.note)


@post(
    "/v1/operator/plate-claims/{claim_id:str}/reject",
    guards=operator_only,
    tags=["operator"],
    summary="Reject a claim with a note for the claimant (audited)",
    status_code=200,
    request_max_body_size=BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 409, 413),
)
async def reject_claim(
    request: Request[Any, Any, Any], claim_id: ClaimId, data: JSONBody[DecisionRequest]
) -> OperatorClaimView:
    return await _decide(request, claim_id, ClaimDecision.REJECT, data.note)


# ------------------------------------------------------------------ QR


class ResolveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the scanner read: the printed URL, or the token after ``/q/``."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


@post(
    "/v1/qr/resolve",
    guards=[roles(Role.DRIVER, Role.OPERATOR)],
    tags=["qr"],
    summary="What a scanned lot, lane or space code points at (forged or expired: 400)",
    status_code=200,
    request_max_body_size=AUTH_BODY_MAX,
    responses=problem_responses(400, 401, 403, 404, 413),
)
async def resolve_code(
    request: Request[Any, Any, Any], data: JSONBody[ResolveRequest]
) -> qr.Resolved:
    infra = infra_of(request.app)
    keyring = keyring_of(infra)
    async with connection(infra) as conn:
        return await qr.resolve(
            conn,
            keyring=keyring,
            scanned=data.code,
            now=clock_of(request).now(),
            prefix=qr_logic.prefix_of(infra.settings.public_base_url),
        )


ROUTES = [
    send_code,
    issue_tokens,
    refresh_tokens,
    log_out,
    me,
    my_vehicles,
    bind_vehicle,
    unbind_vehicle,
    claim_plate,
    my_claims,
    claim_queue,
    approve_claim,
    reject_claim,
    resolve_code,
]
