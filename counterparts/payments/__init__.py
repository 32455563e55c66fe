"""The sandbox payment provider: a local process that speaks WeChat Pay API v3.

``parking sandbox-pay`` serves the v3 endpoints the platform's WeChat adapter
uses, with keys it generates on first start under ``{stack_dir}/sandbox-pay/``
(and a ``merchant.json`` the adapter loads), plus ``/sandbox/...`` endpoints a
test or a driver uses to pay, fail, authorise contactless payment, move the
clock and make the provider misbehave.

State lives in a SQLite file beside the keys, so a restart keeps orders,
refunds, mandates and undelivered notifications (P7 drills restart it on
purpose). Roles: ``model`` (Structs), ``logic`` (pure decisions), ``store``
(SQLite), ``keys`` (key files), ``service`` (use cases), ``notifier`` (the
delivery loop), ``app`` (HTTP), ``cli`` (the command).
"""
