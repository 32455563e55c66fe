"""码上反映's notifications, what they say and the channels that carry them out: SMS
and WeChat template messages (the configuration file, the ``Notice`` a channel sends,
``WechatTemplateChannel`` and ``SmsChannel``). The outbox that feeds them is
``cases.notifiers``.

- ``WechatTemplateChannel``: the official account's 模板消息. An access token from
  ``GET /cgi-bin/token`` (client_credential), kept until shortly before it expires;
  ``POST /cgi-bin/message/template/send``. A token WeChat calls invalid or expired
  (40001, 40014, 42001) is refreshed once and the message sent once more.
- ``SmsChannel``: an SMS gateway spoken as an HMAC-signed JSON request, modelled on
  Aliyun's and Tencent Cloud's (phone, sign name, template code, template params);
  the wire format is in docs/cases.md ("Notifications").
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec
import structlog

from parking.clock import SHANGHAI, Clock
from parking.config import ConfigError

log = structlog.get_logger("parking.cases.notifiers")

_T = TypeVar("_T")

#: A mainland mobile number in E.164 form, as ``accounts`` keeps it.
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+861[3-9][0-9]{9}$")]
#: An openid of the official account (28 characters, starting with ``o``).
OpenId = Annotated[str, msgspec.Meta(pattern=r"^o[0-9A-Za-z_-]{27}$")]
#: ``role:scope`` as a case's holder or a notification's recipient names it.
HolderKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{2,32}:[^\s]{1,64}$")]
#: the key a channel's templates map for the kinds without a template of their own
DEFAULT_TEMPLATE: Final = "default"
#: the holder form of a reporter: the account's phone gets the SMS
ACCOUNT_PREFIX: Final = "account:"

# Retries: 1, 5, 15 and 60 minutes after the attempts that failed, then hourly until
# ``max_attempts``. A case's clock runs 30 minutes: the first retries are quick so a
# gateway's short hiccup costs minutes; the later ones slow down so an outage of the
# provider is not hammered (and ``stale_after`` ends it).
BACKOFF: Final = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
)
#: A claimed row is someone's for this long: a job that died mid-send leaves it to the
#: next run after the lease (a message may go twice; it is never lost).
LEASE: Final = timedelta(minutes=5)
#: WeChat's access token lives 7200 s; it is replaced this long before it expires.
TOKEN_MARGIN: Final = timedelta(minutes=5)
SMS_SCHEME: Final = "CB-HMAC-SHA256"
#: Aliyun's limit for one variable of a notice template.
SMS_PARAM_MAX: Final = 35
#: WeChat's limits per value type of a template's keys (``thing2``: a thing, 20
#: characters); longer values are refused with 47003, so they are clipped here.
WECHAT_LIMITS: Final = {
    "thing": 20,
    "character_string": 32,
    "phrase": 5,
    "name": 10,
    "car_number": 8,
    "number": 32,
    "letter": 32,
    "symbol": 5,
}
#: WeChat errcodes meaning the access token is not (or no longer) good.
WECHAT_TOKEN_INVALID: Final = frozenset({40001, 40014, 42001})
#: Answers about the address itself: sending again will not help.
WECHAT_PERMANENT: Final = frozenset({40003, 43004, 43101})
SMS_PERMANENT: Final = frozenset({"isv.MOBILE_NUMBER_ILLEGAL", "isv.BLACK_KEY_CONTROL_LIMIT"})


# --------------------------------------------------------------------------- configuration


class Field(StrEnum):
    """What a template's variable is filled with."""

    CASE_ID = "case_id"
    KIND = "kind"
    #: 新工单, 已超时, 已办结, 被重开... (the kind when it has no label)
    KIND_LABEL = "kind_label"
    LEVEL = "level"
    #: 小事, 中事, 大事
    LEVEL_LABEL = "level_label"
    CATEGORY = "category"
    #: 车位被占, 道闸故障...
    CATEGORY_LABEL = "category_label"
    LOT_ID = "lot_id"
    #: the notification's own words (as ``case_notifications.message`` has them)
    MESSAGE = "message"
    #: when it was said, Asia/Shanghai ``YYYY-MM-DD HH:MM``
    AT = "at"
    #: the case's accept clock, Asia/Shanghai ``YYYY-MM-DD HH:MM``
    ACCEPT_DUE = "accept_due"


