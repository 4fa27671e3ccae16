"""A real `redis-server` for tests: 127.0.0.1, a free port, no persistence, its own temp folder."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Self

import redis

from tests.servers import free_socket

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = "no redis-server binary on PATH (.ci/run installs Debian's redis-server package)"


class RedisServer:
    """Start with `with RedisServer() as server:`; `server.url` is its redis:// URL, `stop()` kills it."""

    def __init__(self, port: int = 0) -> None:
        self.port = port  # 0: a free one
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> Self:
        assert REDIS_SERVER is not None, SKIP_REASON
        if not self.port:
            sock = free_socket()
            self.port = sock.getsockname()[1]
            sock.close()  # redis-server binds it itself; the window for another process to take it is tiny
        self._dir = tempfile.TemporaryDirectory(prefix="piagent-redis-")
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--protected-mode", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def client(self) -> redis.Redis:
        """A synchronous client for looking at what the store wrote."""
        return redis.Redis(port=self.port)

    def flush(self) -> None:
        """Empty every database, so each test starts from nothing."""
        with self.client() as client:
            client.flushall()

    def stop(self) -> None:
        """Kill the server (as a crash would) and remove its folder."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
