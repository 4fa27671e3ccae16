"""A fake Ollama server for tests: real HTTP/1.1 on 127.0.0.1, raw asyncio streams, own loop in a daemon thread.

It speaks Ollama's wire protocol (``/api/chat`` as chunked NDJSON or a single JSON object, ``/api/tags``,
``/api/version``, ``/api/ps``, ``/``), serves several requests per connection (keep-alive), and follows a
:class:`Script` per chat request to misbehave on purpose: slow tokens, error statuses, error lines, stalls,
TCP resets and raw (possibly broken) bodies.  It notices within milliseconds when a client goes away and
records that moment in :attr:`FakeOllama.closed_at`.

Usage from a sync test::

    with FakeOllama() as fake:
        fake.script = Script(tokens=["a", "b"], delay=0.05)
        httpx.post(f"{fake.url}/api/chat", json={"model": "m", "messages": [], "stream": False})

Because the server runs its own event loop in a background thread, it works the same from async tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import http
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import field
from datetime import UTC, datetime
from email.utils import formatdate
from types import TracebackType
from typing import Any, Final, Literal, Self

__all__ = ["FakeOllama", "Recorded", "Script"]

_HOST: Final = "127.0.0.1"
_MAX_LINE: Final = 64 * 1024
_MAX_HEADERS: Final = 100
_MAX_BODY: Final = 32 * 1024 * 1024
_READ_SIZE: Final = 64 * 1024
_STOP_TIMEOUT: Final = 5.0
_VERSION: Final = "0.12.0"
_MODEL_SIZE: Final = 397821319
_TOTAL_DURATION: Final = 123456
_LOAD_DURATION: Final = 1000
_PROMPT_EVAL_DURATION: Final = 1000
_EVAL_DURATION: Final = 5000

_Outcome = Literal["done", "error", "stall", "reset"]


@dataclasses.dataclass
class Script:
    """How the fake answers one ``/api/chat`` request.

    With ``"stream": false`` the same script applies without the streaming: the delays add up before the one
    JSON answer, ``error_after`` turns into a 500 ``{"error": ...}``, stalls and resets happen before any byte,
    and ``raw_body`` is sent joined with a Content-Length.  Empty ``raw_body`` items are skipped when streaming,
    since a zero-length chunk would end the body.
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    delay: float = 0.0  # seconds between token lines (also before the final done line)
    first_delay: float = 0.0  # after the headers, before the first token line
    header_delay: float = 0.0  # before the status line is written at all
    status: int = 200  # != 200: answer that status with {"error": error} and stop
    error: str = "boom"  # error text, for status errors and error lines
    error_after: int | None = None  # after N token lines write {"error": error} and end the body properly
    stall_after: int | None = None  # after N token lines (0 = right after headers) stop writing until client closes
    stall_before_headers: bool = False  # write nothing at all; wait until the client closes
    reset_after: int | None = None  # after N token lines abort with a TCP RST; -1 = before the status line
    raw_body: list[bytes] | None = None  # send exactly these chunks (each its own HTTP chunk) as the body
    done_reason: str = "stop"
    prompt_eval_count: int = 7
    eval_count: int | None = None  # default: len(tokens)


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One HTTP request as received by the fake."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    json: Any | None  # the parsed JSON body, or None when empty or not JSON
    received_at: float  # time.monotonic() when the request was completely read
    connection: int = 0  # serial number (1, 2, ...) of the TCP connection it arrived on
    body: bytes = b""  # the raw (de-chunked) request body


class _ClientGone(Exception):
    """The client closed or reset the connection."""


class _BadRequest(Exception):
    """The request could not be parsed; answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now_iso() -> str:
    """Return the current UTC time the way Ollama's ``created_at`` looks."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _head(status: int, content_type: str, *, keep_alive: bool, length: int | None) -> bytes:
    """Build a response head; ``length=None`` means a chunked body."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Date: {formatdate(usegmt=True)}",
        framing,
    ]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _dumps(obj: object) -> bytes:
    """Encode compact JSON, as Ollama writes it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def _ndjson(obj: object) -> bytes:
    """Encode one NDJSON line."""
    return _dumps(obj) + b"\n"


