"""Serving an ASGI app for real on a free loopback port, in a thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp

from piagent.routes import STATE_KEY, Runtime

T = TypeVar("T")


def free_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Served:
    """A running server: its URL, and a way into its event loop and piagent's lifespan state."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.server.servers[0].get_loop()

    @property
    def runtime(self) -> Runtime:
        """What piagent's lifespan opened (uvicorn keeps the lifespan state it handed the app)."""
        runtime: Runtime = self.server.lifespan.state[STATE_KEY]
        return runtime

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 5.0) -> T:
        """Run `fn()` on the server's own loop and return its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)


@contextmanager
def serve_app(app: ASGIApp, server_class: type[uvicorn.Server] = uvicorn.Server, **options: Any) -> Iterator[Served]:
    """Run `app` under uvicorn (lifespan on) until the block ends."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False, **options)
    server = server_class(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    try:
        yield Served(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serve_in_thread(app: ASGIApp, **options: Any) -> Iterator[str]:
    """Run `app` under uvicorn (lifespan on) until the block ends; yields its base URL."""
    with serve_app(app, **options) as served:
        yield served.url
