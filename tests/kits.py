"""What many API tests share: the bearer header, a driver's login, a binding's id, a
free port; and a TCP relay a test can freeze or cut (a partition in front of a server).

The fixtures built on these (``app_settings``, ``api``, ``login``) are in
``tests/conftest.py``; a folder overrides one only where its app differs (a
payment sandbox, a live core).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from parking import redisclient
from parking.accounts import notifier

Client = AsyncTestClient  # type: ignore[type-arg]
#: ``await login("13812345678")``: the access token of that phone's driver
Login = Callable[[str], Awaitable[str]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def log_in(api: Any, redis_client: aioredis.Redis, phone: str) -> dict[str, Any]:
    """The token pair of the phone's driver, through the real OTP routes (the code read
    back from where the local notifier keeps it)."""
    sent = await api.post("/v1/auth/otp", json={"phone": phone})
    assert sent.status_code == 202, sent.text
    code = await notifier.latest_code(redis_client, sent.json()["phone"])
    assert code is not None
    issued = await api.post("/v1/auth/token", json={"phone": phone, "code": code})
    assert issued.status_code == 200, issued.text
    body: dict[str, Any] = issued.json()
    return body


def login_with(api: Any, redis_client: aioredis.Redis) -> Login:
    async def go(phone: str) -> str:
        token: str = (await log_in(api, redis_client, phone))["access_token"]
        return token

    return go


async def vehicle_id(api: Any, token: str, plate: str) -> str:
    """The id of the driver's binding of ``plate``, from ``GET /v1/me/vehicles``: routes
    name a binding by its id (a plate never goes in a URL)."""
    listed = await api.get("/v1/me/vehicles", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    ids = [v["id"] for v in listed.json()["items"] if v["plate"] == plate]
    assert len(ids) == 1, (plate, listed.text)
    found: str = ids[0]
    return found


def on_port(url: str, port: int) -> str:
    """``url`` (its scheme, credentials, path kept) pointing at ``port`` on its host."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TcpRelay:
    """Forwards TCP to a server (Redis, the broker); `cut` closes every connection,
    `freeze` stops relaying bytes while keeping the sockets open (a partition, not a
    crash)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self, sock: socket.socket | None = None, port: int = 0) -> None:
        """Listen on a port of its own, on ``port`` (the one a cut relay had: the
        server is back where its clients look for it), or on ``sock`` (a listening
        socket the test made)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock)
        else:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, server_w}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def drop_connections(self) -> None:
        """Close every relayed connection; new ones are still accepted."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def cut(self) -> None:
        """Stop accepting and close everything: the server is gone."""
        assert self._server is not None
        self._server.close()
        self.drop_connections()
        self._flowing.set()
        await self._server.wait_closed()


class _RelayThread:
    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def cut(self) -> None:
        self.call(self.relay.cut())

    def restart(self) -> None:
        """Listening again on the same port: the server is back."""
        self.call(self.relay.start(port=self.relay.port))

    def close(self) -> None:
        async def finish() -> None:
            if self.relay._server is not None and self.relay._server.is_serving():
                await self.relay.cut()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(finish())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


@contextlib.contextmanager
def relay_in_thread(host: str, port: int) -> Iterator[_RelayThread]:
    """A ``TcpRelay`` served by its own event loop in a thread, for clients the
    test's loop does not serve while they wait (Litestar's test client runs the app
    through a blocking portal: a relay on the test's loop would stall with it).
    ``.relay.port`` is where to connect; ``.cut()`` and ``.restart()`` from the test."""
    running = _RelayThread(TcpRelay(host, port))
    try:
        running.call(running.relay.start())
        yield running
    finally:
        running.close()


@contextlib.asynccontextmanager
async def flushed_redis(url: str, *, cluster: bool) -> AsyncIterator[aioredis.Redis]:
    """A client of the stack's Redis (``cluster``: of its Redis Cluster), emptied
    first (on the cluster FLUSHALL goes to every master), closed afterwards."""
    client = redisclient.connect(url, cluster=cluster)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
