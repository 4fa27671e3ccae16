"""Back-pressure end to end: the generation slots and their queue, and the reply length cap."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.fakemodel import FakeModel, Script
from tests.bodies import error_body
from tests.settle import assert_settled, baseline_tasks
from tests.test_disconnects import send_raw_request


def wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of one Content-Length response read off a raw socket."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"content-length:")).split(b":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def test_past_the_queue_the_answer_is_503_busy_with_retry_after(serve_full: Any, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(stall_after=0)
    with serve_full(max_concurrent=1, max_queue=1) as served, httpx.Client(base_url=served.url) as client:
        baseline = baseline_tasks(served)
        limiter = served.runtime.chat.limiter
        assert limiter is not None
        running = send_raw_request(served.url, {"message": "running", "stream": True})
        assert fake_ollama.wait_for_requests(1, timeout=2)
        queued = send_raw_request(served.url, {"message": "queued"})
        wait_for(lambda: limiter.waiting == 1)
        for stream in (False, True):
            response = client.post("/chat", json={"message": "turned away", "stream": stream})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "busy"
            assert "1 generating and 1 waiting" in response.json()["error"]["message"]
            assert 1 <= int(response.headers["retry-after"]) <= 60
        fake_ollama.script = Script(tokens=["served", " at last"])
        running.close()  # frees the slot: the queued request goes upstream now
        assert fake_ollama.wait_for_requests(2, timeout=2)
        head, body = read_response(queued)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert msgspec.json.decode(body)["reply"] == "served at last"
        queued.close()
        assert_settled(served, baseline, fake_ollama)
    assert [body["messages"][-1]["content"] for body in fake_ollama.chat_requests] == ["running", "queued"]


def test_with_no_queue_a_second_generation_is_busy_at_once(serve_full: Any, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(stall_after=0)
    with serve_full(max_concurrent=1, max_queue=0) as served, httpx.Client(base_url=served.url) as client:
        running = send_raw_request(served.url, {"message": "running", "stream": True})
        assert fake_ollama.wait_for_requests(1, timeout=2)
        assert client.post("/chat", json={"message": "no room"}).status_code == 503
        running.close()
        fake_ollama.script = Script()
        wait_for(lambda: served.runtime.chat.limiter.active == 0)
        assert client.post("/chat", json={"message": "room again"}).status_code == 200


def test_two_slots_run_two_generations_side_by_side(serve_full: Any, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(stall_after=0)
    with serve_full(max_concurrent=2, max_queue=0) as served:
        first = send_raw_request(served.url, {"message": "one", "stream": True})
        second = send_raw_request(served.url, {"message": "two", "stream": True})
        assert fake_ollama.wait_for_requests(2, timeout=2)
        assert served.runtime.chat.limiter.active == 2
        first.close()
        second.close()


def test_an_agent_that_sets_its_own_length_is_not_given_the_default_cap(
    prompts_dir: Path, serve: Any, fake_ollama: FakeModel
) -> None:
    (prompts_dir / "essay.md").write_text("---\noptions:\n  num_predict: 4096\n---\nWrite long.\n", encoding="utf-8")
    with serve(max_tokens=256) as url, httpx.Client(base_url=url) as client:
        client.post("/chat", json={"message": "hi", "agent": "essay"})
        assert fake_ollama.chat_requests[-1]["options"] == {"num_predict": 4096}
        client.post("/chat", json={"message": "hi"})
        assert fake_ollama.chat_requests[-1]["options"] == {"num_predict": 256}
        client.post("/chat", json={"message": "hi", "options": {"max_tokens": 100}})
        assert fake_ollama.chat_requests[-1]["options"] == {"num_predict": 100}
        response = client.post("/chat", json={"message": "hi", "options": {"max_tokens": 257}})
        assert response.status_code == 422
        assert error_body(response)["error"] == {
            "code": "validation_error",
            "message": "max_tokens is 257; at most 256 are allowed - at `$.options.max_tokens`",
        }
    assert len(fake_ollama.chat_requests) == 3
