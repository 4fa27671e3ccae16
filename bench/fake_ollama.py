"""A fast fake Ollama for benchmarks: raw asyncio HTTP/1.1, no framework, so it is never the bottleneck.

It answers like Ollama's own server does (Go net/http):

- ``POST /api/chat`` with ``"stream": true`` (Ollama's default): ``200``, ``Content-Type: application/x-ndjson``,
  ``Transfer-Encoding: chunked``, one chunk (one ``write``) per token line::

      {"model":"bench","created_at":"2026-11-26T01:00:00.000000Z",
       "message":{"role":"assistant","content":" the"},"done":false}

  (one line on the wire),
  then a final line with ``"done":true,"done_reason":"stop"`` and the ``total_duration``, ``load_duration``,
  ``prompt_eval_count``, ``prompt_eval_duration``, ``eval_count`` and ``eval_duration`` counters.
- ``POST /api/chat`` with ``"stream": false``: one ``application/json`` object holding the whole reply.
- ``GET /api/tags``, ``GET /api/ps``, ``GET /api/version`` and ``GET /`` (``Ollama is running``).
- HTTP/1.1 keep-alive (and pipelining); ``Connection: close`` is honoured.

The number of tokens per reply is, in order: the fake-wide override (``--force-tokens`` or ``POST /_bench/config``),
the request's ``options.num_predict`` when positive, else ``--tokens``. Tokens come from a fixed vocabulary
(:data:`TOKENS`, cycled), so a client can check a relayed reply byte for byte with :func:`reply_text`. An optional
delay between tokens (``--token-delay-ms``) imitates a model generating; with no delay all lines are written at
once, each as its own write (one ``send`` each, as Ollama flushes each line), and the kernel may coalesce them;
``--batch-writes`` joins them into one write instead, which is cheaper for the fake but not what Ollama does.

Benchmark-only endpoints (not Ollama's): ``POST /_bench/config`` with
``{"tokens": int | null, "delay_ms": float, "batch_writes": bool}`` changes the fake-wide settings;
``GET /_bench/stats`` returns counters (connections accepted, chat requests by ``stream`` value, tokens sent, the
last ``/api/chat`` body) and ``POST /_bench/reset`` zeroes them.

Run: ``python bench/fake_ollama.py --port 11435 [--tokens 256] [--token-delay-ms 0]``. uvloop is used if installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

import msgspec

# A fixed vocabulary, cycled: plain words, punctuation, a newline, JSON-escaped quotes and a multi-byte character,
# so a relay that mangles escaping or UTF-8 shows up as a mismatch.
TOKENS: tuple[str, ...] = (
    " The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ",",
    ' "quoted"',
    " café",
    " 42",
    ".",
    "\n",
    " And",
)

MODEL_DIGEST = "0" * 64


def reply_text(tokens: int) -> str:
    """The whole reply the fake generates for a request of ``tokens`` tokens."""
    n = len(TOKENS)
    return "".join(TOKENS[i % n] for i in range(tokens))


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on a uvloop event loop when uvloop is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _Message(msgspec.Struct):
    role: str | None = None
    content: str | None = None


class _Options(msgspec.Struct):
    num_predict: int | float | None = None


class _ChatBody(msgspec.Struct):
    """The part of Ollama's chat request the fake reads; unknown fields are ignored, as Ollama does."""

    model: str = ""
    messages: list[_Message] | None = None
    stream: bool | None = None
    options: _Options | None = None


class _BenchConfig(msgspec.Struct, forbid_unknown_fields=True):
    tokens: int | None = None
    delay_ms: float = 0.0
    batch_writes: bool = False


class Stats(msgspec.Struct):
    """What the fake has seen since start or the last reset."""

    connections: int = 0
    chat_requests: int = 0
    stream_requests: int = 0
    nonstream_requests: int = 0
    tokens_sent: int = 0
    other_requests: int = 0
    bad_requests: int = 0
    disconnects_mid_reply: int = 0
    last_chat_body: msgspec.Raw | None = None


