"""Provider adapters: each implements ``parking.payments.port`` over one provider's API.

Only ``api/`` and ``workers/`` construct them (through ``build_providers``); they own
no database access.
"""

from __future__ import annotations

import httpx
import structlog

from parking.clock import Clock
from parking.config import Settings
from parking.payments.port import PaymentProvider
from parking.payments.providers import alipay, wechat

log = structlog.get_logger("parking.payments")


def build_providers(
    settings: Settings, *, http: httpx.AsyncClient, clock: Clock
) -> dict[str, PaymentProvider]:
    """The configured provider adapters by name, for the API lifespan and the sweeper process.

    This (with the API's lifespan that calls it) is where adapters are
    constructed: WeChat Pay from ``settings.wechatpay_config`` (``$PARKING_WECHATPAY_CONFIG``,
    else the local sandbox's ``merchant.json``); Alipay from ``settings.alipay_config``
    (``$PARKING_ALIPAY_CONFIG``, else the local sandbox's ``alipay.json``).
    A missing file leaves the provider out (logged); a broken one raises.
    """
    providers: dict[str, PaymentProvider] = {}
    path = settings.wechatpay_config
    if path.exists():
        adapter = wechat.WechatPayProvider.from_config(
            wechat.load_config(path), http=http, clock=clock
        )
        providers[adapter.name] = adapter
    else:
        log.warning("no WeChat Pay configuration; start the sandbox or set it", path=str(path))
    if settings.alipay_config is not None and settings.alipay_config.exists():
        ali = alipay.AlipayProvider.from_config(
            alipay.load_config(settings.alipay_config), http=http, clock=clock
        )
        providers[ali.name] = ali
    else:
        log.info("no Alipay configuration; Alipay is off", path=str(settings.alipay_config))
    return providers
