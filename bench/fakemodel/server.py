"""The fake model server: its settings and recordings, run in a background thread (tests) or as a process (bench).

Usage from a test (sync or async: the server runs its own loop in a daemon thread)::

    with FakeModel() as fake:
        fake.script = Script(tokens=["a", "b"], delay=0.05)
        httpx.post(f"{fake.url}/api/chat", json={"model": "m", "messages": [], "stream": False})
        assert fake.chat_requests[-1]["model"] == "m"

Which script answers a chat request: ``choose(request)`` when set and not None, else the next of ``queue``, else
``scripts[model]``, else ``script``. As a process for the benchmarks see :mod:`.process`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from .connection import Connection
from .scripts import Recorded, Script
from .wire import Wire

__all__ = ["FakeModel", "Stats"]

_HOST: Final = "127.0.0.1"
_STOP_TIMEOUT: Final = 5.0
_CHAT_PATHS: Final = frozenset({"/api/chat", "/v1/chat/completions"})


class Stats(msgspec.Struct):
    """Counters since start or the last ``/_bench/reset``."""

    connections: int = 0
    chat_requests: int = 0
    stream_requests: int = 0
    nonstream_requests: int = 0
    tokens_sent: int = 0
    other_requests: int = 0
    bad_requests: int = 0
    disconnects_mid_reply: int = 0
    last_chat_body: msgspec.Raw | None = None


class FakeModel:
    """A scriptable fake Ollama and OpenAI-compatible model server on 127.0.0.1."""

    def __init__(self, *, models: list[str] | None = None, record: bool = True) -> None:
        """Create a stopped server; call :meth:`start` (or use it as a context manager) or :meth:`serve`."""
        self.url = ""
        self.port = 0
        self.script = Script()
        self.scripts: dict[str, Script] = {}
        self.queue: list[Script] = []
        self.choose: Callable[[Recorded], Script | None] | None = None
        self.models: list[str] = ["qwen2.5:0.5b"] if models is None else models
        self.strict_models = False  # True: a chat for a model not in `models` answers 404 like Ollama
        self.loaded: list[str] = []  # what /api/ps lists
        self.capabilities: list[str] = ["completion", "tools"]  # what /api/show says
        self.api_key: str | None = None  # set: requests without "Authorization: Bearer <it>" get 401
        self.batch_writes = False  # a reply nothing delays goes out in one write instead of one per line
        self.unchunked = False  # ... and with a Content-Length instead of chunks: cheapest to read, not Ollama's way
        self.recording = record
        self.requests: list[Recorded] = []
        self.closed_at: list[float] = []  # monotonic times at which a client closed or reset its connection
        self.errors: list[BaseException] = []  # unexpected exceptions inside the fake (its own bugs)
        self.stats = Stats()
        self.wire = Wire()
        self._cond = threading.Condition()
        self._open = 0
        self._serial = 0
        self._conns: set[Connection] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None

    # ------------------------------------------------------------------ scripting (loop thread)

    def script_for(self, request: Recorded, model: str) -> Script:
        """The script that answers ``request``."""
        if self.choose is not None and (chosen := self.choose(request)) is not None:
            return chosen
        if self.queue:
            return self.queue.pop(0)
        return self.scripts.get(model, self.script)

    def extra_endpoint(self, method: str, path: str, body: bytes, keep: bool) -> bytes | None:
        """A whole response for a path the protocols do not have, or None; for subclasses."""
        return None

    # ------------------------------------------------------------------ bookkeeping (loop thread)

    def opened(self, conn: Connection) -> int:
        """Count a new connection; its serial number."""
        self.stats.connections += 1
        self._conns.add(conn)
        with self._cond:
            self._serial += 1
            self._open += 1
            self._cond.notify_all()
            return self._serial

    def closed(self, conn: Connection) -> None:
        """Count a connection gone."""
        self._conns.discard(conn)
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def client_closed(self, when: float) -> None:
        """Note the moment a client closed or reset its connection."""
        with self._cond:
            self.closed_at.append(when)
            self._cond.notify_all()

    def record(self, request: Recorded) -> None:
        """Keep a received request (unless recording is off) and wake waiters."""
        if self.recording:
            with self._cond:
                self.requests.append(request)
                self._cond.notify_all()

    # ------------------------------------------------------------------ observation (any thread)

    @property
    def chat_requests(self) -> list[Any]:
        """The JSON bodies of the chat requests received so far (``/api/chat`` and ``/v1/chat/completions``)."""
        return [r.json for r in list(self.requests) if r.method == "POST" and r.path in _CHAT_PATHS]

    @property
    def open_connections(self) -> int:
        """The number of currently open TCP connections."""
        with self._cond:
            return self._open

    @property
    def connection_count(self) -> int:
        """The number of TCP connections accepted since start."""
        with self._cond:
            return self._serial

    def wait_for_client_close(self, timeout: float, after: float | None = None) -> float | None:
        """Block until a client close is recorded; return its monotonic time, or None on timeout.

        Without ``after`` only closes recorded after the call count; with ``after`` (a ``time.monotonic()``
        value) the first close at or after that instant counts, even if it was recorded before the call.
        """
        with self._cond:
            start = len(self.closed_at)

            def found() -> float | None:
                if after is None:
                    return self.closed_at[start] if len(self.closed_at) > start else None
                return next((t for t in self.closed_at if t >= after), None)

            if self._cond.wait_for(lambda: found() is not None, timeout):
                return found()
            return None

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` requests have been received; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_for_open_connections(self, n: int, timeout: float) -> bool:
        """Block until exactly ``n`` connections are open; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._open == n, timeout)

    # ------------------------------------------------------------------ in a background thread (tests)

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port, start the loop thread and return self."""
        if self._thread is not None:
            raise RuntimeError("FakeModel already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((_HOST, 0))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name=f"fake-model-{self.port}", daemon=True)
        self._thread.start()
        # The listener is created inside the fake's own loop, so start() also works from inside a running loop.
        listening = asyncio.run_coroutine_threadsafe(self._listen(sock), loop)
        try:
            listening.result(timeout=_STOP_TIMEOUT)
        except BaseException:
            sock.close()
            self.stop()
            raise
        self.url = f"http://{_HOST}:{self.port}"
        return self

    def stop(self) -> None:
        """Close the server and every open connection, stop the loop and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError):  # the join below still bounds the wait
                future.result(timeout=_STOP_TIMEOUT)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("FakeModel thread did not stop")
        self._thread = self._loop = self._server = None

    def __enter__(self) -> Self:
        """Start and return the server."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.get_running_loop().create_server(lambda: Connection(self), sock=sock)

    async def _shutdown(self) -> None:
        """Close the listener, abort every connection and let the reply tasks end."""
        if self._server is not None:
            self._server.close()
        tasks = [conn.task for conn in self._conns if conn.task is not None]
        for conn in list(self._conns):
            conn.abort()
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ as a process (bench)

    async def serve(self, host: str, port: int, ready: Callable[[int], None] | None = None) -> None:
        """Serve until SIGINT or SIGTERM; ``ready`` gets the bound port once listening."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: Connection(self), host, port, backlog=1024, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        self.port = listener.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        if ready is not None:
            ready(self.port)
        async with listener:
            await stop.wait()
