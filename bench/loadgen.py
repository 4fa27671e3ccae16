"""A load generator that is not the bottleneck: raw asyncio sockets and a minimal HTTP/1.1 keep-alive client.

``concurrency`` clients, each on its own persistent connection, send the same request back to back until a fixed
number of requests is done (or a time limit passes). The client parses ``Content-Length`` and chunked responses
itself, in :class:`HttpClient`, and records per request:

- latency: from just before the request is written to the end of the response (the chunked terminator);
- TTFT (time to first token): from just before the request is written to the arrival of the first body byte,
  i.e. the first byte of reply text for a streamed reply;
- the number of HTTP chunks and body bytes received, and whether the body passed the caller's check.

It reports requests/s, latency and TTFT percentiles, chunks/s and, given the tokens per reply, tokens/s. The
garbage collector is paused while a run is measured, so collector pauses in this process do not show as latency.

Run alone: ``python bench/loadgen.py --port 8000 --path /chat --body '{"message":"hi","stream":true}' -c 16 -n 1000``
prints a JSON summary. uvloop is used if installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import msgspec

# A check of one response: (status, lower-cased headers, body) -> None when good, else what is wrong.
Check = Callable[[int, dict[str, str], bytes], str | None]

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_EOF = range(7)


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on a uvloop event loop when uvloop is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def build_request(
    method: str, path: str, host: str, port: int, body: bytes = b"", headers: Sequence[str] = ()
) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: piagent-bench", "Accept: */*"]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Response:
    """One received response and its timings (``perf_counter_ns`` values)."""

    __slots__ = ("body", "chunks", "done_ns", "first_byte_ns", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.chunks = 0
        self.first_byte_ns = 0
        self.done_ns = 0


class HttpClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._response = Response()
        self._waiter: asyncio.Future[Response] | None = None
        self._keep_alive = True
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the request in flight, or end a body that runs until the connection closes."""
        self.closed = True
        self._transport = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._state == _UNTIL_EOF:
                self._finish(time.perf_counter_ns())
            else:
                waiter.set_exception(exc or ConnectionResetError("connection closed mid-response"))

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._transport.abort()

    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write ``request``; the future resolves with the whole response."""
        if self._transport is None or self.closed:
            raise ConnectionResetError("connection is closed")
        self._response = Response()
        self._state = _HEAD
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(request)
        return waiter

    def _finish(self, now: int) -> None:
        response = self._response
        response.done_ns = now
        if response.first_byte_ns == 0:
            response.first_byte_ns = now
        self._state = _HEAD
        waiter = self._waiter
        self._waiter = None
        if not self._keep_alive and self._transport is not None:
            self._transport.close()
            self.closed = True
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, message: str) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ValueError(message))
        self.abort()
        self.closed = True

    def _parse_head(self, head: bytes) -> None:
        response = self._response
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        version = parts[0]
        response.status = int(parts[1])
        headers = response.headers
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        connection = headers.get("connection", "").lower()
        self._keep_alive = "close" not in connection and (version == b"HTTP/1.1" or "keep-alive" in connection)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            self._state = _LENGTH
        elif response.status in (204, 304) or 100 <= response.status < 200:
            self._remaining = 0
            self._state = _LENGTH
        else:
            self._keep_alive = False
            self._state = _UNTIL_EOF

    def data_received(self, data: bytes) -> None:
        """Parse as much of the response as has arrived; timestamps are taken on arrival."""
        now = time.perf_counter_ns()
        if self._waiter is None:
            self._fail("data received with no request in flight")
            return
        buf = self._buf
        buf += data
        response = self._response
        while True:
            state = self._state
            if state == _CHUNK_DATA:
                if not buf:
                    return
                if response.first_byte_ns == 0:
                    response.first_byte_ns = now
                take = min(len(buf), self._remaining)
                response.body += buf[:take]
                del buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                try:
                    size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                except ValueError:
                    self._fail("bad chunk size")
                    return
                del buf[: end + 2]
                if size == 0:
                    self._state = _TRAILER
                else:
                    response.chunks += 1
                    self._remaining = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    self._fail("chunk not followed by CRLF")
                    return
                del buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish(now)
                    return
            elif state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                try:
                    self._parse_head(bytes(buf[:end]))
                except (ValueError, IndexError):
                    self._fail("bad response head")
                    return
                del buf[: end + 4]
                if self._state == _LENGTH and self._remaining == 0:
                    self._finish(now)
                    return
            elif state == _LENGTH:
                if not buf:
                    return
                if response.first_byte_ns == 0:
                    response.first_byte_ns = now
                take = min(len(buf), self._remaining)
                response.body += buf[:take]
                del buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._finish(now)
                    return
            else:  # _UNTIL_EOF
                if buf:
                    if response.first_byte_ns == 0:
                        response.first_byte_ns = now
                    response.body += buf
                    buf.clear()
                return


async def connect(host: str, port: int) -> HttpClient:
    """Open one connection."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(HttpClient, host, port)
    return protocol


async def fetch(host: str, port: int, method: str, path: str, body: bytes = b"", limit_s: float = 10.0) -> Response:
    """One request on a fresh connection (for health checks and control calls), then close it."""
    client: HttpClient | None = None
    try:
        async with asyncio.timeout(limit_s):
            client = await connect(host, port)
            return await client.send(build_request(method, path, host, port, body, ("Connection: close",)))
    finally:
        if client is not None:
            client.close()


