"""Serving piagent for real on a free loopback port: an app in a thread, or `python -m piagent` as a process."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from piagent.http.requests import STATE_KEY, Runtime

T = TypeVar("T")

# Runs a test (whose app comes from the `make_settings` fixture) on both upstream transports: piagent's own
# (plain-http upstreams) and httpx's default (https upstreams, PIAGENT_FAST_TRANSPORT=false).
TRANSPORTS = [pytest.param(True, id="piagent-transport"), pytest.param(False, id="httpx-transport")]
both_transports = pytest.mark.parametrize("fast_transport", TRANSPORTS)


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


def free_port() -> int:
    """A loopback port that was free a moment ago (for a process that binds it itself)."""
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
    return port


def start_piagent(
    env: Mapping[str, str], cwd: Path, argv: Sequence[str] = ("-m", "piagent"), capture: bool = True
) -> subprocess.Popen[str]:
    """Start piagent as its own process (output captured as text unless `capture` is false)."""
    output = subprocess.PIPE if capture else None
    return subprocess.Popen(
        [sys.executable, *argv],
        env=dict(env),
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
    )


def wait_until_serving(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    """Poll `url`/health until it answers 200; fail at once if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            output = process.communicate()[0] if process.stdout is not None else ""
            raise AssertionError(f"piagent exited with {process.returncode}: {output}")
        assert time.monotonic() < deadline, f"piagent did not start in {timeout:g} s"
        time.sleep(0.05)
