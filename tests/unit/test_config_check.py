"""`parking config check`: one line per development choice, none on the production example;
and the systemd units cover every process `parking run` supervises in production."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from click.testing import CliRunner

from parking.cli import main
from parking.configcheck import problems, read_env_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "production.env.example"
UNITS = ROOT / "deploy" / "systemd"


def _filled_example() -> dict[str, str]:
    """The example with each placeholder replaced, as the runbook says to."""
    return {
        key: value.replace("CHANGE-ME", f"k{n:02d}-" + "x7Qp2mZr9tLw4vBn8cYd3fHs6jKa1eUg")
        for n, (key, value) in enumerate(read_env_file(EXAMPLE).items())
    }


def test_the_local_defaults_fail_with_one_line_per_problem(tmp_path: Path) -> None:
    assert problems({"PARKING_STACK_DIR": str(tmp_path)}) == [
        "PARKING_JWT_KEY is unset: the local stack's generated value would be used",
        "PARKING_MQTT_PASSWORD is unset: the local stack's generated value would be used",
        "PARKING_DATABASE_URL is unset: the local stack's generated value would be used",
        "PARKING_OWNER_DATABASE_URL is unset: the local stack's generated value would be used",
        "PARKING_REDIS_URL is unset: the local stack's generated value would be used",
        "PARKING_NOTIFIER=local writes login codes to files: set the SMS notifier",
        "PARKING_WECHATPAY_CONFIG is the sandbox provider's: set the merchant's config",
        "PARKING_ALIPAY_CONFIG is the sandbox's: set the app's config "
        "(or a path that does not exist: no Alipay)",
        "PARKING_NOTIFY_BASE_URL=http://127.0.0.1:8000 is not a public https address",
        "PARKING_PUBLIC_BASE_URL=http://127.0.0.1:8000 is not a public https address",
        "PARKING_BACKUP_DIR is inside the stack directory: keep backups on another disk",
    ]


def test_the_command_prints_the_lines_and_exits_1_on_defaults(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "check"], env={"PARKING_STACK_DIR": str(tmp_path)})
    assert result.exit_code == 1
    assert "PARKING_NOTIFIER=local writes login codes to files: set the SMS notifier" in (
        result.output.splitlines()
    )


def test_the_production_example_as_shipped_fails_only_on_its_placeholders() -> None:
    assert problems(read_env_file(EXAMPLE)) == [
        "PARKING_JWT_KEY still holds the example's placeholder",
        "PARKING_MQTT_PASSWORD still holds the example's placeholder",
        "PARKING_DATABASE_URL still holds the example's placeholder",
        "PARKING_OWNER_DATABASE_URL still holds the example's placeholder",
        "PARKING_REDIS_URL still holds the example's placeholder",
        "PARKING_JWT_KEY is shorter than 32 characters",
    ]


def test_the_production_example_with_its_secrets_filled_in_passes(tmp_path: Path) -> None:
    filled = tmp_path / "changbo.env"
    filled.write_text("\n".join(f"{k}={v}" for k, v in _filled_example().items()))
    result = CliRunner().invoke(main, ["config", "check", "--env-file", str(filled)])
    assert result.exit_code == 0, result.output
    assert problems(_filled_example()) == []


def test_a_public_metrics_network_the_sandbox_and_fault_injection_are_refused() -> None:
    env = {
        **_filled_example(),
        "PARKING_METRICS_ALLOW": "0.0.0.0/0",
        "PARKING_GATEWAY_CRASH_AFTER": "10",
        "PARKING_DATABASE_URL": "postgresql://parking:k-long-enough-password@db.x:5432/parking",
        "PARKING_LOG_FORMAT": "console",
    }
    found = problems(env)
    assert "PARKING_METRICS_ALLOW includes 0.0.0.0/0: /metrics would be public" in found
    assert "PARKING_GATEWAY_CRASH_AFTER is set: fault injection for tests only" in found
    assert any("connects as the schema owner" in line for line in found)
    assert any(
        line.startswith("PARKING_DATABASE_URL reaches db.x without sslmode") for line in found
    )
    assert any(line.startswith("PARKING_LOG_FORMAT must be json") for line in found)


def test_every_production_child_of_parking_run_has_a_systemd_unit_that_restarts() -> None:
    run = (ROOT / "src" / "parking" / "workers" / "run.py").read_text()
    commands = {
        " ".join(re.findall(r'"([a-z-]+)"', m)) for m in re.findall(r"\[\*me, ([^\]]+)\]", run)
    }
    # Dev-only children: the sandbox provider and the simulated devices.
    local_only = {"sandbox-pay", "simulate", "cameras simulate"}
    wanted = {c for c in commands if not any(c.startswith(x) for x in local_only)}
    started = {}
    for path in UNITS.glob("*.service"):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(path)
        for line in unit["Service"]["ExecStart"].splitlines():
            if "/bin/parking " in line:
                started[line.split("/bin/parking ", 1)[1].strip()] = unit["Service"]
    assert wanted <= set(started), sorted(wanted - set(started))
    for command in wanted:
        assert started[command].get("Restart") == "always", command
