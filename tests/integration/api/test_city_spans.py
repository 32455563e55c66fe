"""A city series over a span of centuries is refused before a bucket is made: found by
the schema fuzzer, which asked for every hour from the year 431 to 5906 and watched
the process grow by gigabytes."""

from __future__ import annotations

from collections.abc import Callable

from kits import bearer
from litestar.testing import AsyncTestClient

from parking.auth.model import Role


async def test_a_series_longer_than_the_points_allowed_is_a_400_at_once(
    api: AsyncTestClient, token_for: Callable[..., str]
) -> None:
    city = bearer(token_for(Role.CITY, "city-ops"))
    for step, start, end in (
        ("hour", "0431-05-20T08:51:52Z", "5906-09-20T08:51:52Z"),
        ("day", "0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),
        ("hour", "2026-01-01T00:00:00Z", "2026-03-15T00:00:00Z"),
    ):
        got = await api.get(
            "/v1/city/timeseries",
            params={"metric": "entries", "step": step, "from": start, "to": end},
            headers=city,
        )
        assert got.status_code == 400, (step, start, end, got.text)
        assert "at most" in got.json()["detail"]
    fine = await api.get(
        "/v1/city/timeseries",
        params={
            "metric": "entries",
            "step": "hour",
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-31T00:00:00Z",
        },
        headers=city,
    )
    assert fine.status_code == 200, fine.text
    assert len(fine.json()["points"]) == 30 * 24
