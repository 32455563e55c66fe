"""Structured JSON logs for every process (ours and the libraries' stdlib loggers)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

#: a plate anywhere in a log line: a Chinese character (the province), the authority
#: letter, the serial (the plates package's layouts, loosely: a log is not validated)
_PLATE: Final = re.compile("([\u4e00-\u9fff][A-Z])([0-9A-Z]{3,6})([0-9A-Z挂学警港澳领使])")
#: embassy and armed-police plates (使014578, WJ赣12345); "WJ" only where a word starts:
#: inside an id (a ULID is 26 letters and digits, 01M8D4TG00G2JKQ2WJ3T0Z5KW1) it is not one
_RARE_PLATE: Final = re.compile(
    "(使|(?<![0-9A-Za-z])WJ)([0-9A-Z\u4e00-\u9fff]{3,6})([0-9A-Z消边通森金警电使])"
)
#: a mainland mobile number, bare or +86, not inside a longer run of letters/digits
_PHONE: Final = re.compile(
    r"(?<![0-9A-Za-z])(\+?86)?(1[3-9][0-9])([0-9]{4})([0-9]{4})(?![0-9A-Za-z])"
)


def mask_personal(text: str) -> str:
    """Plates and phone numbers in ``text`` masked: ``赣B1***5``, ``138****5678``."""
    text = _PLATE.sub(lambda m: f"{m[1]}{m[2][0]}***{m[3]}", text)
    text = _RARE_PLATE.sub(lambda m: f"{m[1]}{m[2][0]}***{m[3]}", text)
    return _PHONE.sub(lambda m: f"{m[1] or ''}{m[2]}****{m[4]}", text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_personal(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def scrub_personal(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A plate is personal data, a phone too: no log line carries either unmasked,
    whatever logged it (our events, their fields, exceptions, libraries' messages)."""
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value)
    return event_dict


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", fmt: str = "json", *, process: str) -> None:
    """One JSON object per line on stderr, each carrying ``process``; idempotent."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    # after the stdlib record is turned into an event (its message formatted), before
    # it is rendered: every line, ours and the libraries', is scrubbed
    scrubbed = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, scrub_personal]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[*scrubbed, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # httpx logs every request's full URL at INFO; some provider calls carry a secret
    # or a one-time code in the query (WeChat 网页授权's token exchange): never logged.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.bind_contextvars(process=process)
