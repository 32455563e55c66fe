"""The counterparts: the other side of the platform's contracts, run locally and in tests.

``counterparts.devices`` are simulated gates, sensors and signs speaking
contracts/mqtt.md from the devices' side; ``counterparts.payments`` is the sandbox
payment provider speaking WeChat Pay v3 from the provider's side. The platform
(``parking``) never imports them, except its command line, which offers their
commands, and the local supervisor (``parking run``), which starts them.
"""