class Contact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a team (or a person) is reached."""

    phones: list[Phone] = msgspec.field(default_factory=list)
    openids: list[OpenId] = msgspec.field(default_factory=list)


class SmsTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: the template code the gateway approved (``SMS_...``)
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    #: template variable -> what fills it
    params: dict[str, Field]


class SmsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: the gateway's send call (full URL)
    endpoint: str
    access_key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    #: file holding the access key's secret (absolute or relative to the config file)
    access_key_secret_path: str
    #: the approved signature (签名) the gateway prefixes every message with
    sign_name: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    #: notification kind -> template; ``default`` for the kinds not named
    templates: dict[str, SmsTemplate]
    timeout_seconds: float = 10.0


class WechatTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    template_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    #: template key (``thing2``, ``character_string1``...) -> what fills it
    data: dict[str, Field]
    #: the page the message opens; ``{case_id}`` is replaced (None: no page)
    url: str | None = None


class WechatConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_base: str = "https://api.weixin.qq.com"
    #: the official account's AppID
    appid: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    #: file holding its AppSecret (absolute or relative to the config file)
    app_secret_path: str
    templates: dict[str, WechatTemplate]
    timeout_seconds: float = 10.0


class NotifyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PARKING_CASES_NOTIFY_CONFIG``: which channels are on and who is reached where."""

    sms: SmsConfig | None = None
    wechat: WechatConfig | None = None
    #: holder (``lot_staff:GZ-DEMO-01``, ``district_team:ZG``, ``department:traffic_police``,
    #: ``operator:<company>``, ``account:<id>``) -> phones and openids. A reporter's
    #: account phone needs no entry.
    contacts: dict[HolderKey, Contact] = msgspec.field(default_factory=dict)
    #: attempts of one notification before it is given up (``failed``)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    #: a notification still undelivered this long after it was made is not sent
    #: (``stale``): a case's clock is 30 minutes, yesterday's call-in helps nobody
    stale_after_minutes: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 60)] = 360


def load_config(path: Path) -> NotifyConfig:
    """Read a ``NotifyConfig`` file, resolving relative secret paths against its folder;
    ConfigError naming what is wrong."""
    try:
        config = msgspec.json.decode(path.read_bytes(), type=NotifyConfig)
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"PARKING_CASES_NOTIFY_CONFIG {path}: {exc}") from None
    base = path.resolve().parent
    problems: list[str] = []
    sms, wechat = config.sms, config.wechat
    if sms is not None:
        problems += _url_problems("sms.endpoint", sms.endpoint)
        if DEFAULT_TEMPLATE not in sms.templates:
            problems.append("sms.templates has no 'default'")
        sms = msgspec.structs.replace(
            sms, access_key_secret_path=str((base / sms.access_key_secret_path).resolve())
        )
    if wechat is not None:
        problems += _url_problems("wechat.api_base", wechat.api_base)
        if DEFAULT_TEMPLATE not in wechat.templates:
            problems.append("wechat.templates has no 'default'")
        for kind, template in wechat.templates.items():
            if template.url is not None:
                problems += _url_problems(f"wechat.templates.{kind}.url", template.url)
        wechat = msgspec.structs.replace(
            wechat, app_secret_path=str((base / wechat.app_secret_path).resolve())
        )
    if problems:
        raise ConfigError(f"PARKING_CASES_NOTIFY_CONFIG {path}: {'; '.join(problems)}")
    return msgspec.structs.replace(config, sms=sms, wechat=wechat)


