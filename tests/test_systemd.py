"""systemd notifications: READY once serving, STOPPING on SIGTERM, watchdog pings from the event loop."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent import create_app
from piagent.server import build_server
from piagent.systemd import Notifier, watchdog_interval
from tests.conftest import MakeSettings
from tests.servers import free_port, serve_app, start_piagent
from tests.test_cli import base_env


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for systemd's, and its NOTIFY_SOCKET spelling (a path, or `@name`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # short: a socket path has at most 107 bytes
        if request.param == "path":
            address = f"{folder}/notify"
            sock.bind(address)
        else:
            address = f"@piagent-test-{os.getpid()}-{time.monotonic_ns()}"
            sock.bind("\0" + address[1:])
        try:
            yield address, sock
        finally:
            sock.close()


def receive(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """The next datagram and when it arrived (monotonic)."""
    sock.settimeout(timeout)
    data = sock.recv(4096)
    return data, time.monotonic()


def drain(sock: socket.socket) -> list[bytes]:
    """The datagrams already waiting, so that the next ones are timed as they are sent."""
    waiting = []
    sock.setblocking(False)
    try:
        while True:
            waiting.append(sock.recv(4096))
    except BlockingIOError:
        return waiting


def test_piagent_tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    address, sock = notify_socket
    port = free_port()
    env = base_env(
        prompts_dir,
        PIAGENT_PORT=str(port),
        PIAGENT_OLLAMA_URL=fake_ollama.url,
        NOTIFY_SOCKET=address,
        WATCHDOG_USEC="400000",  # a ping every 0.2 s
    )
    process = start_piagent(env, tmp_path)
    try:
        ready, _ = receive(sock, 30)
        assert ready == b"READY=1"
        # Ready means serving: the very first request after it is answered.
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        assert set(drain(sock)) <= {b"WATCHDOG=1"}
        pings = [receive(sock, 5) for _ in range(8)]
        assert {data for data, _ in pings} == {b"WATCHDOG=1"}
        gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(pings)]
        assert 0.15 < sum(gaps) / len(gaps) < 0.3, gaps
        process.send_signal(signal.SIGTERM)
        received = []
        while (data := receive(sock, 10)[0]) != b"STOPPING=1":
            received.append(data)
        assert set(received) <= {b"WATCHDOG=1"}
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGTERM
    assert "Traceback" not in output


def test_without_notify_socket_or_with_another_pids_watchdog_nothing_is_pinged() -> None:
    assert Notifier.from_env({}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_a_blocked_event_loop_stops_the_watchdog_pings(
    make_settings: MakeSettings, notify_socket: tuple[str, socket.socket]
) -> None:
    address, sock = notify_socket
    notifier = Notifier(address)
    try:
        app = create_app(make_settings())
        with serve_app(app, server_class=lambda config: build_server(config, 1.0, notifier, 0.05)) as served:
            assert receive(sock, 5)[0] == b"READY=1"
            receive(sock, 5)
            drain(sock)
            blocked = time.monotonic()
            served.loop.call_soon_threadsafe(time.sleep, 1.0)  # the loop is stuck for a second
            arrivals = [receive(sock, 5)[1] for _ in range(5)]
        assert arrivals[0] - blocked > 0.9  # no ping while the loop was blocked
        assert all(later - earlier < 0.5 for earlier, later in itertools.pairwise(arrivals))
    finally:
        notifier.close()
