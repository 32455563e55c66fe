"""Every environment variable the platform reads is a field of ``Settings`` and a row of
the README's table (``config.VARIABLES``); nothing else in ``src/`` reads the environment."""

from __future__ import annotations

import re
from pathlib import Path

from parking import config
from parking.workers.gateway import SESSION_EXPIRY_S
from parking.workers.persister import MAX_DELIVERIES, RECLAIM_IDLE_MS

SRC = Path(__file__).resolve().parents[2] / "src" / "parking"
#: (the sandbox payment provider, a counterpart in ``counterparts/``, hands its own
#: settings to its app process through PARKING_SANDBOX_PAY_SETTINGS: not the platform's)
NOT_SETTINGS: set[str] = set()


def test_every_variable_named_in_the_source_is_in_the_settings_table() -> None:
    named = {
        name
        for path in SRC.rglob("*.py")
        for name in re.findall(r"\bPARKING_[A-Z_]+\b", path.read_text(encoding="utf-8"))
    }
    table = {name for name, _, _ in config.VARIABLES}
    assert named - NOT_SETTINGS <= table, sorted(named - NOT_SETTINGS - table)


def test_only_the_settings_module_reads_the_environment() -> None:
    # ``{**os.environ, ...}`` passes the environment on to a server the stack starts
    passed_on = re.compile(r"\{\*\*os\.environ")
    readers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if re.search(
            r"os\.environ|os\.getenv|envvar=",
            passed_on.sub("", path.read_text(encoding="utf-8")),
        )
    )
    assert readers == ["config.py"]


def test_defaults_of_the_worker_settings_are_the_workers_own() -> None:
    settings = config.load({"PARKING_STACK_DIR": "/nonexistent-stack"})
    assert settings.gateway_session_expiry == SESSION_EXPIRY_S
    assert settings.persister_reclaim_idle_ms == RECLAIM_IDLE_MS
    assert settings.persister_max_deliveries == MAX_DELIVERIES
    assert settings.gateway_crash_after is None
    assert settings.run_only == ()
    assert settings.wechatpay_config == Path("/nonexistent-stack/sandbox-pay/merchant.json")
    assert settings.alipay_config == Path("/nonexistent-stack/sandbox-pay/alipay.json")
    assert settings.fee_rates == (("wechat", 6000), ("alipay", 6000))
    assert settings.reconcile_at == (10, 0)
    assert settings.notify_base_url == "http://127.0.0.1:8000"


def test_worker_settings_are_read_from_their_variables() -> None:
    settings = config.load(
        {
            "PARKING_STACK_DIR": "/nonexistent-stack",
            "PARKING_GATEWAY_CLIENT_ID": "gateway-7",
            "PARKING_GATEWAY_SESSION_EXPIRY": "60",
            "PARKING_PERSISTER_CONSUMER": "persister-3",
            "PARKING_PERSISTER_CRASH_AFTER": "500",
            "PARKING_RUN_ONLY": "api,sandbox-pay",
            "PARKING_ALIPAY_CONFIG": "/etc/alipay.json",
            "PARKING_NOTIFY_BASE_URL": "https://pay.example.test",
        }
    )
    assert settings.gateway_client_id == "gateway-7"
    assert settings.gateway_session_expiry == 60
    assert settings.persister_consumer == "persister-3"
    assert settings.persister_crash_after == 500
    assert settings.run_only == ("api", "sandbox-pay")
    assert settings.alipay_config == Path("/etc/alipay.json")
    assert settings.notify_base_url == "https://pay.example.test"
