from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from parking.config import Settings
from parking.stack import service as stack


def test_stack_env_prints_exports_that_psql_and_redis_cli_accept(settings: Settings) -> None:
    lines = stack.env_lines(settings)
    assert all(line.startswith("export ") for line in lines)
    script = "\n".join(lines) + (
        "\npsql -XAtc 'SELECT 1'"
        '\nredis-cli -p "$PARKING_REDIS_PORT" PING'
        '\nmosquitto_sub -h "$MQTT_HOST" -p "$MQTT_PORT" -u "$MQTT_USER" -P "$MQTT_PASSWORD"'
        " -t '$SYS/broker/version' -C 1 -W 5"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["1", "PONG"]
    assert "mosquitto version 2." in out.stdout


def test_stack_up_is_idempotent_and_status_reports_every_server(settings: Settings) -> None:
    stack.up(settings, log=lambda _: None)
    status = stack.status(settings)
    assert status["postgres"] == {"running": True, "port": settings.pg_port}
    assert status["redis"] == {"running": True, "port": settings.redis_port}
    assert status["mosquitto"] == {"running": True, "port": settings.mqtt_port}


def test_broker_refuses_anonymous_and_wrong_password(settings: Settings) -> None:
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(settings.mqtt_port), "-t", "x", "-m", "1"]
    anonymous = subprocess.run(base, capture_output=True, text=True, check=False, timeout=10)
    assert anonymous.returncode != 0
    wrong = subprocess.run(
        [*base, "-u", settings.mqtt_username, "-P", "not-the-password"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert wrong.returncode != 0
    assert "not authorised" in (wrong.stderr + wrong.stdout).lower()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def test_parking_run_serves_readyz_and_stops_cleanly_on_ctrl_c(settings: Settings) -> None:
    port = settings.api_port + 1
    # Gateways and simulated devices would leave persistent sessions and retained
    # messages on the shared test broker; the other tests start their own.
    env = {**os.environ, "PARKING_API_PORT": str(port), "PARKING_RUN_ONLY": "api,sandbox-pay"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parking", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.3)
            status = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200
        sandbox = f"http://127.0.0.1:{settings.sandbox_port}/sandbox/healthz"
        while time.monotonic() < deadline and _get(sandbox) != 200:
            time.sleep(0.3)
        assert _get(sandbox) == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert f"http://127.0.0.1:{port}/readyz" in text
    assert "[run] stopped" in text
    assert _get(f"http://127.0.0.1:{port}/healthz") == 0


def test_the_redis_cluster_has_three_masters_each_with_a_replica_behind_the_password(
    cluster_settings: Settings,
) -> None:
    from parking.config import read_secrets
    from parking.stack import binaries
    from parking.stack.cluster import RedisCluster

    nodes = RedisCluster(cluster_settings, binaries.ensure(log=lambda _: None), lambda _: None)
    secret = read_secrets(cluster_settings.stack_dir)
    assert secret is not None
    assert nodes.running()
    masters = nodes.masters(secret.redis)
    assert len(masters) == 3
    assert all(nodes.replica_of(secret.redis, port) is not None for port in masters)
    assert stack.status(cluster_settings)["redis_cluster"] == {
        "running": True,
        "ports": nodes.ports(),
    }
    for port in nodes.ports():
        info = subprocess.run(
            ["redis-cli", "-p", str(port), "CLUSTER", "INFO"],
            env={**os.environ, "REDISCLI_AUTH": secret.redis},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
        anonymous = subprocess.run(
            ["redis-cli", "-p", str(port), "PING"],
            env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr
