"""A client that leaves stops the generation upstream at once, and what it saw is remembered."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from tests.servers import Served, both_transports
from tests.settle import assert_settled, baseline_tasks


def send_raw_request(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> socket.socket:
    """POST /chat on a raw socket, so the test decides exactly when the connection goes."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    payload = msgspec.json.encode(body)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    sock.sendall(
        f"POST /chat HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n".encode()
        + f"{extra}Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


@both_transports
def test_stream_closes_upstream_when_client_disconnects(
    served: Served, client: httpx.Client, fake_ollama: FakeModel
) -> None:
    baseline = baseline_tasks(served)
    fake_ollama.script = Script(tokens=["t"] * 200, delay=0.05)
    with client.stream("POST", "/chat", json={"message": "hi", "stream": True}) as response:
        # Keep the iterator referenced: a discarded one is collected at once, and httpcore closes the
        # connection from its finalizer, before `left` below is taken.
        chunks = response.iter_raw()
        next(chunks)
        conversation = response.headers["x-conversation-id"]
        left = time.monotonic()
    closed = fake_ollama.wait_for_client_close(timeout=2, after=left)
    assert closed is not None
    assert closed - left < 0.2
    assert_settled(served, baseline, fake_ollama)
    store = served.runtime.store
    assert store is not None
    [_, reply] = served.call(lambda: store.history(conversation, "", 10))
    assert reply.interrupted
    fake_ollama.script = Script()
    client.post("/chat", json={"message": "next", "conversation_id": conversation})
    history = fake_ollama.chat_requests[-1]["messages"][1:-1]
    assert history[0] == {"role": "user", "content": "hi"}
    assert history[1]["role"] == "assistant"
    assert history[1]["content"].startswith("t")
    assert len(history[1]["content"]) < 200


@both_transports
@pytest.mark.parametrize(
    ("script", "stream"),
    [
        pytest.param(Script(stall_before_headers=True), True, id="stream-before-upstream-answers"),
        pytest.param(Script(stall_after=0), True, id="stream-before-first-token"),
        pytest.param(Script(stall_before_headers=True), False, id="json-before-upstream-answers"),
        pytest.param(Script(tokens=["t"] * 200, delay=0.05), False, id="json-while-generating"),
    ],
)
def test_upstream_closes_when_client_leaves_before_any_byte_is_sent(
    served: Served, fake_ollama: FakeModel, script: Script, stream: bool
) -> None:
    baseline = baseline_tasks(served)
    fake_ollama.script = script
    sock = send_raw_request(served.url, {"message": "hi", "stream": stream})
    assert fake_ollama.wait_for_requests(1, timeout=2)
    time.sleep(0.1)
    left = time.monotonic()
    sock.close()
    closed = fake_ollama.wait_for_client_close(timeout=2, after=left)
    assert closed is not None
    assert closed - left < 0.2
    assert_settled(served, baseline, fake_ollama)


@both_transports
def test_a_client_leaving_before_the_first_token_stores_nothing(server: str, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(stall_after=0)
    sock = send_raw_request(server, {"message": "hi", "stream": True, "conversation_id": "kept-empty"})
    assert fake_ollama.wait_for_requests(1, timeout=2)
    left = time.monotonic()
    sock.close()
    assert fake_ollama.wait_for_client_close(timeout=2, after=left) is not None
    fake_ollama.script = Script()
    with httpx.Client(base_url=server) as client:
        client.post("/chat", json={"message": "next", "conversation_id": "kept-empty"})
    assert [m["role"] for m in fake_ollama.chat_requests[-1]["messages"]] == ["system", "user"]


def test_a_queued_request_whose_client_leaves_is_dropped_from_the_queue(served: Served, fake_ollama: FakeModel) -> None:
    baseline = baseline_tasks(served)
    limiter = served.runtime.chat.limiter
    assert limiter is not None
    assert (limiter.max_active, limiter.max_waiting) == (1, 8)  # the defaults, sized for a Pi
    fake_ollama.script = Script(stall_after=0)
    running = send_raw_request(served.url, {"message": "first", "stream": True})
    assert fake_ollama.wait_for_requests(1, timeout=2)
    queued = [send_raw_request(served.url, {"message": f"queued {n}", "stream": n % 2 == 0}) for n in range(2)]
    deadline = time.monotonic() + 2
    while limiter.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (limiter.active, limiter.waiting) == (1, 2)
    for sock in queued:
        sock.close()
    while limiter.waiting and time.monotonic() < deadline + 2:
        time.sleep(0.01)
    assert (limiter.active, limiter.waiting) == (1, 0)
    running.close()
    assert_settled(served, baseline, fake_ollama)
    assert [body["messages"][-1]["content"] for body in fake_ollama.chat_requests] == ["first"]
