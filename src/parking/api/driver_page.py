"""The page a scanned code opens (一次扫码): ``GET /q/<token>``, mobile first.

A code that is forged or altered answers a 404 page, an expired one or one signed
with a retired key a 410 page, a code for a place that is gone a 404 page: a sentence
a driver understands, never the app. A genuine code answers the page
(``static/driver.html``), which reads ``GET /q/<token>/about`` (public: the lot, the
place, free spaces now, the tariff in words) and, once the driver logs in, the driver
API with a bearer token.

Where the tokens live, and why. The access token (15 minutes) is kept in the page's
memory only, and sent as an ``Authorization`` header: a cross-site page cannot make
the browser send it, so the driver API needs no CSRF token. The refresh token never
reaches the page's script: ``POST /q/login`` sets it as an ``HttpOnly; SameSite=Strict``
cookie scoped to ``/q/auth`` (``Secure`` when the platform is served over https), and
``POST /q/auth/refresh`` turns it into a new access token, so a reload, or coming
back from the payment provider's page, keeps the driver logged in without storing a
token where a script could read it. The three cookie routes (login, refresh,
logout) are the only ones a cookie authenticates; each requires the page's own
header (``X-Changbo-Page``, which a cross-site form cannot send and a cross-site
script cannot send without a CORS preflight this server never grants) and, when the
browser names one, an ``Origin`` equal to the platform's own.

Leaving and coming back. Paying hands the browser to the provider's cashier (WeChat
H5: ``POST /v1/bills/pay`` with ``channel`` h5 and the page's path as ``return_to``),
and turning contactless payment on to the provider's sign-in and authorising page
(``api/contactless.py``). Both are top-level navigations, not requests of the page;
the provider sends the browser back to ``/q/<token>?paid=1`` or ``?contactless=on``,
which the page reads once and removes from the address. What is being paid (the
payment's id, nothing personal) waits in the tab's ``sessionStorage`` meanwhile.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import JSONBody, PathParameter

from parking.accounts import service as accounts
from parking.accounts.model import IssuedTokens
from parking.api import drivers
from parking.api.infra import connection, infra_of
from parking.api.pages import STATIC
from parking.api.rate_limit import RateLimiter, Rule
from parking.api.routing import clock_of, problem_responses
from parking.qr import logic as qr_logic
from parking.qr import service as qr
from parking.qr.model import ExpiredQr, QrError, QrTargetNotFound, QrToken, UnknownQrKey
from parking.scans import about as code_about
from parking.scans.about import CodeAbout

_PUBLIC: Final = {"exclude_from_auth": True}
TokenParam = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9_-]{1,512}$")]
#: the page loads and calls only this server
POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADER: Final = "X-Changbo-Page"
REFRESH_COOKIE: Final = "changbo_refresh"
COOKIE_PATH: Final = "/q/auth"
ABOUT_PER_CLIENT: Final = (Rule("code-about-1m", 120, 60),)


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": POLICY,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


def sorry_page(status: int, title: str, sentence: str) -> Response[bytes]:
    """A page a driver understands, never the app (a bad code, an expired link)."""
    body = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><link rel="stylesheet" href="/page/static/driver.css"></head>
<body><main class="sorry" data-status="{status}"><h1>{escape(title)}</h1>
<p>{escape(sentence)}</p>
<p class="hint">如需帮助，请联系现场管理员或拨打 12345。</p></main></body></html>
"""
    return Response(
        body.encode(), status_code=status, media_type="text/html; charset=utf-8", headers=_headers()
    )


def _verify(request: Request[Any, Any, Any], token: str) -> QrToken:
    infra = infra_of(request.app)
    return qr_logic.verify(token, keyring=drivers.keyring_of(infra), now=clock_of(request).now())


@get("/q/{token:str}", opt=_PUBLIC, include_in_schema=False)
async def code_page(request: Request[Any, Any, Any], token: TokenParam) -> Response[bytes]:
    try:
        verified = _verify(request, token)
        async with connection(infra_of(request.app)) as conn:
            await qr.place_of(conn, verified.target)
    except ExpiredQr:
        return sorry_page(410, "二维码已过期", "这个二维码已过期，请扫描现场张贴的最新二维码。")
    except UnknownQrKey:
        return sorry_page(410, "二维码已停用", "这个二维码已停用，请扫描现场张贴的最新二维码。")
    except QrTargetNotFound:
        return sorry_page(
            404, "停车场或车道已不存在", "这个二维码对应的停车场、车道或泊位已不存在。"
        )
    except QrError:
        return sorry_page(
            404,
            "无法识别的二维码",
            "这不是畅泊的停车二维码，或二维码已被涂改。请勿扫描来历不明的二维码。",
        )
    return Response(
        (STATIC / "driver.html").read_bytes(),
        media_type="text/html; charset=utf-8",
        headers=_headers(),
    )