class _Request:
    """One parsed HTTP/1.1 request."""

    __slots__ = ("body", "keep_alive", "method", "path")

    def __init__(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.keep_alive = keep_alive


class _BadRequest(Exception):
    pass


def _parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body starting at ``start``; None while incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError as exc:
            raise _BadRequest("bad chunk size") from exc
        pos = eol + 2
        if size == 0:
            # Trailers end with an empty line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(body), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


def _parse_request(buf: bytearray) -> tuple[_Request, int] | None:
    """Parse one request at the start of ``buf``: the request and its length, or None while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise _BadRequest("header too large")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _BadRequest("bad request line")
    method, target, version = parts
    length = 0
    chunked = False
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise _BadRequest("bad header line")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError as exc:
                raise _BadRequest("bad content-length") from exc
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            if token == b"close":
                keep_alive = False
            elif token == b"keep-alive":
                keep_alive = True
    start = end + 4
    if chunked:
        parsed = _parse_chunked(buf, start)
        if parsed is None:
            return None
        body, stop = parsed
    else:
        if len(buf) < start + length:
            return None
        body, stop = bytes(buf[start : start + length]), start + length
    return _Request(method, target.split(b"?", 1)[0], body, keep_alive), stop


class FakeOllama:
    """The fake's settings, counters and response builders; one instance serves every connection."""

    def __init__(
        self, tokens: int = 256, force_tokens: int | None = None, delay_ms: float = 0.0, batch_writes: bool = False
    ) -> None:
        self.default_tokens = tokens
        self.force_tokens = force_tokens
        self.delay_s = delay_ms / 1000.0
        self.batch_writes = batch_writes
        self.stats = Stats()
        self._chat_decoder = msgspec.json.Decoder(_ChatBody)
        self._config_decoder = msgspec.json.Decoder(_BenchConfig)
        self._encoder = msgspec.json.Encoder()
        self._token_json = tuple(self._encoder.encode(token) for token in TOKENS)
        self._date_second = -1
        self._date = b""

    def connection_factory(self) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for ``loop.create_server``."""
        return lambda: _Connection(self)

    def date(self) -> bytes:
        """The HTTP ``Date`` header value, recomputed once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = email.utils.formatdate(now, usegmt=True).encode()
        return self._date

    def token_count(self, body: _ChatBody) -> int:
        """Tokens for this reply: the fake-wide override, else a positive num_predict, else the default."""
        if self.force_tokens is not None:
            return self.force_tokens
        if body.options is not None and body.options.num_predict is not None and body.options.num_predict > 0:
            return int(body.options.num_predict)
        return self.default_tokens

    def head(self, status: bytes, content_type: bytes, keep_alive: bool, length: int | None) -> bytes:
        """A response head; chunked when ``length`` is None."""
        framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
        connection = b"" if keep_alive else b"Connection: close\r\n"
        return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nDate: %s\r\n%s%s\r\n\r\n" % (
            status,
            content_type,
            self.date(),
            connection,
            framing,
        )

    def simple(self, status: bytes, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
        """A whole response with a ``Content-Length`` body."""
        return self.head(status, content_type, keep_alive, len(body)) + body

    def json(self, obj: object, keep_alive: bool, status: bytes = b"200 OK") -> bytes:
        """A whole JSON response."""
        return self.simple(status, b"application/json; charset=utf-8", self._encoder.encode(obj), keep_alive)

    def decode_chat(self, raw: bytes) -> _ChatBody:
        """Decode an ``/api/chat`` request body."""
        return self._chat_decoder.decode(raw)

    def line_prefix(self, model: str) -> bytes:
        """The start of every line of one reply, up to the message content."""
        now = time.time()
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e6):06d}Z"
        return b'{"model":%s,"created_at":"%s","message":{"role":"assistant","content":' % (
            self._encoder.encode(model),
            created.encode(),
        )

    def token_json(self, index: int) -> bytes:
        """Token ``index`` of the vocabulary, JSON-encoded."""
        return self._token_json[index % len(self._token_json)]

    def counters(self, body: _ChatBody, tokens: int, started_ns: int) -> bytes:
        """The ``done`` line's counters, as Ollama orders them (durations in nanoseconds)."""
        total = max(time.perf_counter_ns() - started_ns, 1)
        prompt = sum(len(message.content or "") for message in body.messages or ()) // 4 + 1
        return (
            b'"total_duration":%d,"load_duration":%d,"prompt_eval_count":%d,"prompt_eval_duration":%d,'
            b'"eval_count":%d,"eval_duration":%d' % (total + 20_000, 10_000, prompt, 10_000, tokens, total)
        )

    def configure(self, raw: bytes) -> bytes:
        """Apply a ``/_bench/config`` body; the new settings as JSON."""
        config = self._config_decoder.decode(raw)
        self.force_tokens = config.tokens
        self.delay_s = max(config.delay_ms, 0.0) / 1000.0
        self.batch_writes = config.batch_writes
        return self._encoder.encode(
            {"tokens": self.force_tokens, "delay_ms": self.delay_s * 1000.0, "batch_writes": self.batch_writes}
        )

    def tags(self) -> dict[str, object]:
        """The ``/api/tags`` answer: the one fake model."""
        return {
            "models": [
                {
                    "name": "bench:latest",
                    "model": "bench:latest",
                    "modified_at": "2026-11-26T01:00:00.000000Z",
                    "size": 1,
                    "digest": MODEL_DIGEST,
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "bench",
                        "families": ["bench"],
                        "parameter_size": "0B",
                        "quantization_level": "Q0",
                    },
                }
            ]
        }


