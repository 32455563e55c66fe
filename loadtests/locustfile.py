"""Locust scenarios against a running platform (`make run`), loopback only.

    uv run --group load locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \
        --headless -u 50 -r 10 -t 60s

Tokens are minted with the stack's key (`parking tokens issue`), so run it from
a shell where `eval "$(uv run parking stack env)"` was done. For request-rate
ceilings use wrk (see docs/performance.md): locust on the same two cores
measures itself as much as the server.
"""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from locust import FastHttpUser, between, task

SHANGHAI = timezone(timedelta(hours=8))


def _token(role: str, subject: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "parking",
            "tokens",
            "issue",
            "--role",
            role,
            "--subject",
            subject,
            "--ttl",
            "7200",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class Driver(FastHttpUser):
    """A driver checking what a stay at the walkthrough lot will cost."""

    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        # One subject per simulated driver: quotes are rate limited per caller
        # (PARKING_QUOTE_LIMIT_PER_MINUTE), as a real driver's would be.
        subject = f"load-driver-{random.getrandbits(32):08x}"
        self.headers = {"Authorization": f"Bearer {_token('driver', subject)}"}

    @task(5)
    def quote_at_lot(self) -> None:
        entry = datetime(
            2026, 11, 27, random.randint(6, 20), random.randint(0, 59), tzinfo=SHANGHAI
        )
        exit_ = entry + timedelta(minutes=random.randint(5, 600))
        self.client.post(
            "/v1/tariffs/quote",
            json={
                "lot_id": "GZ-DEMO-01",
                "plate": f"赣B{random.randint(10000, 99999)}",
                "entry": entry.isoformat(),
                "exit": exit_.isoformat(),
            },
            headers=self.headers,
            name="quote: lot + plate",
        )

    @task(1)
    def ready(self) -> None:
        self.client.get("/readyz", name="readyz")
