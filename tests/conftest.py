"""Test harness: the real servers of the test stack, started when the session begins.

The test stack has its own directory and ports (see the Makefile), so tests
run beside `make run`. Each test that needs PostgreSQL gets a fresh database
cloned from a migrated template, so tests never see each other's rows. The
harness migrates and creates databases as the schema owner; tests and the
processes they start connect as the app role, as the platform does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from kits import Client, Login, flushed_redis, login_with
from litestar.testing import AsyncTestClient

from parking import config
from parking.api.app import create_app
from parking.config import Settings
from parking.db import migrate as migrations
from parking.stack import service as stack

# The chaos table of the reliability matrix's fault tests (`make chaos`).
pytest_plugins = ["chaoskit", "gcwatch"]

# Settings are read when fixtures call config.load(), so setting the defaults
# here is early enough: pytest run directly also lands on the test stack.
for _key, _value in {
    "PARKING_STACK_DIR": ".parking/test",
    "PARKING_PG_PORT": "25442",
    "PARKING_REDIS_PORT": "26389",
    "PARKING_MQTT_PORT": "21893",
    "PARKING_API_PORT": "8010",
    "PARKING_SANDBOX_PORT": "8020",
    "PARKING_LOG_FORMAT": "console",
    # a city stream ends soon, so a test that reads a route's whole answer gets one
    "PARKING_STREAM_MAX_SECONDS": "1",
}.items():
    os.environ.setdefault(_key, _value)

TEMPLATE_DB = "parking_template"


def database_url(settings: Settings, name: str) -> str:
    """Database ``name`` as the platform's processes reach it (the app role)."""
    parts = urlsplit(settings.database_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def owner_url(settings: Settings, name: str) -> str:
    """Database ``name`` as the schema owner (migrations, CREATE DATABASE)."""
    parts = urlsplit(settings.owner_database_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def settings() -> Settings:
    stack.up(config.load())
    return config.load()


async def _admin(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(owner_url(settings, "postgres"))


@pytest.fixture(scope="session")
async def template_db(settings: Settings) -> str:
    """A database with every migration applied, rebuilt once per test session."""
    admin = await _admin(settings)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(owner_url(settings, TEMPLATE_DB))
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    return TEMPLATE_DB


@pytest.fixture(scope="session")
async def city_template_db(settings: Settings, template_db: str) -> str:
    """A migrated database holding the seeded city, built once per test session."""
    from parking.seed import service as seeding

    name = "parking_city_template"
    admin = await _admin(settings)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url(settings, name))
    try:
        await seeding.seed(conn, city_seed=settings.city_seed, progress=lambda _: None)
    finally:
        await conn.close()
    return name


@pytest.fixture
async def city_db_url(settings: Settings, city_template_db: str) -> AsyncIterator[str]:
    """URL of a fresh database holding the seeded city, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await _admin(settings)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {city_template_db}")
    finally:
        await admin.close()
    yield database_url(settings, name)
    # A connection of its own for the drop: the test may have restarted PostgreSQL.
    admin = await _admin(settings)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def city_db(city_db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(city_db_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def empty_db_url(settings: Settings) -> AsyncIterator[str]:
    """Owner's URL of a new, empty database (no migrations), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await _admin(settings)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield owner_url(settings, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db_url(settings: Settings, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh migrated database, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await _admin(settings)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
        yield database_url(settings, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh migrated database as the app role, like the platform's."""
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def owner_db(settings: Settings, db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The same database as ``db``, connected as the schema owner."""
    conn = await asyncpg.connect(owner_url(settings, urlsplit(db_url).path.lstrip("/")))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def cluster_settings(settings: Settings) -> Settings:
    """The test settings with every Redis client on the stack's Redis Cluster (three
    masters, three replicas; `make test` starts it, and so does this fixture)."""
    on_cluster = config.load({**os.environ, "PARKING_REDIS_CLUSTER": "1"})
    stack.up(on_cluster, redis_cluster=True)
    return on_cluster


@pytest.fixture
async def cluster_client(cluster_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A client of the stack's Redis Cluster, every master flushed."""
    async with flushed_redis(cluster_settings.redis_url, cluster=True) as client:
        yield client


@pytest.fixture
def settings_for_db(settings: Settings, db_url: str) -> Iterator[Settings]:
    """The test settings pointing at the fresh database of this test."""
    return config.load({**os.environ, "PARKING_DATABASE_URL": db_url})


@pytest.fixture
def token_for(settings: Settings) -> Callable[..., str]:
    """``token_for(Role.OPERATOR, "alice")``: a valid access token for the test stack's key.

    An operator works for the seeded demo lot's company unless ``company`` says otherwise."""
    from datetime import UTC, datetime, timedelta

    from parking.auth import tokens
    from parking.auth.model import FIELD_ROLES, Role
    from parking.seed.city import DEMO_COMPANY

    def make(
        role: Role, subject: str = "tester", company: str | None = None, scope: str | None = None
    ) -> str:
        if role is Role.OPERATOR and company is None:
            company = DEMO_COMPANY
        if role in FIELD_ROLES and scope is None:
            scope = {"lot_staff": "GZ-DEMO-01", "district_team": "ZG"}.get(
                role.value, "traffic_police"
            )
        return tokens.issue(
            settings.jwt_key,
            subject=subject,
            role=role,
            now=datetime.now(UTC),
            ttl=timedelta(minutes=10),
            company=company,
            scope=scope,
        )

    return make


# ------------------------------------------------------------------ the API, as most tests use it


@pytest.fixture
def app_settings(settings: Settings, city_db_url: str) -> Settings:
    """The platform's settings over a fresh copy of the seeded city."""
    return config.load({**os.environ, "PARKING_DATABASE_URL": city_db_url})


@pytest.fixture
async def api(app_settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[Client]:
    """The real app (real PostgreSQL, Redis, broker) over a fresh copy of the seeded city."""
    async with AsyncTestClient(app=create_app(app_settings)) as client:
        yield client


@pytest.fixture
def login(api: Client, redis_client: aioredis.Redis) -> Login:
    """``await login("13812345678")``: that phone's driver's access token."""
    return login_with(api, redis_client)
