"""A real loopback web server for `http_get`'s tests, recording every connection and request it gets."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

# Pretended public addresses: a test client sends what is addressed to them to this server instead, so a
# "public" first hop can be shown without a packet leaving the machine.
PRETEND_PUBLIC = ("8.8.8.8", "2001:4860:4860::8888")


class _Handler(BaseHTTPRequestHandler):
    server: WebServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reads `requests` instead

    def _send(self, status: int, body: bytes, content_type: str | None, **headers: str) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, chunk: bytes, pause: float, total: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        try:
            while self.server.body_bytes_sent < total:
                self.wfile.write(chunk)
                self.wfile.flush()
                self.server.body_bytes_sent += len(chunk)
                time.sleep(pause)
        except OSError:
            pass  # the client stopped reading and closed: what the test wants to see

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.requests.append((url.path, dict(self.headers)))
        path = url.path
        if path.endswith("/redirect"):
            self._send(302, b"", "text/plain", Location=query["to"])
        elif path.endswith("/json"):
            self._send(200, b'{"temperature": 21.5}', "application/json")
        elif path.endswith("/latin1"):
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif path.endswith("/odd-charset"):
            self._send(200, b"plain words", f"text/plain; charset={query['charset']}")
        elif path.endswith("/image"):
            self._send(200, b"\x89PNG\r\n\x1a\n", "image/png")
        elif path.endswith("/untyped"):
            self._send(200, b"what am I", None)
        elif path.endswith("/gzip"):
            self._send(200, b"\x1f\x8b\x08\x00", "text/plain", Content_Encoding="gzip")
        elif path.endswith("/missing"):
            self._send(404, b"no such sensor", "text/plain")
        elif path.endswith("/cookie"):
            self._send(200, b"have one", "text/plain", Set_Cookie="session=s3cret; Path=/")
        elif path.endswith("/host"):
            self._send(200, self.headers.get("Host", "").encode(), "text/plain")
        elif path.endswith("/huge"):
            self._stream(b"x" * 65536, 0, 64 * 1024 * 1024)
        elif path.endswith("/slow"):
            self._stream(b"x", 0.05, 10_000)
        else:
            self._send(200, f"hello from {path}".encode(), "text/plain; charset=utf-8")


class WebServer(ThreadingHTTPServer):
    """Serves on 127.0.0.1 in a thread; `connections` counts every TCP connection accepted."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.body_bytes_sent = 0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    def __enter__(self) -> WebServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class LoopbackOnly(httpx.AsyncBaseTransport):
    """A transport that lets requests reach 127.0.0.1 only (pretended public addresses are sent there too),
    and fails the test loudly for anything else, so a bug cannot send traffic off the machine."""

    def __init__(self, port: int) -> None:
        self._port = port
        # verify=False: plain http only here, and loading the CA bundle would cost every test half a second.
        self._inner = httpx.AsyncHTTPTransport(verify=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in PRETEND_PUBLIC:
            request.url = request.url.copy_with(host="127.0.0.1", port=self._port)
        elif host != "127.0.0.1":
            raise AssertionError(f"a request to {host} would have left the machine")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