def _url_problems(name: str, url: str) -> list[str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [f"{name} is not an http(s) URL"]
    return []


def _secret(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"PARKING_CASES_NOTIFY_CONFIG: cannot read a secret file: {exc}"
        ) from None
    if not text:
        raise ConfigError(f"PARKING_CASES_NOTIFY_CONFIG: the secret file {path} is empty")
    return text


# --------------------------------------------------------------------------- what is said

KIND_LABELS: Final = {
    "dispatched": "新工单",
    "overdue": "已超时",
    "resolved": "已办结",
    "reopened": "被重开",
    "reminder": "提醒",
    "penalty_referral": "移交处罚",
}
LEVEL_LABELS: Final = {"small": "小事", "middle": "中事", "big": "大事"}
CATEGORY_LABELS: Final = {
    "space_blocked": "车位被占",
    "illegal_parking": "违法停车",
    "gate_fault": "道闸故障",
    "sensor_fault": "检测器故障",
    "wrong_charge": "收费有误",
    "payment_problem": "支付问题",
    "facility_damage": "设施损坏",
    "safety_hazard": "安全隐患",
    "other": "其他",
}


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One ``case_notifications`` row as the channels read it (with its case)."""

    id: int
    case_id: str
    at: datetime
    recipient: str
    kind: str
    message: str
    lot_id: str
    level: str
    category: str
    accept_due_at: datetime
    #: attempts including the one under way
    attempts: int
    #: address keys (``address_key``) that already got it
    sent: list[str]

    def field(self, which: Field) -> str:
        if which is Field.CASE_ID:
            return self.case_id
        if which is Field.KIND:
            return self.kind
        if which is Field.KIND_LABEL:
            return KIND_LABELS.get(self.kind, self.kind)
        if which is Field.LEVEL:
            return self.level
        if which is Field.LEVEL_LABEL:
            return LEVEL_LABELS.get(self.level, self.level)
        if which is Field.CATEGORY:
            return self.category
        if which is Field.CATEGORY_LABEL:
            return CATEGORY_LABELS.get(self.category, self.category)
        if which is Field.LOT_ID:
            return self.lot_id
        if which is Field.MESSAGE:
            return self.message
        moment = self.at if which is Field.AT else self.accept_due_at
        return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mask(address: str) -> str:
    """A phone or openid as logs may show it: ``+86138****0151``, ``o…Xy9z``."""
    if address.startswith("+86") and len(address) == 14:
        return f"{address[:6]}****{address[-4:]}"
    return f"{address[:1]}…{address[-4:]}"


def address_key(channel: str, address: str) -> str:
    """What a row remembers of an address that got the message: enough to skip it on a
    retry, without the phone or openid itself in the outbox."""
    return f"{channel}:{hashlib.sha256(f'{channel}:{address}'.encode()).hexdigest()[:16]}"


# --------------------------------------------------------------------------- channels


class DeliveryFailed(Exception):
    """A channel could not deliver to one address. ``permanent``: about the address
    itself (not a number, not following the account): sending again will not help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class Channel(Protocol):
    name: str

    def addresses(self, contact: Contact) -> list[str]:
        """The contact's addresses this channel reaches (phones, openids)."""
        ...

    async def send(self, address: str, notice: Notice) -> None:
        """Deliver ``notice`` to ``address``; DeliveryFailed when it was not."""
        ...


def _transport_error(exc: httpx.HTTPError) -> DeliveryFailed:
    # Only the class: httpx's messages may carry the URL, and WeChat's carry the token.
    return DeliveryFailed(f"no answer ({type(exc).__name__})")


class _TokenAnswer(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str | None = None
    expires_in: int | None = None
    errcode: int = 0
    errmsg: str = ""


class _SendAnswer(msgspec.Struct, frozen=True, kw_only=True):
    errcode: int
    errmsg: str = ""
    msgid: int | None = None


class _TemplateValue(msgspec.Struct, frozen=True):
    value: str


class _TemplateSend(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    touser: str
    template_id: str
    data: dict[str, _TemplateValue]
    url: str | None = None
    #: WeChat sends one message per openid and client_msg_id (a retry after a lost answer)
    client_msg_id: str | None = None


class WechatTemplateChannel:
    """The official account's template messages (模板消息) to followers' openids."""

    name = "wechat"

    def __init__(self, config: WechatConfig, http: httpx.AsyncClient, clock: Clock) -> None:
        self._config = config
        self._secret = _secret(config.app_secret_path)
        self._http = http
        self._clock = clock
        self._token: tuple[str, datetime] | None = None
        self._lock = asyncio.Lock()
        self._base = config.api_base.rstrip("/")

    def addresses(self, contact: Contact) -> list[str]:
        return list(contact.openids)

    async def _access_token(self, stale: str | None = None) -> str:
        """The token in hand, or a new one when there is none, it is about to expire or
        it is ``stale`` (WeChat refused it)."""
        async with self._lock:
            now = self._clock.now()
            if self._token is not None and self._token[0] != stale and self._token[1] > now:
                return self._token[0]
            try:
                response = await self._http.get(
                    f"{self._base}/cgi-bin/token",
                    params={
                        "grant_type": "client_credential",
                        "appid": self._config.appid,
                        "secret": self._secret,
                    },
                    timeout=self._config.timeout_seconds,
                )
            except httpx.HTTPError as exc:
                raise _transport_error(exc) from None
            answer = _decode(response, _TokenAnswer)
            if answer.access_token is None or not answer.expires_in:
                raise DeliveryFailed(f"access token refused: {answer.errcode} {answer.errmsg}")
            expires = now + timedelta(seconds=answer.expires_in) - TOKEN_MARGIN
            self._token = (answer.access_token, expires)
            log.info("wechat_access_token", expires_in=answer.expires_in)
            return answer.access_token

    def _request(self, openid: str, notice: Notice) -> bytes:
        template = (
            self._config.templates.get(notice.kind) or self._config.templates[DEFAULT_TEMPLATE]
        )
        data = {
            key: _TemplateValue(_wechat_value(key, notice.field(source)))
            for key, source in template.data.items()
        }
        url = None if template.url is None else template.url.replace("{case_id}", notice.case_id)
        return msgspec.json.encode(
            _TemplateSend(
                touser=openid,
                template_id=template.template_id,
                data=data,
                url=url,
                client_msg_id=f"cn-{notice.id}",
            )
        )

    async def _post(self, token: str, body: bytes) -> _SendAnswer:
        try:
            response = await self._http.post(
                f"{self._base}/cgi-bin/message/template/send",
                params={"access_token": token},
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=self._config.timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        return _decode(response, _SendAnswer)

    async def send(self, address: str, notice: Notice) -> None:
        body = self._request(address, notice)
        token = await self._access_token()
        answer = await self._post(token, body)
        if answer.errcode in WECHAT_TOKEN_INVALID:
            # Another holder of the AppSecret took a new token (the old one lives 5
            # more minutes), or WeChat ended it early: one new token, one more try.
            log.info("wechat_access_token_refused", errcode=answer.errcode)
            answer = await self._post(await self._access_token(stale=token), body)
        if answer.errcode != 0:
            raise DeliveryFailed(
                f"errcode {answer.errcode}: {clip(answer.errmsg, 120)}",
                permanent=answer.errcode in WECHAT_PERMANENT,
            )


def _wechat_value(key: str, value: str) -> str:
    kind = key.rstrip("0123456789")
    limit = WECHAT_LIMITS.get(kind)
    return value if limit is None else clip(value, limit)


def _decode(response: httpx.Response, type_: type[_T]) -> _T:
    if response.status_code != 200:
        raise DeliveryFailed(f"HTTP {response.status_code}")
    try:
        return msgspec.json.decode(response.content, type=type_)
    except msgspec.DecodeError:
        raise DeliveryFailed(f"unreadable answer (HTTP {response.status_code})") from None


class _SmsRequest(msgspec.Struct, frozen=True, kw_only=True):
    phone_number: str
    sign_name: str
    template_code: str
    template_params: dict[str, str]
    #: the caller's reference, echoed in delivery reports
    out_id: str


class _SmsAnswer(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str = ""
    biz_id: str | None = None


def sms_string_to_sign(*, timestamp: int, nonce: str, method: str, path: str, body: bytes) -> bytes:
    """What the SMS gateway's signature covers (docs/cases.md, "Notifications")."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{SMS_SCHEME}\n{timestamp}\n{nonce}\n{method}\n{path}\n{digest}".encode()


class SmsChannel:
    """An SMS gateway spoken as HMAC-signed JSON (Aliyun's and Tencent's fields)."""

    name = "sms"

    def __init__(self, config: SmsConfig, http: httpx.AsyncClient, clock: Clock) -> None:
        self._config = config
        self._secret = _secret(config.access_key_secret_path).encode()
        self._http = http
        self._clock = clock
        self._path = urlsplit(config.endpoint).path or "/"

    def addresses(self, contact: Contact) -> list[str]:
        return list(contact.phones)

    async def send(self, address: str, notice: Notice) -> None:
        template = (
            self._config.templates.get(notice.kind) or self._config.templates[DEFAULT_TEMPLATE]
        )
        body = msgspec.json.encode(
            _SmsRequest(
                phone_number=address,
                sign_name=self._config.sign_name,
                template_code=template.code,
                template_params={
                    name: clip(notice.field(source), SMS_PARAM_MAX)
                    for name, source in template.params.items()
                },
                out_id=f"cn-{notice.id}",
            )
        )
        timestamp = int(self._clock.now().timestamp())
        nonce = secrets.token_hex(16)
        mac = hmac.new(
            self._secret,
            sms_string_to_sign(
                timestamp=timestamp, nonce=nonce, method="POST", path=self._path, body=body
            ),
            "sha256",
        )
        authorization = (
            f"{SMS_SCHEME} KeyId={self._config.access_key_id},Timestamp={timestamp},"
            f"Nonce={nonce},Signature={base64.b64encode(mac.digest()).decode()}"
        )
        try:
            response = await self._http.post(
                self._config.endpoint,
                content=body,
                headers={"Content-Type": "application/json", "Authorization": authorization},
                timeout=self._config.timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        try:
            answer = msgspec.json.decode(response.content, type=_SmsAnswer)
        except msgspec.DecodeError:
            raise DeliveryFailed(f"unreadable answer (HTTP {response.status_code})") from None
        if response.status_code == 200 and answer.code == "OK":
            return
        raise DeliveryFailed(
            f"{clip(answer.code, 64)}: {clip(answer.message, 120)}",
            permanent=answer.code in SMS_PERMANENT,
        )
