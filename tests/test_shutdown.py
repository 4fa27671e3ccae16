"""Graceful shutdown: stop accepting, let generations finish within the grace period, end the rest cleanly."""

from __future__ import annotations

import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from piagent.server import build_server
from tests.conftest import MakeSettings
from tests.servers import free_port, serve_app, start_piagent, wait_until_serving
from tests.test_cli import base_env

LONG = Script(tokens=["t"] * 400, delay=0.05)  # 20 s: far past any grace period here
SHORT = Script(tokens=["a", "b", "c"], delay=0.2)  # still running when the drain starts, done well within it
REQUEST_ID = "shutdown-1"


def read_stream(url: str, body: dict[str, Any], accept: str) -> tuple[str, float, str | None]:
    """POST /chat and read to the end: (what arrived, when it ended, the transport error if any)."""
    received: list[bytes] = []
    error = None
    with httpx.Client(timeout=30) as client:
        try:
            headers = {"Accept": accept, "X-Request-Id": REQUEST_ID}
            with client.stream("POST", f"{url}/chat", json=body, headers=headers) as response:
                assert response.status_code == 200
                assert response.headers["x-request-id"] == REQUEST_ID
                received.extend(response.iter_raw())
        except httpx.RemoteProtocolError as exc:
            error = type(exc).__name__
    return b"".join(received).decode(), time.monotonic(), error


def events(text: str) -> list[dict[str, Any]]:
    if text.startswith("event:"):
        return [msgspec.json.decode(block.split("data: ", 1)[1]) for block in text.strip().split("\n\n")]
    return [msgspec.json.decode(line) for line in text.splitlines()]


def test_on_shutdown_the_queue_is_refused_and_long_replies_are_ended_after_the_grace_period(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = SHORT
    fake_ollama.scripts = {"pirate-model": LONG}
    app = create_app(make_settings(max_concurrent=3, max_queue=2))
    with (
        serve_app(app, server_class=lambda config: build_server(config, grace=1.5)) as served,
        ThreadPoolExecutor(4) as pool,
    ):
        sse = pool.submit(
            read_stream, served.url, {"message": "long", "agent": "pirate", "stream": True}, "text/event-stream"
        )
        plain = pool.submit(
            read_stream, served.url, {"message": "long", "agent": "pirate", "stream": True}, "text/plain"
        )
        assert fake_ollama.wait_for_requests(2, timeout=3)
        limiter = served.runtime.chat.limiter
        client = served.runtime.client
        short = pool.submit(read_stream, served.url, {"message": "short", "stream": True}, "application/x-ndjson")
        assert fake_ollama.wait_for_requests(3, timeout=3)
        queued = pool.submit(httpx.post, f"{served.url}/chat", json={"message": "queued"}, timeout=30)
        deadline = time.monotonic() + 3
        while limiter.waiting == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)

        served.server.should_exit = True  # what uvicorn's SIGTERM handler does
        stopped = time.monotonic()

        refused = queued.result(timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        short_text, _, short_error = short.result(timeout=10)
        assert short_error is None
        assert events(short_text)[-1]["event"] == "done"  # finished within the grace period
        sse_text, sse_ended, sse_error = sse.result(timeout=10)
        assert sse_error is None  # a complete response, whose last event says why it stopped
        *tokens, last = events(sse_text)
        assert tokens
        assert all(token == {"event": "token", "text": "t"} for token in tokens)
        assert last == {
            "event": "error",
            "code": "shutting_down",
            "message": "piagent is shutting down; the reply was ended after the grace period",
            "request_id": REQUEST_ID,
        }
        assert 1.5 <= sse_ended - stopped < 3.5
        plain_text, _, plain_error = plain.result(timeout=10)
        assert plain_error == "RemoteProtocolError"  # plain text: an incomplete transfer
        assert set(plain_text) == {"t"}
        served.thread.join(timeout=10)
        assert not served.thread.is_alive()
    assert client.is_closed  # the lifespan closed the upstream client after the generations ended
    assert fake_ollama.wait_for_open_connections(0, timeout=3)
    assert (limiter.active, limiter.waiting) == (0, 0)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_sigterm_stops_accepting_finishes_or_ends_replies_and_exits(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    fake_ollama.script = SHORT
    fake_ollama.scripts = {"pirate-model": LONG}
    port = free_port()
    env = base_env(
        prompts_dir,
        PIAGENT_PORT=str(port),
        PIAGENT_OLLAMA_URL=fake_ollama.url,
        PIAGENT_SHUTDOWN_GRACE="1.5",
        PIAGENT_MAX_CONCURRENT="2",
    )
    process = start_piagent(env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(
                read_stream, url, {"message": "long", "agent": "pirate", "stream": True}, "text/event-stream"
            )
            assert fake_ollama.wait_for_requests(1, timeout=5)
            short = pool.submit(read_stream, url, {"message": "short", "stream": True}, "text/event-stream")
            assert fake_ollama.wait_for_requests(2, timeout=5)
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            deadline = signalled + 2
            while True:  # the listening socket closes at once
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except ConnectionRefusedError:
                    break
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.05)
            assert events(short.result(timeout=10)[0])[-1]["event"] == "done"
            long_text, long_ended, long_error = long.result(timeout=10)
        assert long_error is None
        assert events(long_text)[-1]["code"] == "shutting_down"
        assert 1.5 <= long_ended - signalled < 4.5
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # uvicorn re-raises the signal it caught once shut down cleanly, as process managers expect.
    assert process.returncode == -signal.SIGTERM
    assert "Draining 2 generation(s)" in output, output
    assert "Application shutdown complete." in output
    assert "Traceback" not in output
    assert "Exception in ASGI application" not in output
    assert fake_ollama.wait_for_open_connections(0, timeout=3)
