"""The sandbox's messaging side: WeChat template messages (模板消息) of the official
account, and an SMS gateway, as 码上反映's notifiers (``parking.cases.channels``) speak
them. Registered on the sandbox provider's app (``counterparts/payments/app.py``).

WeChat, strictly as its documentation answers (HTTP 200, ``errcode``/``errmsg``):

- ``GET /cgi-bin/token?grant_type=client_credential&appid=&secret=``: an access
  token for 7200 s; a new one leaves the previous alive for 5 more minutes.
  40002 bad grant_type, 40013 unknown appid, 40001 wrong AppSecret.
- ``POST /cgi-bin/message/template/send?access_token=``: 41001 no token, 40001 a token
  it never issued, 42001 an expired one; 47001 a body that is not the documented JSON
  (unknown fields included), 40037 an unknown template, 40003 a malformed openid,
  47003 a data key the template lacks or a key of it missing, or a value over its
  type's limit.
  One message per openid and ``client_msg_id`` (a repeat answers ok, sends nothing).

The SMS gateway (the HMAC-signed JSON form of docs/cases.md, Aliyun's error codes):
``POST /sms/v1/send``. 400 ``IncompleteSignature`` / 403 ``InvalidAccessKeyId.NotFound``,
``InvalidTimeStamp.Expired`` (over 5 minutes off), ``SignatureNonceUsed``,
``SignatureDoesNotMatch``; 400 ``InvalidParameter`` for a body that is not the
documented JSON; HTTP 200 with ``isv.MOBILE_NUMBER_ILLEGAL``, ``isv.SMS_SIGNATURE_ILLEGAL``,
``isv.SMS_TEMPLATE_ILLEGAL``, ``isv.TEMPLATE_MISSING_PARAMETERS``,
``isv.TEMPLATE_PARAMS_ILLEGAL`` or ``isv.PARAM_LENGTH_LIMIT`` (a value over 35
characters); ``{"code": "OK", ...}`` when sent.

The control surface: ``GET /sandbox/messages`` (every call received, newest last;
``?to=`` one phone or openid, ``?api=``), ``POST /sandbox/messages/control``
(``expire_tokens``; ``fail`` the next ``count`` sends of a channel with ``code``;
``reset``). Kept in memory: a restart forgets the tokens (the platform takes a new
one on 40001) and the record.

Files under the sandbox's folder (written at start, like ``merchant.json``):
``sms_access_key_id`` and ``sms_access_key_secret`` (generated once, mode 0600) and
``notify.json``, a ``PARKING_CASES_NOTIFY_CONFIG`` for the platform that points both
channels here, with the catalogue's templates and a demo contacts directory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import string
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State

from parking.cases import channels
from parking.cases.channels import Field
from parking.clock import Clock

SMS_KEY_ID: Final = "sms_access_key_id"
SMS_KEY_SECRET: Final = "sms_access_key_secret"  # noqa: S105 - the file's name
NOTIFY_CONFIG: Final = "notify.json"
SMS_PATH: Final = "/sms/v1/send"
#: WeChat's access token lifetime, and how long a replaced one stays good.
TOKEN_TTL_S: Final = 7200.0
TOKEN_OVERLAP_S: Final = 300.0
#: How far a signed SMS request's timestamp may be from the gateway's clock, and how
#: long a nonce is remembered (longer than that window, so a replay is always seen).
SMS_SKEW_S: Final = 300.0
NONCE_MEMORY_S: Final = 900.0
#: ``client_msg_id`` is a repeat within 10 minutes (WeChat's documented window).
CLIENT_MSG_WINDOW_S: Final = 600.0
RECORD_LIMIT: Final = 10_000
SMS_PARAM_MAX: Final = 35

#: The signatures (签名) the gateway approved.
SMS_SIGNS: Final = frozenset({"畅泊停车"})
#: The gateway's approved templates: code -> text (``${name}`` variables).
SMS_TEMPLATES: Final = {
    "SMS_CB_CASE": "码上反映：${level}工单${case}（${lot}）${kind}，请于${due}前受理。",
    "SMS_CB_RESOLVED": "您在${lot}反映的问题（工单${case}）已办结，请在畅泊确认或重开。",
}
#: The official account's templates: id -> (title, content with ``{{key.DATA}}``).
WECHAT_CASE_TEMPLATE: Final = "Sbx7Yq2cCaseNoticeT1mPl4tE-0001-kw5qZrT8vLmN"
WECHAT_TEMPLATES: Final = {
    WECHAT_CASE_TEMPLATE: (
        "工单处理提醒",
        "工单编号：{{character_string1.DATA}}\n停车场：{{thing2.DATA}}\n"
        "事项：{{phrase3.DATA}}\n问题类型：{{thing4.DATA}}\n受理时限：{{time5.DATA}}",
    ),
}
#: WeChat's limits per value type (as the platform's adapter clips to them).
WECHAT_LIMITS: Final = {"thing": 20, "character_string": 32, "phrase": 5}
_TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$|^\d{2}:\d{2}$")
_CHARACTER_STRING: Final = re.compile(r"^[\x21-\x7e]*$")
_OPENID: Final = re.compile(r"^o[0-9A-Za-z_-]{27}$")
_PHONE: Final = re.compile(r"^\+861[3-9][0-9]{9}$")
_SMS_VARIABLE: Final = re.compile(r"\$\{(\w+)\}")
_WECHAT_KEY: Final = re.compile(r"\{\{(\w+)\.DATA\}\}")
_AUTH: Final = re.compile(
    r"^CB-HMAC-SHA256 KeyId=([^,\s]+),Timestamp=(\d{1,12}),Nonce=([0-9a-f]{16,64}),"
    r"Signature=([A-Za-z0-9+/=]{20,100})$"
)
#: The demo lot's staff and its district's team (seeded as GZ-DEMO-01 in 章贡区), so a
#: platform pointed at ``notify.json`` reaches a phone on ``make run``'s walkthrough.
DEMO_CONTACTS: Final = {
    "lot_staff:GZ-DEMO-01": channels.Contact(
        phones=["+8613900000001"], openids=["oSbxDemoLotStaffGZDEMO01aaaa"]
    ),
    "district_team:ZG": channels.Contact(phones=["+8613900000002"]),
}


# --------------------------------------------------------------------------- wire


class TemplateValue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    value: str
    color: str | None = None


class MiniProgram(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    appid: str
    pagepath: str | None = None


class TemplateSend(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``/cgi-bin/message/template/send``."""

    touser: str
    template_id: str
    data: dict[str, TemplateValue]
    url: str | None = None
    miniprogram: MiniProgram | None = None
    client_msg_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class SmsSend(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of the gateway's send call."""

    phone_number: str
    sign_name: str
    template_code: str
    template_params: dict[str, str]
    out_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class _Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ExpireTokens(_Command, frozen=True, kw_only=True, tag_field="action", tag="expire_tokens"):
    """Every access token issued so far expires now (the next send answers 42001)."""


class FailSends(_Command, frozen=True, kw_only=True, tag_field="action", tag="fail"):
    """The next ``count`` well-formed sends of ``channel`` are refused with ``code``
    (WeChat: an errcode, default -1 system error; SMS: default ``isp.SYSTEM_ERROR``)."""

    channel: Literal["sms", "wechat"]
    count: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class ResetMessages(_Command, frozen=True, kw_only=True, tag_field="action", tag="reset"):
    """No failures pending; the record and the tokens are kept."""


MessagesControl = ExpireTokens | FailSends | ResetMessages


Api = Literal["token", "template_send", "sms_send"]


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """One call the sandbox received, as ``GET /sandbox/messages`` lists it."""

    seq: int
    api: Api
    #: ``ok``, ``duplicate`` (a repeated client_msg_id) or the error code answered
    outcome: str
    at: datetime
    to: str | None = None
    template: str | None = None
    fields: dict[str, str] = msgspec.field(default_factory=dict)
    #: the message as the phone shows it
    text: str | None = None
    url: str | None = None
    #: ``out_id`` / ``client_msg_id``
    ref: str | None = None


# --------------------------------------------------------------------------- files


class SmsKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    secret: str


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def ensure(folder: Path, *, base_url: str, appid: str, app_secret_path: Path) -> SmsKey:
    """The gateway's access key (generated on first start) and ``notify.json``, rewritten
    at every start because it carries the sandbox's current base URL."""
    if not (folder / SMS_KEY_SECRET).exists():
        alphabet = string.ascii_letters + string.digits
        _write_private(folder / SMS_KEY_ID, ("LTAIsbx" + secrets.token_hex(8)).encode())
        _write_private(
            folder / SMS_KEY_SECRET, "".join(secrets.choice(alphabet) for _ in range(30)).encode()
        )
    key = SmsKey(
        key_id=(folder / SMS_KEY_ID).read_text().strip(),
        secret=(folder / SMS_KEY_SECRET).read_text().strip(),
    )
    config = channels.NotifyConfig(
        sms=channels.SmsConfig(
            endpoint=f"{base_url}{SMS_PATH}",
            access_key_id=key.key_id,
            access_key_secret_path=str((folder / SMS_KEY_SECRET).resolve()),
            sign_name="畅泊停车",
            templates={
                channels.DEFAULT_TEMPLATE: channels.SmsTemplate(
                    code="SMS_CB_CASE",
                    params={
                        "level": Field.LEVEL_LABEL,
                        "case": Field.CASE_ID,
                        "lot": Field.LOT_ID,
                        "kind": Field.KIND_LABEL,
                        "due": Field.ACCEPT_DUE,
                    },
                ),
                "resolved": channels.SmsTemplate(
                    code="SMS_CB_RESOLVED", params={"lot": Field.LOT_ID, "case": Field.CASE_ID}
                ),
            },
        ),
        wechat=channels.WechatConfig(
            api_base=base_url,
            appid=appid,
            app_secret_path=str(app_secret_path.resolve()),
            templates={
                channels.DEFAULT_TEMPLATE: channels.WechatTemplate(
                    template_id=WECHAT_CASE_TEMPLATE,
                    data={
                        "character_string1": Field.CASE_ID,
                        "thing2": Field.LOT_ID,
                        "phrase3": Field.KIND_LABEL,
                        "thing4": Field.CATEGORY_LABEL,
                        "time5": Field.ACCEPT_DUE,
                    },
                )
            },
        ),
        contacts=dict(DEMO_CONTACTS),
    )
    _write_private(folder / NOTIFY_CONFIG, msgspec.json.format(msgspec.json.encode(config)))
    return key


# --------------------------------------------------------------------------- the service


class SandboxMessages:
    """The official account's and the gateway's side: tokens, checks, the record."""

    def __init__(self, *, appid: str, app_secret: str, sms_key: SmsKey, clock: Clock) -> None:
        self._appid = appid
        self._app_secret = app_secret
        self._sms_key = sms_key
        self._clock = clock
        self._tokens: dict[str, float] = {}
        self._nonces: dict[str, float] = {}
        self._client_msgs: dict[tuple[str, str], tuple[float, int]] = {}
        self._failures: dict[str, deque[str]] = {"sms": deque(), "wechat": deque()}
        self._calls: deque[Call] = deque(maxlen=RECORD_LIMIT)
        self._seq = 0

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _record(self, api: Api, outcome: str, **fields: Any) -> int:
        self._seq += 1
        self._calls.append(
            Call(
                seq=self._seq,
                api=api,
                outcome=outcome,
                at=self._clock.now().astimezone(UTC),
                **fields,
            )
        )
        return self._seq

    def calls(self, *, to: str | None, api: str | None) -> list[Call]:
        return [
            c for c in self._calls if (to is None or c.to == to) and (api is None or c.api == api)
        ]

    def control(self, command: MessagesControl) -> dict[str, Any]:
        if isinstance(command, ExpireTokens):
            now = self._now()
            self._tokens = {token: min(at, now) for token, at in self._tokens.items()}
        elif isinstance(command, FailSends):
            default = "-1" if command.channel == "wechat" else "isp.SYSTEM_ERROR"
            if command.channel == "wechat" and not (command.code or "-1").lstrip("-").isdigit():
                raise ValueError("a WeChat errcode is a number")
            self._failures[command.channel].extend([command.code or default] * command.count)
        else:
            for pending in self._failures.values():
                pending.clear()
        return {
            "tokens_live": sum(1 for at in self._tokens.values() if at > self._now()),
            "failures": {k: len(v) for k, v in self._failures.items()},
        }

    # ----------------------------------------------------------------- WeChat

    def token(self, *, grant_type: str, appid: str, secret: str) -> dict[str, Any]:
        if grant_type != "client_credential":
            return self._wechat_error("token", 40002, "invalid grant_type")
        if appid != self._appid:
            return self._wechat_error("token", 40013, "invalid appid")
        if not secrets.compare_digest(secret.encode(), self._app_secret.encode()):
            return self._wechat_error(
                "token", 40001, "AppSecret error or AppSecret does not belong to this AppID"
            )
        now = self._now()
        # WeChat: a new token replaces the old, which keeps working for 5 minutes.
        self._tokens = {
            t: min(at, now + TOKEN_OVERLAP_S) for t, at in self._tokens.items() if at > now
        }
        token = secrets.token_urlsafe(96)
        self._tokens[token] = now + TOKEN_TTL_S
        self._record("token", "ok")
        return {"access_token": token, "expires_in": int(TOKEN_TTL_S)}

    def _wechat_error(
        self, api: Literal["token", "template_send"], errcode: int, errmsg: str, **fields: Any
    ) -> dict[str, Any]:
        self._record(api, str(errcode), **fields)
        return {"errcode": errcode, "errmsg": f"{errmsg} rid: {secrets.token_hex(12)}"}

    def template_send(self, token: str | None, body: bytes) -> dict[str, Any]:
        if not token:
            return self._wechat_error("template_send", 41001, "access_token missing")
        expires = self._tokens.get(token)
        if expires is None:
            return self._wechat_error(
                "template_send", 40001, "invalid credential, access_token is invalid or not latest"
            )
        try:
            send = msgspec.json.decode(body, type=TemplateSend)
        except msgspec.DecodeError:
            return self._wechat_error("template_send", 47001, "data format error")
        seen = {"to": send.touser, "template": send.template_id, "ref": send.client_msg_id}
        if expires <= self._now():
            return self._wechat_error("template_send", 42001, "access_token expired", **seen)
        template = WECHAT_TEMPLATES.get(send.template_id)
        if template is None:
            return self._wechat_error("template_send", 40037, "invalid template_id", **seen)
        if not _OPENID.match(send.touser):
            return self._wechat_error("template_send", 40003, "invalid openid", **seen)
        wrong = _template_problem(template[1], send)
        if wrong is not None:
            return self._wechat_error("template_send", 47003, f"argument invalid! {wrong}", **seen)
        fields = {key: value.value for key, value in send.data.items()}
        if self._failures["wechat"]:
            code = self._failures["wechat"].popleft()
            return self._wechat_error(
                "template_send", int(code), "system error", fields=fields, **seen
            )
        now = self._now()
        if send.client_msg_id is not None:
            earlier = self._client_msgs.get((send.touser, send.client_msg_id))
            if earlier is not None and earlier[0] > now - CLIENT_MSG_WINDOW_S:
                self._record("template_send", "duplicate", fields=fields, **seen)
                return {"errcode": 0, "errmsg": "ok", "msgid": earlier[1]}
        text = template[0] + "\n" + _WECHAT_KEY.sub(lambda m: fields[m.group(1)], template[1])
        msgid = 2_000_000_000 + self._record(
            "template_send", "ok", fields=fields, text=text, url=send.url, **seen
        )
        if send.client_msg_id is not None:
            self._client_msgs[(send.touser, send.client_msg_id)] = (now, msgid)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    # ----------------------------------------------------------------- SMS

    def sms_send(self, authorization: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        refused = self._sms_refused(authorization, path, body)
        if refused is not None:
            status, code, message = refused
            self._record("sms_send", code)
            return status, self._sms_answer(code, message)
        try:
            send = msgspec.json.decode(body, type=SmsSend)
        except msgspec.DecodeError as exc:
            self._record("sms_send", "InvalidParameter")
            return 400, self._sms_answer("InvalidParameter", f"The parameter is invalid: {exc}")
        seen = {
            "to": send.phone_number,
            "template": send.template_code,
            "ref": send.out_id,
            "fields": dict(send.template_params),
        }
        code, message = self._sms_problem(send)
        if code == "OK" and self._failures["sms"]:
            code, message = self._failures["sms"].popleft(), "System error"
        if code != "OK":
            self._record("sms_send", code, **seen)
            return 200, self._sms_answer(code, message)
        text = f"【{send.sign_name}】" + _SMS_VARIABLE.sub(
            lambda m: send.template_params[m.group(1)], SMS_TEMPLATES[send.template_code]
        )
        self._record("sms_send", "ok", text=text, **seen)
        return 200, {**self._sms_answer("OK", "OK"), "biz_id": secrets.token_hex(10)}

    def _sms_answer(self, code: str, message: str) -> dict[str, Any]:
        return {"code": code, "message": message, "request_id": secrets.token_hex(16).upper()}

    def _sms_refused(
        self, authorization: str, path: str, body: bytes
    ) -> tuple[int, str, str] | None:
        found = _AUTH.match(authorization)
        if found is None:
            return 400, "IncompleteSignature", "The request signature does not conform."
        key_id, stamp, nonce, signature = found.groups()
        if key_id != self._sms_key.key_id:
            return 403, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
        now = self._now()
        if abs(now - int(stamp)) > SMS_SKEW_S:
            return 403, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
        self._nonces = {n: at for n, at in self._nonces.items() if at > now - NONCE_MEMORY_S}
        if nonce in self._nonces:
            return 403, "SignatureNonceUsed", "Specified signature nonce was used already."
        # The string to sign, as docs/cases.md documents it (built here on its own, not
        # with the platform's function, so the two are checked against each other).
        signed = "\n".join(
            ["CB-HMAC-SHA256", stamp, nonce, "POST", path, hashlib.sha256(body).hexdigest()]
        ).encode()
        expected = hmac.new(self._sms_key.secret.encode(), signed, "sha256").digest()
        if not hmac.compare_digest(base64.b64encode(expected).decode(), signature):
            return 403, "SignatureDoesNotMatch", "Specified signature is not matched."
        self._nonces[nonce] = now
        return None

    def _sms_problem(self, send: SmsSend) -> tuple[str, str]:
        if not _PHONE.match(send.phone_number):
            return "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"
        if send.sign_name not in SMS_SIGNS:
            return "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名"
        template = SMS_TEMPLATES.get(send.template_code)
        if template is None:
            return "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板"
        wanted = set(_SMS_VARIABLE.findall(template))
        given = set(send.template_params)
        if wanted - given:
            return "isv.TEMPLATE_MISSING_PARAMETERS", f"模版缺少变量: {sorted(wanted - given)}"
        if given - wanted:
            return (
                "isv.TEMPLATE_PARAMS_ILLEGAL",
                f"模版变量里包含非法关键字: {sorted(given - wanted)}",
            )
        if any(len(v) > SMS_PARAM_MAX or not v for v in send.template_params.values()):
            return "isv.PARAM_LENGTH_LIMIT", f"参数超出长度限制 ({SMS_PARAM_MAX})"
        return "OK", "OK"


def _template_problem(content: str, send: TemplateSend) -> str | None:
    """What WeChat's 47003 would name: a key missing or unknown, a value over its limit."""
    wanted = _WECHAT_KEY.findall(content)
    unmatched = sorted(set(wanted) ^ set(send.data))
    if unmatched:
        return f"data.{unmatched[0]}.value invalid"
    for key in wanted:
        value = send.data[key].value
        kind = key.rstrip("0123456789")
        limit = WECHAT_LIMITS.get(kind)
        if (
            not value
            or (limit is not None and len(value) > limit)
            or (kind == "time" and not _TIME.match(value))
            or (kind == "character_string" and not _CHARACTER_STRING.match(value))
        ):
            return f"data.{key}.value invalid"
    if send.url is not None and not send.url.startswith(("http://", "https://")):
        return "url invalid"
    return None


# --------------------------------------------------------------------------- routes

_Req = Request[Any, Any, State]


def _messages(request: _Req) -> SandboxMessages:
    found: SandboxMessages = request.app.state.messages
    return found


def _json(status: int, payload: Any) -> Response[bytes]:
    return Response(
        content=msgspec.json.encode(payload), status_code=status, media_type="application/json"
    )


@get("/cgi-bin/token")
async def wechat_token(request: _Req) -> Response[bytes]:
    query = request.query_params
    answer = _messages(request).token(
        grant_type=query.get("grant_type", ""),
        appid=query.get("appid", ""),
        secret=query.get("secret", ""),
    )
    return _json(200, answer)


@post("/cgi-bin/message/template/send")
async def wechat_template_send(request: _Req) -> Response[bytes]:
    answer = _messages(request).template_send(
        request.query_params.get("access_token"), await request.body()
    )
    return _json(200, answer)


@post(SMS_PATH)
async def sms_send(request: _Req) -> Response[bytes]:
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    status, answer = _messages(request).sms_send(
        request.headers.get("Authorization", ""), raw.decode("latin-1"), await request.body()
    )
    return _json(status, answer)


@get("/sandbox/messages")
async def sent_messages(request: _Req) -> Response[bytes]:
    calls = _messages(request).calls(
        to=request.query_params.get("to"), api=request.query_params.get("api")
    )
    return _json(200, calls)


@post("/sandbox/messages/control")
async def messages_control(request: _Req) -> Response[bytes]:
    try:
        command = msgspec.json.decode(await request.body(), type=MessagesControl)
        return _json(200, _messages(request).control(command))
    except (msgspec.DecodeError, ValueError) as exc:
        return _json(400, {"code": "PARAM_ERROR", "message": str(exc)})


ROUTES: Final = [wechat_token, wechat_template_send, sms_send, sent_messages, messages_control]


def start(
    folder: Path,
    *,
    base_url: str,
    appid: str,
    app_secret: str,
    app_secret_path: Path,
    clock: Clock,
) -> SandboxMessages:
    """The messaging side of a sandbox whose keys are in ``folder``: files written, state
    fresh. ``app.py`` keeps it as ``state.messages``."""
    key = ensure(folder, base_url=base_url, appid=appid, app_secret_path=app_secret_path)
    return SandboxMessages(appid=appid, app_secret=app_secret, sms_key=key, clock=clock)