def _chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class _Conn:
    """One accepted TCP connection: a byte pump that notices client EOF/reset at once, plus the writer."""

    def __init__(
        self, fake: FakeOllama, serial: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.fake = fake
        self.serial = serial
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.more = asyncio.Event()
        self.gone = asyncio.Event()
        self.local_close = False
        self.task: asyncio.Task[Any] | None = None
        self.pump_task: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        """Read everything the client sends into ``buf``; flag and record the client going away."""
        try:
            while data := await self.reader.read(_READ_SIZE):
                self.buf += data
                self.more.set()
        except OSError:
            pass
        if not self.local_close:
            self.fake._record_client_close(time.monotonic())
        self.gone.set()
        self.more.set()

    async def _wait_more(self) -> None:
        """Wait for more bytes; raise _ClientGone at EOF."""
        if self.gone.is_set():
            raise _ClientGone
        self.more.clear()
        await self.more.wait()

    async def readline(self) -> bytes:
        """Return the next line including its terminator."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > _MAX_LINE:
                raise _BadRequest(431, "line too long")
            await self._wait_more()

    async def readexactly(self, n: int) -> bytes:
        """Return exactly ``n`` bytes."""
        while len(self.buf) < n:
            await self._wait_more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def write(self, data: bytes) -> None:
        """Write and flush."""
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        self.local_close = True
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class FakeOllama:
    """A scriptable fake Ollama HTTP server running in a background thread."""

    def __init__(self) -> None:
        """Create a stopped server; call :meth:`start` (or use it as a context manager)."""
        self.url: str = ""
        self.script: Script = Script()
        self.scripts: dict[str, Script] = {}
        self.models: list[str] = ["qwen2.5:0.5b"]
        self.strict_models: bool = False  # True: /api/chat for a model not in `models` answers 404 like Ollama
        self.requests: list[Recorded] = []
        self.closed_at: list[float] = []
        self.errors: list[BaseException] = []  # unexpected exceptions inside the fake (its own bugs)
        self._cond = threading.Condition()
        self._open = 0
        self._serial = 0
        self._conns: set[_Conn] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None

    # ------------------------------------------------------------------ lifecycle (caller's thread)

    def start(self) -> Self:
        """Bind 127.0.0.1 on a free port, start the loop thread and return self."""
        if self._thread is not None:
            raise RuntimeError("FakeOllama already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((_HOST, 0))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name=f"fake-ollama-{port}", daemon=True)
        self._thread.start()
        # The listener is created inside the fake's own loop, so start() also works from inside a running loop.
        listening = asyncio.run_coroutine_threadsafe(self._listen(sock), loop)
        try:
            listening.result(timeout=_STOP_TIMEOUT)
        except BaseException:
            sock.close()
            self.stop()
            raise
        self.url = f"http://{_HOST}:{port}"
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
            raise RuntimeError("FakeOllama thread did not stop")
        self._thread = None
        self._loop = None
        self._server = None

    def __enter__(self) -> Self:
        """Start and return the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread body: run the loop until stopped, then cancel leftovers and close it."""
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
        """Start serving on the already bound and listening ``sock``."""
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=_READ_SIZE)

    async def _shutdown(self) -> None:
        """Close the listener, abort every connection and wait for the handlers to finish."""
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for conn in conns:
            conn.local_close = True
            conn.writer.transport.abort()
        # The aborts end every handler by themselves (their pumps see EOF). Cancelling them instead would trip
        # CPython 3.11's start_server done-callback, which calls task.exception() on the cancelled task and logs.
        tasks = [conn.task for conn in conns if conn.task is not None]
        if tasks:
            _, stragglers = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
            for task in stragglers:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ observation (any thread)

    @property
    def chat_requests(self) -> list[Any]:
        """The JSON bodies of the ``/api/chat`` requests received so far."""
        return [r.json for r in list(self.requests) if r.method == "POST" and r.path == "/api/chat"]

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

    # ------------------------------------------------------------------ bookkeeping (loop thread)

    def _record_client_close(self, when: float) -> None:
        """Append a client-close time and wake waiters."""
        with self._cond:
            self.closed_at.append(when)
            self._cond.notify_all()

    def _record_request(self, req: Recorded) -> None:
        """Append a received request and wake waiters."""
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    # ------------------------------------------------------------------ connection handling (loop thread)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one TCP connection until either side closes it."""
        with self._cond:
            self._serial += 1
            self._open += 1
            serial = self._serial
            self._cond.notify_all()
        conn = _Conn(self, serial, reader, writer)
        conn.task = asyncio.current_task()
        conn.pump_task = asyncio.create_task(conn.pump())
        self._conns.add(conn)
        try:
            await self._serve(conn)
        except (_ClientGone, OSError):
            pass
        except Exception as exc:  # a bug in the fake: keep it visible to tests in `errors`, not lost in a log
            with self._cond:
                self.errors.append(exc)
        finally:
            conn.pump_task.cancel()
            if not conn.gone.is_set():
                conn.local_close = True
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
            writer.transport.abort()
            self._conns.discard(conn)
            with self._cond:
                self._open -= 1
                self._cond.notify_all()

    async def _serve(self, conn: _Conn) -> None:
        """Read and answer requests on ``conn`` while the connection is kept alive."""
        while True:
            try:
                req, keep_alive = await self._read_request(conn)
            except _BadRequest as bad:
                await self._send_json(conn, bad.status, {"error": bad.message}, keep_alive=False)
                return
            self._record_request(req)
            if not (await self._dispatch(conn, req, keep_alive) and keep_alive):
                return

    async def _read_request(self, conn: _Conn) -> tuple[Recorded, bool]:
        """Parse one request (line, headers, Content-Length or chunked body); also say whether to keep alive."""
        line = await conn.readline()
        while line in (b"\r\n", b"\n"):
            line = await conn.readline()
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = await conn.readline()
            if raw in (b"\r\n", b"\n"):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name.strip():
                raise _BadRequest(400, "malformed header")
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        else:
            raise _BadRequest(431, "too many headers")
        if "100-continue" in headers.get("expect", "").lower():
            await conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body(conn, headers)
        parsed: Any | None = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
        path = target.split("?", 1)[0]
        return Recorded(method.upper(), path, headers, parsed, time.monotonic(), conn.serial, body), keep_alive

    async def _read_body(self, conn: _Conn, headers: dict[str, str]) -> bytes:
        """Read the request body by Content-Length or chunked transfer coding."""
        encoding = headers.get("transfer-encoding", "").strip().lower()
        if encoding:
            if encoding.split(",")[-1].strip() != "chunked":
                raise _BadRequest(501, f"unsupported transfer-encoding {encoding!r}")
            parts: list[bytes] = []
            total = 0
            while True:
                size_text = (await conn.readline()).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _BadRequest(400, "malformed chunk size") from None
                if size == 0:
                    break
                total += size
                if size < 0 or total > _MAX_BODY:
                    raise _BadRequest(413, "request body too large")
                parts.append(await conn.readexactly(size))
                if (await conn.readline()).strip():
                    raise _BadRequest(400, "malformed chunk")
            while (await conn.readline()).strip():  # trailers
                pass
            return b"".join(parts)
        length_text = headers.get("content-length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise _BadRequest(400, "malformed content-length") from None
        if length < 0:
            raise _BadRequest(400, "malformed content-length")
        if length > _MAX_BODY:
            raise _BadRequest(413, "request body too large")
        return await conn.readexactly(length)

    async def _dispatch(self, conn: _Conn, req: Recorded, keep: bool) -> bool:
        """Route one request; return False if the connection must be closed afterwards."""
        head = req.method == "HEAD"
        if req.path == "/api/chat":
            if req.method != "POST":
                await self._send_json(conn, 405, {"error": "method not allowed"}, keep_alive=keep)
                return True
            return await self._guarded(conn, self._chat(conn, req, keep))
        match req.path:
            case "/":
                body, content_type = b"Ollama is running", "text/plain; charset=utf-8"
            case "/api/version":
                body, content_type = _dumps({"version": _VERSION}), "application/json"
            case "/api/tags":
                body, content_type = _dumps(self._tags()), "application/json"
            case "/api/ps":
                body, content_type = b'{"models":[]}', "application/json"
            case _:
                await self._send_json(conn, 404, {"error": "not found"}, keep_alive=keep, head=head)
                return True
        if req.method not in ("GET", "HEAD"):
            await self._send_json(conn, 405, {"error": "method not allowed"}, keep_alive=keep, head=head)
        else:
            await self._send(conn, 200, body, content_type, keep_alive=keep, head=head)
        return True

    def _tags(self) -> dict[str, Any]:
        """Build the ``/api/tags`` answer from :attr:`models`."""
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2026-11-01T00:00:00Z",
                    "size": _MODEL_SIZE,
                    "digest": "abc",
                    "details": {
                        "format": "gguf",
                        "family": "qwen2",
                        "parameter_size": "494M",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for name in list(self.models)
            ]
        }

    async def _guarded(self, conn: _Conn, work: Coroutine[Any, Any, bool]) -> bool:
        """Run ``work`` but cancel it as soon as the client goes away; return whether to keep the connection."""
        task = asyncio.create_task(work)
        gone = asyncio.create_task(conn.gone.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled():
            return False
        return task.result()

    # ------------------------------------------------------------------ /api/chat

    async def _chat(self, conn: _Conn, req: Recorded, keep: bool) -> bool:
        """Answer one ``/api/chat`` request according to its script."""
        body = req.json
        if not isinstance(body, dict):
            await self._send_json(conn, 400, {"error": "invalid request body"}, keep_alive=keep)
            return True
        model = body.get("model")
        if not isinstance(model, str) or not model:
            await self._send_json(conn, 400, {"error": "model is required"}, keep_alive=keep)
            return True
        if self.strict_models and model not in self.models:
            await self._send_json(conn, 404, {"error": f"model '{model}' not found"}, keep_alive=keep)
            return True
        script = self.scripts.get(model, self.script)
        if script.header_delay > 0:
            await asyncio.sleep(script.header_delay)
        if script.reset_after == -1:
            conn.reset()
            return False
        if script.stall_before_headers:
            await conn.gone.wait()
            return False
        if script.status != 200:
            await self._send_json(conn, script.status, {"error": script.error}, keep_alive=keep)
            return True
        if body.get("stream") is False:
            return await self._chat_whole(conn, script, model, keep)
        return await self._chat_stream(conn, script, model, keep)

    def _done_fields(self, script: Script) -> dict[str, Any]:
        """The fields of the final (done) chat object."""
        return {
            "done": True,
            "done_reason": script.done_reason,
            "total_duration": _TOTAL_DURATION,
            "load_duration": _LOAD_DURATION,
            "prompt_eval_count": script.prompt_eval_count,
            "prompt_eval_duration": _PROMPT_EVAL_DURATION,
            "eval_count": len(script.tokens) if script.eval_count is None else script.eval_count,
            "eval_duration": _EVAL_DURATION,
        }

    async def _pace(self, script: Script, count: int, emit: Callable[[int], Awaitable[None]]) -> _Outcome:
        """Walk through ``count`` items with the script's delays, stalls, resets and errors."""
        for i in range(count + 1):
            if script.reset_after == i:
                return "reset"
            if script.stall_after == i:
                return "stall"
            pause = script.first_delay if i == 0 else script.delay
            if pause > 0:
                await asyncio.sleep(pause)
            if script.error_after == i:
                return "error"
            if i < count:
                await emit(i)
        return "done"

    async def _finish_abnormally(self, conn: _Conn, outcome: _Outcome) -> bool:
        """Carry out a stall or a reset; return False (the connection is finished)."""
        if outcome == "reset":
            conn.reset()
        else:
            await conn.gone.wait()
        return False

    async def _chat_stream(self, conn: _Conn, script: Script, model: str, keep: bool) -> bool:
        """Stream the reply as chunked NDJSON, one flushed chunk per line."""
        await conn.write(_head(200, "application/x-ndjson", keep_alive=keep, length=None))

        raw = None if script.raw_body is None else [part for part in script.raw_body if part]  # b"" would end it
        tokens = list(script.tokens)

        async def emit(i: int) -> None:
            if raw is not None:
                await conn.write(_chunk(raw[i]))
                return
            message = {"role": "assistant", "content": tokens[i]}
            line = {"model": model, "created_at": _now_iso(), "message": message, "done": False}
            await conn.write(_chunk(_ndjson(line)))

        outcome = await self._pace(script, len(tokens) if raw is None else len(raw), emit)
        if outcome in ("stall", "reset"):
            return await self._finish_abnormally(conn, outcome)
        if outcome == "error":
            await conn.write(_chunk(_ndjson({"error": script.error})))
        elif raw is None:
            final = {
                "model": model,
                "created_at": _now_iso(),
                "message": {"role": "assistant", "content": ""},
                **self._done_fields(script),
            }
            await conn.write(_chunk(_ndjson(final)))
        await conn.write(b"0\r\n\r\n")
        return True

    async def _chat_whole(self, conn: _Conn, script: Script, model: str, keep: bool) -> bool:
        """Answer ``"stream": false`` with one JSON object (or the joined raw body) after the scripted time."""

        async def emit(i: int) -> None:
            return None

        count = len(script.raw_body) if script.raw_body is not None else len(script.tokens)
        outcome = await self._pace(script, count, emit)
        if outcome in ("stall", "reset"):
            return await self._finish_abnormally(conn, outcome)
        if outcome == "error":
            await self._send_json(conn, 500, {"error": script.error}, keep_alive=keep)
            return True
        if script.raw_body is not None:
            await self._send(conn, 200, b"".join(script.raw_body), "application/json", keep_alive=keep)
            return True
        whole = {
            "model": model,
            "created_at": _now_iso(),
            "message": {"role": "assistant", "content": "".join(script.tokens)},
            **self._done_fields(script),
        }
        await self._send_json(conn, 200, whole, keep_alive=keep)
        return True

    # ------------------------------------------------------------------ plain responses

    async def _send_json(self, conn: _Conn, status: int, obj: object, *, keep_alive: bool, head: bool = False) -> None:
        """Send a complete JSON response."""
        await self._send(conn, status, _dumps(obj), "application/json", keep_alive=keep_alive, head=head)

    async def _send(
        self, conn: _Conn, status: int, body: bytes, content_type: str, *, keep_alive: bool, head: bool = False
    ) -> None:
        """Send a complete response with Content-Length."""
        await conn.write(_head(status, content_type, keep_alive=keep_alive, length=len(body)) + (b"" if head else body))