class _Connection(asyncio.Protocol):
    """One client connection: parses requests in order and writes the replies."""

    def __init__(self, server: FakeOllama) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a delayed stream is being written; later requests wait (pipelining order)
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._server.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        while not self._busy and self._transport is not None and not self._transport.is_closing():
            try:
                parsed = _parse_request(self._buf)
            except _BadRequest:
                self._server.stats.bad_requests += 1
                self._transport.write(self._server.simple(b"400 Bad Request", b"text/plain", b"bad request", False))
                self._transport.close()
                return
            if parsed is None:
                return
            request, size = parsed
            del self._buf[:size]
            self._handle(request)
            if not request.keep_alive and not self._busy and self._transport is not None:
                self._transport.close()

    def _handle(self, request: _Request) -> None:
        server = self._server
        transport = self._transport
        assert transport is not None
        keep = request.keep_alive
        method, path = request.method, request.path
        if path == b"/api/chat" and method == b"POST":
            self._chat(request)
            return
        server.stats.other_requests += 1
        if path == b"/api/version" and method == b"GET":
            transport.write(server.json({"version": "0.0.0-bench"}, keep))
        elif path == b"/api/tags" and method == b"GET":
            transport.write(server.json(server.tags(), keep))
        elif path == b"/api/ps" and method == b"GET":
            transport.write(server.json({"models": []}, keep))
        elif path == b"/" and method in (b"GET", b"HEAD"):
            body = b"" if method == b"HEAD" else b"Ollama is running"
            transport.write(server.head(b"200 OK", b"text/plain; charset=utf-8", keep, 17) + body)
        elif path == b"/_bench/stats" and method == b"GET":
            transport.write(server.json(server.stats, keep))
        elif path == b"/_bench/reset" and method == b"POST":
            server.stats = Stats()
            transport.write(server.json({"reset": True}, keep))
        elif path == b"/_bench/config" and method == b"POST":
            try:
                answer = server.configure(request.body)
            except msgspec.DecodeError as exc:
                transport.write(server.json({"error": str(exc)}, keep, b"400 Bad Request"))
            else:
                transport.write(server.simple(b"200 OK", b"application/json; charset=utf-8", answer, keep))
        else:
            transport.write(server.simple(b"404 Not Found", b"text/plain; charset=utf-8", b"404 page not found", keep))

    def _chat(self, request: _Request) -> None:
        server = self._server
        transport = self._transport
        assert transport is not None
        keep = request.keep_alive
        started = time.perf_counter_ns()
        try:
            body = server.decode_chat(request.body)
        except msgspec.DecodeError as exc:
            server.stats.bad_requests += 1
            transport.write(server.json({"error": str(exc)}, keep, b"400 Bad Request"))
            return
        stats = server.stats
        stats.chat_requests += 1
        stats.last_chat_body = msgspec.Raw(request.body)
        if not body.model:
            transport.write(server.json({"error": "model is required"}, keep, b"400 Bad Request"))
            return
        tokens = server.token_count(body)
        prefix = server.line_prefix(body.model)
        if body.stream is False:
            stats.nonstream_requests += 1
            content = server._encoder.encode(reply_text(tokens))
            payload = b'%s%s},"done_reason":"stop","done":true,%s}' % (
                prefix,
                content,
                server.counters(body, tokens, started),
            )
            stats.tokens_sent += tokens
            transport.write(server.simple(b"200 OK", b"application/json; charset=utf-8", payload, keep))
            return
        stats.stream_requests += 1
        head = server.head(b"200 OK", b"application/x-ndjson", keep, None)
        if server.delay_s <= 0:
            parts: list[bytes] = []
            write = parts.append if server.batch_writes else transport.write
            for i in range(tokens):
                line = b'%s%s},"done":false}\n' % (prefix, server.token_json(i))
                if i == 0:
                    write(b"%s%x\r\n%s\r\n" % (head, len(line), line))
                else:
                    write(b"%x\r\n%s\r\n" % (len(line), line))
            stats.tokens_sent += tokens
            last = b'%s""},"done":true,"done_reason":"stop",%s}\n' % (prefix, server.counters(body, tokens, started))
            write(b"%s%x\r\n%s\r\n0\r\n\r\n" % (head if tokens == 0 else b"", len(last), last))
            if parts:
                transport.write(b"".join(parts))
            return
        self._busy = True
        self._task = asyncio.get_running_loop().create_task(
            self._chat_slowly(body, tokens, prefix, head, keep, started)
        )

    async def _chat_slowly(
        self, body: _ChatBody, tokens: int, prefix: bytes, head: bytes, keep: bool, started: int
    ) -> None:
        server = self._server
        delay = server.delay_s
        try:
            transport = self._transport
            assert transport is not None
            transport.write(head)
            for i in range(tokens):
                await asyncio.sleep(delay)
                if transport.is_closing():
                    server.stats.disconnects_mid_reply += 1
                    return
                line = b'%s%s},"done":false}\n' % (prefix, server.token_json(i))
                transport.write(b"%x\r\n%s\r\n" % (len(line), line))
                server.stats.tokens_sent += 1
            last = b'%s""},"done":true,"done_reason":"stop",%s}\n' % (prefix, server.counters(body, tokens, started))
            transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
        except asyncio.CancelledError:
            server.stats.disconnects_mid_reply += 1
            raise
        finally:
            self._task = None
            self._busy = False
        if not keep:
            transport.close()
        elif self._buf:
            self._process()


async def serve(host: str, port: int, server: FakeOllama, ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM; ``ready`` gets the bound port once listening."""
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server.connection_factory(), host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(listener.sockets[0].getsockname()[1])
    async with listener:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per reply when the request sets no num_predict")
    parser.add_argument("--force-tokens", type=int, default=None, help="tokens per reply, whatever the request says")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay before each token")
    parser.add_argument(
        "--batch-writes", action="store_true", help="with no delay, write a whole reply at once (not as Ollama does)"
    )
    args = parser.parse_args(argv)
    server = FakeOllama(args.tokens, args.force_tokens, args.token_delay_ms, args.batch_writes)

    def ready(port: int) -> None:
        print(f"fake ollama listening on http://{args.host}:{port}", flush=True)

    run_async(serve(args.host, args.port, server, ready))


if __name__ == "__main__":
    main(sys.argv[1:])
