"""The edge of the server: bounded request heads, head and body timeouts and the connection cap, on both protocols."""

from __future__ import annotations

import logging
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgspec
import pytest

from piagent import Settings, create_app
from piagent.server import SPARE_DESCRIPTORS, edge_limits, edge_protocol
from tests.conftest import MakeSettings
from tests.servers import Served, serve_app

KEY = "edge-test-key-0123456789"
PROTOCOLS = [pytest.param("h11", id="h11"), pytest.param("httptools", id="httptools")]


@contextmanager
def edge_server(make_settings: MakeSettings, http: str, **overrides: Any) -> Iterator[Served]:
    """piagent served for real with its edge protocol (`h11` or `httptools`) and these settings."""
    settings = make_settings(**overrides)
    with serve_app(create_app(settings), http=edge_protocol(edge_limits(settings), http)) as served:
        yield served


def port_of(served: Served) -> int:
    return int(served.url.rsplit(":", 1)[1])


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took (a reset counts as a close)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


def exchange(port: int, payload: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send `payload` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        return read_until_closed(sock, timeout)


def error_of(raw: bytes) -> tuple[int, dict[str, str]]:
    """The status and the `error` object of a raw JSON error response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, msgspec.json.decode(body)["error"]


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def head_of_size(size: int, path: str = "/agents") -> bytes:
    """A complete request head of exactly `size` bytes, padded in one header."""
    start = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: ".encode()
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_head_over_the_byte_limit_gets_431_before_the_key_check(make_settings: MakeSettings, http: str) -> None:
    with edge_server(make_settings, http, api_keys=(KEY,), max_header_bytes=4096) as served:
        port = port_of(served)
        at_limit, _ = exchange(port, head_of_size(4096))
        assert status_of(at_limit) == 401  # read whole, and the app (the key check) ran
        over, _ = exchange(port, head_of_size(4097))
        assert error_of(over) == (
            431,
            {"code": "headers_too_large", "message": "the request head is over 4096 bytes"},
        )
        assert b"\r\nconnection: close\r\n" in over


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_head_with_too_many_fields_gets_431(make_settings: MakeSettings, http: str) -> None:
    with edge_server(make_settings, http, api_keys=(KEY,), max_headers=20) as served:
        port = port_of(served)
        fields = b"Host: 127.0.0.1\r\nConnection: close\r\n"  # two of them
        ok, _ = exchange(port, b"GET /agents HTTP/1.1\r\n" + fields + b"X-A: b\r\n" * 18 + b"\r\n")
        assert status_of(ok) == 401
        refused, _ = exchange(port, b"GET /agents HTTP/1.1\r\n" + fields + b"X-A: b\r\n" * 19 + b"\r\n")
        assert error_of(refused) == (
            431,
            {"code": "headers_too_large", "message": "the request has more than 20 header fields"},
        )


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_head_sent_slowly_is_refused_as_soon_as_it_passes_the_limit(make_settings: MakeSettings, http: str) -> None:
    with (
        edge_server(make_settings, http, max_header_bytes=8192) as served,
        socket.create_connection(("127.0.0.1", port_of(served))) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sent = 0
        while not select.select([sock], [], [], 0.02)[0]:
            assert sent < 64 * 1024, "still reading a head far over the limit"
            sock.sendall(b"a" * 1024)
            sent += 1024
        answer, _ = read_until_closed(sock, 5)
    assert 8192 - 1024 < sent <= 8192 + 2048  # answered within a piece or two of the limit
    assert error_of(answer)[0] == 431


def flood(port: int, stop: threading.Event, header_bytes: int, report: list[int]) -> None:
    """Send requests with a `header_bytes` header, one connection after another, until `stop`."""
    piece = b"a" * (1024 * 1024)
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sent = 0
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
                while sent < header_bytes and not stop.is_set():
                    sock.sendall(piece)
                    sent += len(piece)
            except OSError:  # the server refused the head and closed
                pass
            report.append(sent)


def send_until_closed(sock: socket.socket, limit: int) -> tuple[int, bool]:
    """Send up to `limit` bytes: (how many were sent, whether the server closed the connection first)."""
    sent = 0
    try:
        while sent < limit:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        return sent, True
    return sent, False


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_chunked_body_with_a_huge_trailer_is_cut_off_but_many_small_chunks_are_fine(
    make_settings: MakeSettings, http: str
) -> None:
    with edge_server(make_settings, http) as served, socket.create_connection(("127.0.0.1", port_of(served))) as sock:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: ")
        sent, cut = send_until_closed(sock, 64 * 1024 * 1024)
        assert cut
        assert sent < 16 * 1024 * 1024
        body = b'{"message": "' + b"a" * 4000 + b'"}'
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 3]), body[i : i + 3]) for i in range(0, len(body), 3))
        small, _ = exchange(
            port_of(served),
            b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\nX-Trailer: fine\r\n\r\n",
        )
        assert status_of(small) == 200


@pytest.mark.parametrize("http", PROTOCOLS)
def test_health_keeps_answering_while_a_client_sends_a_150_mb_header(make_settings: MakeSettings, http: str) -> None:
    with edge_server(make_settings, http) as served, httpx.Client(base_url=served.url, timeout=5) as client:
        stop = threading.Event()
        sent: list[int] = []
        flooder = threading.Thread(target=flood, args=(port_of(served), stop, 150 * 1024 * 1024, sent))
        flooder.start()
        latencies = []
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert client.get("/health").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.02)
        finally:
            stop.set()
            flooder.join(timeout=10)
    assert len(latencies) > 30
    assert max(latencies) < 0.5, sorted(latencies)[-5:]
    # Each flood connection was cut off after what the socket buffers held, never its 150 MB.
    assert len(sent) > 3
    assert max(sent[:-1]) < 16 * 1024 * 1024


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_head_not_complete_within_the_timeout_gets_408_and_is_closed(make_settings: MakeSettings, http: str) -> None:
    with edge_server(make_settings, http, header_timeout=0.5) as served:
        port = port_of(served)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            for _ in range(4):  # trickling fields does not extend the deadline
                time.sleep(0.1)
                sock.sendall(b"X-A: b\r\n")
            answer, _ = read_until_closed(sock, 5)
        assert error_of(answer) == (
            408,
            {"code": "request_timeout", "message": "the request head did not arrive within 0.5 s"},
        )
        silent, took = exchange(port, b"")
        assert silent == b""  # nothing was asked, so nothing is answered
        assert 0.4 < took < 2


FIRST_REQUESTS = [
    pytest.param(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="after-a-get"),
    pytest.param(
        b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
        b'{"message":"hi"}',
        id="after-a-body",  # the body's longer deadline must not postpone the next head's
    ),
]


@pytest.mark.parametrize("first", FIRST_REQUESTS)
@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_kept_alive_connection_whose_next_head_stalls_is_closed(
    make_settings: MakeSettings, http: str, first: bytes
) -> None:
    with (
        edge_server(make_settings, http, header_timeout=0.5, body_timeout=5) as served,
        socket.create_connection(("127.0.0.1", port_of(served))) as sock,
    ):
        sock.sendall(first)
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
        assert status_of(answer) == 200
        time.sleep(0.7)  # idle between requests is the keep-alive timeout's business (5 s), not the head's
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        answer, took = read_until_closed(sock, 5)
    assert error_of(answer)[0] == 408
    assert 0.4 < took < 2


@contextmanager
def uvicorn_log(handler: logging.Handler) -> Iterator[None]:
    """uvicorn's error log also into `handler` (its logger does not propagate to the root)."""
    uvicorn_logger = logging.getLogger("uvicorn.error")
    uvicorn_logger.addHandler(handler)
    try:
        yield
    finally:
        uvicorn_logger.removeHandler(handler)


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_stalled_body_is_closed_after_the_body_timeout_but_a_slow_steady_one_is_served(
    make_settings: MakeSettings, http: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"message": "hello there, how are you doing today?"}'
    head = (
        b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with edge_server(make_settings, http, body_timeout=0.5) as served, uvicorn_log(caplog.handler):
        port = port_of(served)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head + body[:10])
            answer, took = read_until_closed(sock, 5)
        assert answer == b""  # the app was waiting for the body; it sees a disconnect
        assert 0.4 < took < 2
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(head)
            for start in range(0, len(body), 10):  # 1.8 s in all, never 0.5 s silent
                time.sleep(0.3)
                sock.sendall(body[start : start + 10])
            answer, _ = read_until_closed(sock, 10)
        assert status_of(answer) == 200
    assert "Exception in ASGI application" not in caplog.text


@pytest.mark.parametrize("http", PROTOCOLS)
def test_connections_past_the_cap_get_503_at_once_and_later_ones_are_served(
    make_settings: MakeSettings, http: str
) -> None:
    with edge_server(make_settings, http, max_open_connections=3) as served:
        port = port_of(served)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            deadline = time.monotonic() + 5
            while len(served.server.server_state.connections) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            refused, took = exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert took < 0.5
            status, error = error_of(refused)
            assert (status, error["code"]) == (503, "too_many_connections")
            assert b"\r\nretry-after: 1\r\n" in refused
        finally:
            idle.pop().close()
        try:
            deadline = time.monotonic() + 5
            while len(served.server.server_state.connections) >= 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            served_again, _ = exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert status_of(served_again) == 200
        finally:
            for sock in idle:
                sock.close()


def test_the_connection_cap_is_lowered_to_fit_the_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    settings = Settings(max_open_connections=512, max_connections=16)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        lowered = edge_limits(settings)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        kept = edge_limits(settings)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert lowered.max_open_connections == 256 - 16 - SPARE_DESCRIPTORS
    assert kept.max_open_connections == 512
