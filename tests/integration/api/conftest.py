from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from parking import config
from parking.api.app import create_app
from parking.config import Settings


@pytest.fixture
async def api(settings: Settings, city_db_url: str) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """The real app (real PostgreSQL, Redis, broker) over a fresh copy of the seeded city."""
    app_settings = config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url})
    async with AsyncTestClient(app=create_app(app_settings)) as client:
        yield client
