"""`parking tariff check` and `parking tariff quote`."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from parking.tariffs.cli import tariff

SUIZHOU = {
    "id": "suizhou-zone1",
    "name": "随州 一类区域 路内",
    "currency": "CNY",
    "timezone": "Asia/Shanghai",
    "grace": {"minutes": 30, "deductible": False},
    "bands": [
        {
            "name": "all-day",
            "from": "00:00",
            "to": "00:00",
            "tiers": [
                {"after_minutes": 0, "unit_minutes": 60, "unit_fen": 300},
                {"after_minutes": 60, "unit_minutes": 60, "unit_fen": 200},
            ],
        }
    ],
    "cap": {"fen": 2000, "cycle": "rolling_24h"},
    "nev": {"grace_minutes": 120, "grace_deductible": False, "percent": 50},
}


@pytest.fixture
def suizhou(tmp_path: Path) -> Path:
    path = tmp_path / "suizhou.json"
    path.write_text(json.dumps(SUIZHOU, ensure_ascii=False), encoding="utf-8")
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(tariff, list(args))
    return result.exit_code, result.output


def test_check_accepts_a_valid_tariff_and_summarises_it(suizhou: Path) -> None:
    code, output = run("check", str(suizhou))
    assert code == 0
    assert output.startswith("ok: suizhou-zone1 (随州 一类区域 路内)")
    assert "cap: 20.00 per rolling_24h" in output


def test_check_names_the_offending_field(tmp_path: Path) -> None:
    document = json.loads(json.dumps(SUIZHOU))
    document["bands"][0]["tiers"][1]["unit_minutes"] = 0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    code, output = run("check", str(path))
    assert code != 0
    assert "bands[0].tiers[1].unit_minutes: must be > 0" in output


def test_quote_prints_the_itemised_quote_as_json(suizhou: Path) -> None:
    code, output = run(
        "quote",
        str(suizhou),
        "--entry",
        "2026-11-27T10:00:00+08:00",
        "--exit",
        "2026-11-27T11:01:00+08:00",
    )
    assert code == 0
    document = json.loads(output)
    assert document["total_fen"] == 500
    assert [charge["fen"] for charge in document["charges"]] == [300, 200]


def test_quote_prices_a_new_energy_vehicle(suizhou: Path) -> None:
    code, output = run(
        "quote",
        str(suizhou),
        "--entry",
        "2026-11-27T02:00:00Z",
        "--exit",
        "2026-11-27T05:00:00Z",
        "--nev",
    )
    assert code == 0
    assert json.loads(output)["total_fen"] == 350


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("2026-11-27T10:00:00", "has no UTC offset"),
        ("2026-11-27 10:00", "has no UTC offset"),
        ("tomorrow", "is not an RFC 3339 time"),
        ("2026-11-27T10:00+08:00", "is not an RFC 3339 time"),
    ],
)
def test_quote_refuses_times_that_are_not_rfc3339_instants(
    suizhou: Path, entry: str, message: str
) -> None:
    code, output = run(
        "quote", str(suizhou), "--entry", entry, "--exit", "2026-11-27T11:00:00+08:00"
    )
    assert code != 0
    assert message in output


def test_quote_refuses_an_exit_not_after_entry(suizhou: Path) -> None:
    code, output = run(
        "quote",
        str(suizhou),
        "--entry",
        "2026-11-27T10:00:00+08:00",
        "--exit",
        "2026-11-27T02:00:00Z",
    )
    assert code != 0
    assert "is not after entry" in output
