"""The sandbox's cashier page: what WeChat's ``h5_url`` opens (微信支付 H5, MWEB).

In production the ``h5_url`` (``.../checkmweb?prepay_id=...&package=...``) hands the
phone over to the WeChat app, the payer confirms there, and WeChat sends the browser
back to the ``redirect_url`` the merchant appended. On ``make run`` this page stands
in for the WeChat app: it shows the merchant, what is paid and the amount; "确认支付"
pays the order exactly as ``POST /sandbox/orders/{no}/pay`` does (the signed
notification goes to the merchant's ``notify_url``) and sends the browser back;
"取消" goes back unpaid. Pure: it renders HTML and checks the return address.
"""

from __future__ import annotations

from html import escape
from typing import Final
from urllib.parse import urlsplit

from counterparts.payments.model import ApiError, Order
from parking.payments.wire import wechat as wire

CASHIER_PATH: Final = "/sandbox/h5/checkmweb"
PAY_PATH: Final = "/sandbox/h5/pay"

_STYLE: Final = """
body{margin:0;font:16px/1.5 system-ui,"PingFang SC","WenQuanYi Micro Hei",sans-serif;
background:#ededed;color:#191919}
main{max-width:420px;margin:0 auto;padding:24px 16px}
.top{text-align:center;color:#07c160;font-weight:600;margin-bottom:24px}
.card{background:#fff;border-radius:8px;padding:24px 16px;text-align:center}
.merchant{color:#555;margin:0}.what{color:#888;font-size:14px;margin:4px 0 16px}
.amount{font-size:40px;font-weight:600;margin:8px 0 24px}
button{width:100%;border:0;border-radius:8px;background:#07c160;color:#fff;font-size:18px;padding:12px}
a.cancel{display:block;margin-top:16px;color:#576b95;text-decoration:none}
.note{font-size:12px;color:#999;text-align:center;margin-top:24px}
"""


def return_address(redirect_url: str | None) -> str | None:
    """The merchant's ``redirect_url``, if it is an http(s) address (else ``ApiError``)."""
    if not redirect_url:
        return None
    parts = urlsplit(redirect_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(400, "PARAM_ERROR", "redirect_url 必须是 http(s) 地址")
    return redirect_url


def _yuan(fen: int) -> str:
    return f"¥{fen // 100}.{fen % 100:02d}"


def page(order: Order, prepay_id: str, redirect_url: str | None) -> str:
    """The cashier for ``order``: confirm, or (already paid or closed) say so."""
    back = "" if redirect_url is None else escape(redirect_url, quote=True)
    link = f'<a class="cancel" href="{back}">返回商户页面</a>' if back else ""
    if order.state is wire.TradeState.NOTPAY:
        action = f"""<form method="post" action="{PAY_PATH}">
<input type="hidden" name="prepay_id" value="{escape(prepay_id, quote=True)}">
<input type="hidden" name="redirect_url" value="{back}">
<button id="confirm" type="submit">确认支付</button></form>
{f'<a id="cancel" class="cancel" href="{back}">取消</a>' if back else ""}"""
    elif order.state in wire.PAID_TRADE_STATES:
        action = f'<p id="done">该订单已支付</p>{link}'
    else:
        action = f'<p id="done">该订单已关闭，无法支付</p>{link}'
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>微信支付</title><style>{_STYLE}</style></head>
<body><main>
<p class="top">微信支付 · 沙箱</p>
<section class="card">
<p class="merchant">畅泊虔城</p>
<p class="what">{escape(order.description)}</p>
<p id="amount" class="amount">{_yuan(order.amount_fen)}</p>
{action}
</section>
<p class="note">本页面由支付沙箱提供，代替微信客户端完成支付，不产生真实扣款。</p>
</main></body></html>
"""


def sorry(message: str) -> str:
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>微信支付</title><style>{_STYLE}</style></head>
<body><main><p class="top">微信支付 · 沙箱</p>
<section class="card"><p id="done">{escape(message)}</p></section></main></body></html>
"""


#: The cookie that makes this browser one WeChat user for the sandbox's 网页授权.
WECHAT_USER_COOKIE: Final = "sandbox_wechat_openid"
_PLATE_COLORS: Final = {"BLUE": "蓝牌", "GREEN": "绿牌", "YELLOW": "黄牌", "WHITE": "白牌"}


def mandate_page(plate: str, plate_color: str, action: str, fields: dict[str, str]) -> str:
    """The stand-in for the 微信支付分停车服务 mini program: the driver agrees that the
    merchant deducts parking fees for ``plate`` after each exit."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k, quote=True)}" value="{escape(v, quote=True)}">'
        for k, v in fields.items()
    )
    back = fields.get("return_url", "")
    cancel = (
        f'<a id="cancel" class="cancel" href="{escape(back, quote=True)}">暂不开通</a>'
        if back
        else ""
    )
    colour = _PLATE_COLORS.get(plate_color, plate_color)
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>微信支付分停车服务</title><style>{_STYLE}</style></head>
<body><main>
<p class="top">微信支付分 · 停车服务 · 沙箱</p>
<section class="card">
<p class="merchant">畅泊虔城 申请为以下车辆开通无感支付</p>
<p id="plate" class="amount">{escape(plate)}</p>
<p class="what">{escape(colour)} · 离场后自动从微信支付扣除停车费</p>
<form method="post" action="{escape(action, quote=True)}">{hidden}
<button id="confirm" type="submit">同意并开通</button></form>
{cancel}
</section>
<p class="note">本页面由支付沙箱提供，代替微信支付分停车服务小程序完成授权。</p>
</main></body></html>
"""