@get(
    "/q/{token:str}/about",
    opt=_PUBLIC,
    tags=["driver page"],
    summary="What a code shows before login: the lot, the place, free spaces, the tariff",
    responses=problem_responses(400, 404, 429),
)
async def about(request: Request[Any, Any, Any], token: TokenParam) -> Response[CodeAbout]:
    infra = infra_of(request.app)
    decision = await RateLimiter(infra.redis).enforce(
        [(f"code-about:client:{drivers.client_of(request)}", ABOUT_PER_CLIENT)]
    )
    verified = _verify(request, token)
    async with connection(infra) as conn:
        found = await code_about.about(conn, infra.redis, verified, now=clock_of(request).now())
    return Response(found, headers={**decision.headers, "Cache-Control": "no-store"})


def _same_origin(request: Request[Any, Any, Any]) -> None:
    """The cookie routes answer only the page itself (see the module's notes)."""
    if request.headers.get(PAGE_HEADER) != "1":
        raise PermissionDeniedException(f"this route is the page's own (missing {PAGE_HEADER})")
    origin = request.headers.get("origin")
    if origin is None:
        return
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    public = urlsplit(infra_of(request.app).settings.public_base_url)
    own.add(f"{public.scheme}://{public.netloc}")
    if origin not in own:
        raise PermissionDeniedException("a request from another site")


class PageLogin(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    phone: drivers.Phone
    code: drivers.Code


class PageTokens(msgspec.Struct, frozen=True, kw_only=True):
    """What the page's script gets: an access token, never the refresh token."""

    access_token: str
    expires_in: int
    account_id: str


def _with_cookie(request: Request[Any, Any, Any], issued: IssuedTokens) -> Response[PageTokens]:
    secure = infra_of(request.app).settings.public_base_url.startswith("https://")
    return Response(
        PageTokens(
            access_token=issued.access_token,
            expires_in=issued.expires_in,
            account_id=issued.account_id,
        ),
        headers={"Cache-Control": "no-store"},
        cookies=[
            Cookie(
                key=REFRESH_COOKIE,
                value=issued.refresh_token,
                max_age=issued.refresh_expires_in,
                path=COOKIE_PATH,
                httponly=True,
                samesite="strict",
                secure=secure,
            )
        ],
    )


@post(
    "/q/auth/login",
    opt=_PUBLIC,
    tags=["driver page"],
    summary="The page's login: an access token, the refresh token as an HttpOnly cookie",
    status_code=200,
    request_max_body_size=drivers.AUTH_BODY_MAX,
    responses=problem_responses(400, 401, 403, 413, 429, 503),
)
async def page_login(
    request: Request[Any, Any, Any], data: JSONBody[PageLogin]
) -> Response[PageTokens]:
    _same_origin(request)
    issued, _ = await drivers.log_in(request, data.phone, data.code)
    return _with_cookie(request, issued)


@post(
    "/q/auth/refresh",
    opt=_PUBLIC,
    tags=["driver page"],
    summary="The page's refresh: the cookie for a new access token (and a new cookie)",
    status_code=200,
    responses=problem_responses(401, 403, 429, 503),
)
async def page_refresh(request: Request[Any, Any, Any]) -> Response[PageTokens]:
    _same_origin(request)
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if not refresh_token:
        raise NotAuthorizedException("not logged in on this page")
    return _with_cookie(request, await drivers.refresh(request, refresh_token))


@post(
    "/q/auth/logout",
    opt=_PUBLIC,
    tags=["driver page"],
    summary="The page's logout: the login revoked (with the access token), the cookie cleared",
    status_code=204,
    responses=problem_responses(403, 503),
)
async def page_logout(request: Request[Any, Any, Any]) -> Response[None]:
    _same_origin(request)
    infra = infra_of(request.app)
    scheme, _, access = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and access.strip():
        async with connection(infra, transaction=True) as conn:
            await accounts.log_out(
                conn, infra.redis, access_token=access.strip(), now=clock_of(request).now()
            )
    return Response(
        None,
        status_code=204,
        cookies=[Cookie(key=REFRESH_COOKIE, value="", max_age=0, path=COOKIE_PATH, httponly=True)],
    )


ROUTES: Final = [code_page, about, page_login, page_refresh, page_logout]