class LoadResult(msgspec.Struct, kw_only=True):
    """The outcome of one measured run; times in nanoseconds unless named otherwise."""

    concurrency: int
    requested: int
    completed: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    latencies_ns: list[int] = msgspec.field(default_factory=list)
    ttfts_ns: list[int] = msgspec.field(default_factory=list)
    chunks: int = 0
    body_bytes: int = 0
    reconnects: int = 0
    errors: list[str] = msgspec.field(default_factory=list)
    timed_out: bool = False

    @property
    def rps(self) -> float:
        """Good responses per second."""
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """Latency quantile ``q`` (0..1) in milliseconds."""
        return percentile(self.latencies_ns, q) / 1e6

    def ttft_ms(self, q: float) -> float:
        """TTFT quantile ``q`` (0..1) in milliseconds."""
        return percentile(self.ttfts_ns, q) / 1e6

    def summary(self, tokens_per_request: int = 0) -> dict[str, float | int | bool | list[str]]:
        """The headline figures as a flat mapping."""
        return {
            "concurrency": self.concurrency,
            "completed": self.completed,
            "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.rps, 1),
            "latency_p50_ms": round(self.latency_ms(0.5), 3),
            "latency_p99_ms": round(self.latency_ms(0.99), 3),
            "ttft_p50_ms": round(self.ttft_ms(0.5), 3),
            "ttft_p99_ms": round(self.ttft_ms(0.99), 3),
            "chunks_per_s": round(self.chunks / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "tokens_per_s": round(self.completed * tokens_per_request / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "reconnects": self.reconnects,
            "timed_out": self.timed_out,
            "errors": self.errors,
        }


def percentile(values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return float(ordered[rank - 1])


class _Budget:
    """Hands out request slots until the count is reached or the deadline passes."""

    __slots__ = ("deadline", "left", "timed_out")

    def __init__(self, count: int, deadline: float) -> None:
        self.left = count
        self.deadline = deadline
        self.timed_out = False

    def take(self) -> bool:
        if self.left <= 0:
            return False
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            return False
        self.left -= 1
        return True


class LoadGenerator:
    """``concurrency`` keep-alive clients sending one fixed request; ``run`` may be called repeatedly."""

    def __init__(self, host: str, port: int, request: bytes, concurrency: int, check: Check | None = None) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.concurrency = concurrency
        self.check = check
        self._clients: list[HttpClient | None] = [None] * concurrency

    async def connect(self) -> None:
        """Open every client's connection (not part of any measured run); a refused one is retried in the run."""
        for i in range(self.concurrency):
            client = self._clients[i]
            if client is None or client.closed:
                try:
                    self._clients[i] = await connect(self.host, self.port)
                except OSError:
                    self._clients[i] = None

    def close(self) -> None:
        """Close every connection."""
        for client in self._clients:
            if client is not None:
                client.close()

    async def run(self, count: int, max_seconds: float = 60.0) -> LoadResult:
        """Send ``count`` requests (fewer if ``max_seconds`` passes first) and measure them."""
        await self.connect()
        result = LoadResult(concurrency=self.concurrency, requested=count)
        budget = _Budget(count, time.monotonic() + max_seconds)
        loop = asyncio.get_running_loop()
        # A hung server must not hang the benchmark: past the limit plus a grace period, drop every connection.
        watchdog = loop.call_later(max_seconds + 30.0, self._abort_all)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        started = time.perf_counter_ns()
        try:
            await asyncio.gather(*(self._client_loop(i, budget, result) for i in range(self.concurrency)))
        finally:
            finished = time.perf_counter_ns()
            watchdog.cancel()
            if gc_was_enabled:
                gc.enable()
        result.elapsed_s = (finished - started) / 1e9
        result.timed_out = budget.timed_out
        return result

    def _abort_all(self) -> None:
        for client in self._clients:
            if client is not None:
                client.abort()

    async def _client_loop(self, index: int, budget: _Budget, result: LoadResult) -> None:
        request = self.request
        check = self.check
        latencies = result.latencies_ns
        ttfts = result.ttfts_ns
        clock = time.perf_counter_ns
        while budget.take():
            client = self._clients[index]
            try:
                if client is None or client.closed:
                    client = await connect(self.host, self.port)
                    self._clients[index] = client
                    result.reconnects += 1
                sent = clock()
                response = await client.send(request)
            except (OSError, ValueError) as exc:
                result.failed += 1
                if len(result.errors) < 5:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                self._clients[index] = None
                continue
            problem = None
            if check is not None:
                problem = check(response.status, response.headers, bytes(response.body))
            elif response.status != 200:
                problem = f"HTTP {response.status}"
            if problem is not None:
                result.failed += 1
                if len(result.errors) < 5:
                    result.errors.append(problem)
                continue
            result.completed += 1
            latencies.append(response.done_ns - sent)
            ttfts.append(response.first_byte_ns - sent)
            result.chunks += response.chunks
            result.body_bytes += len(response.body)


async def _main(args: argparse.Namespace) -> dict[str, float | int | bool | list[str]]:
    body = args.body.encode()
    request = build_request(args.method, args.path, args.host, args.port, body, args.header)
    generator = LoadGenerator(args.host, args.port, request, args.concurrency)
    try:
        if args.warmup:
            await generator.run(args.warmup, args.max_seconds)
        result = await generator.run(args.requests, args.max_seconds)
    finally:
        generator.close()
    return result.summary(args.tokens)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--path", default="/chat")
    parser.add_argument("--body", default='{"message":"hi","agent":"general","conversation_id":null,"stream":true}')
    parser.add_argument("--header", action="append", default=[], help="extra header line, repeatable")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--tokens", type=int, default=0, help="tokens per reply, for tokens/s")
    args = parser.parse_args(argv)
    summary = run_async(_main(args))
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(summary)).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
