"""No log line carries a plate or a phone number unmasked (issue 19, point 3): the
processor every process's logging runs scrubs our events, their fields, exceptions and
the libraries' messages alike."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from parking.observability import configure_logging, mask_personal

PLATES = ("赣B12345", "粤BD12345", "赣B7P123", "使014578", "WJ赣12345", "粤Z1234港")
PHONES = ("13812345678", "+8613812345678")


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("赣B12345", "赣B1***5"),
        ("plate=粤BD12345;", "plate=粤BD***5;"),
        ("车牌赣B7P123停车1小时", "车牌赣B7***3停车1小时"),
        ("13812345678", "138****5678"),
        ("+8613812345678", "+86138****5678"),
        ("使014578", "使0***8"),
        ("plate=WJ赣12345", "plate=WJ赣***5"),
        # not personal: ids, times, places, amounts
        ("cs-01M8Z91CM0G0D4EPXNBHVNQ4BV", "cs-01M8Z91CM0G0D4EPXNBHVNQ4BV"),
        # "WJ" inside an id: the ULID a CI run's Redis MONITOR log carried
        (
            '"SET" "{p4}:ready" "01M8D4TG00G2JKQ2WJ3T0Z5KW1"',
            '"SET" "{p4}:ready" "01M8D4TG00G2JKQ2WJ3T0Z5KW1"',
        ),
        ("2026-12-04T10:00:00+08:00", "2026-12-04T10:00:00+08:00"),
        ("赣州市章贡区文清路88号", "赣州市章贡区文清路88号"),
        ("fee 123456789012 fen", "fee 123456789012 fen"),
    ],
)
def test_mask(raw: str, masked: str) -> None:
    assert mask_personal(raw) == masked


def test_every_log_line_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json", process="test")
    log = structlog.get_logger("parking.test")
    log.info("plate_read", plate=PLATES[0], extra={"phone": PHONES[0], "list": [PLATES[1]]})
    log.warning(f"driver {PHONES[1]} asked about {PLATES[2]}")
    try:
        raise ValueError(f"no session for {PLATES[3]} / {PLATES[4]} / {PLATES[5]}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("some.library").warning("GET /v1/me/vehicles/%s by %s", PLATES[0], PHONES[0])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 4
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    for secret in (*PLATES, *PHONES):
        assert secret not in text, secret
    assert lines[0]["plate"] == "赣B1***5"
    assert lines[0]["extra"] == {"phone": "138****5678", "list": ["粤BD***5"]}
    assert "粤Z1***港" in lines[2]["exception"]
    assert lines[3]["event"] == "GET /v1/me/vehicles/赣B1***5 by 138****5678"
