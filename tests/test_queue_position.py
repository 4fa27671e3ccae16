"""A streaming client waiting for a generation slot is told its place (`queued` events) as it moves up."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from piagent.exceptions import Busy, ShuttingDown
from piagent.generations import GenerationLimiter
from tests.settle import assert_settled, baseline_tasks
from tests.test_disconnects import send_raw_request
from tests.test_limits import wait_for

NDJSON = {"Accept": "application/x-ndjson"}
SSE = {"Accept": "text/event-stream"}


class Reader:
    """A streamed /chat read line by line in a thread; the test takes the events as they come."""

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.status: int | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, body, headers), daemon=True)
        self._thread.start()

    def _read(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        try:
            with httpx.stream("POST", f"{url}/chat", json=body, headers=headers, timeout=20) as response:
                self.status = response.status_code
                self.ready.set()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line:
                        self.lines.put(line)
        finally:
            self.ready.set()
            self.lines.put(None)

    def next_event(self) -> dict[str, Any]:
        """The next event's JSON (an SSE `data:` line or an NDJSON line)."""
        while True:
            line = self.lines.get(timeout=10)
            assert line is not None, "the stream ended"
            if line.startswith("event: "):
                continue
            event: dict[str, Any] = msgspec.json.decode(line.removeprefix("data: "))
            return event

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def readers() -> Iterator[list[Reader]]:
    opened: list[Reader] = []
    yield opened
    for reader in opened:
        reader.close()


def test_a_waiting_stream_is_told_its_place_as_it_moves_up(
    serve_full: Any, fake_ollama: FakeModel, readers: list[Reader]
) -> None:
    fake_ollama.script = Script(stall_after=0)
    with serve_full(max_concurrent=1, max_queue=3) as served:
        baseline = baseline_tasks(served)
        limiter = served.runtime.chat.limiter
        running = send_raw_request(served.url, {"message": "running", "stream": True})
        assert fake_ollama.wait_for_requests(1, timeout=5)
        # The first in line leaves the queue by closing its connection (a raw socket: the test decides when).
        first = send_raw_request(served.url, {"message": "first", "stream": True}, NDJSON)
        wait_for(lambda: limiter.waiting == 1)
        second = Reader(served.url, {"message": "second", "stream": True}, SSE)
        readers.append(second)
        assert second.next_event() == {"event": "queued", "position": 2, "ahead": 1}
        assert second.status == 200  # committed with the queued event: it was admitted to the queue
        third = Reader(served.url, {"message": "third", "stream": True}, NDJSON)
        readers.append(third)
        assert third.next_event() == {"event": "queued", "position": 3, "ahead": 2}

        first.close()  # out of the queue: both move up
        assert second.next_event() == {"event": "queued", "position": 1, "ahead": 0}
        assert third.next_event() == {"event": "queued", "position": 2, "ahead": 1}

        fake_ollama.script = Script(tokens=["served"])
        running.close()  # the slot goes to the second; the third moves up again
        assert third.next_event() == {"event": "queued", "position": 1, "ahead": 0}
        assert second.next_event() == {"event": "token", "text": "served"}
        assert second.next_event()["event"] == "done"
        assert third.next_event() == {"event": "token", "text": "served"}
        assert third.next_event()["event"] == "done"
        wait_for(lambda: limiter.active == 0)
        assert_settled(served, baseline, fake_ollama)
    asked = [body["messages"][-1]["content"] for body in fake_ollama.chat_requests]
    assert asked == ["running", "second", "third"]


def test_a_full_queue_is_still_a_real_503_and_plain_text_and_other_doors_wait_silently(
    serve_full: Any, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = Script(stall_after=0)
    with serve_full(max_concurrent=1, max_queue=1) as served, httpx.Client(base_url=served.url) as client:
        limiter = served.runtime.chat.limiter
        running = send_raw_request(served.url, {"message": "running", "stream": True})
        assert fake_ollama.wait_for_requests(1, timeout=5)
        plain = send_raw_request(served.url, {"message": "plain", "stream": True})
        wait_for(lambda: limiter.waiting == 1)
        plain.settimeout(0.3)
        with pytest.raises(TimeoutError):  # plain text has no queued event: nothing, not even a status yet
            plain.recv(1)
        for headers in (NDJSON, SSE):
            refused = client.post("/chat", json={"message": "no room", "stream": True}, headers=headers)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "busy"
        plain.close()
        running.close()


@pytest.mark.anyio
async def test_the_limiter_wakes_a_follower_on_each_move_up_until_it_holds_the_slot() -> None:
    limiter = GenerationLimiter(1, 3)
    held = limiter.enter()
    assert held.granted
    first, second = limiter.enter(), limiter.enter()
    assert (limiter.ahead(first), limiter.ahead(second)) == (0, 1)
    moves: list[int | None] = []

    async def follow() -> None:
        ahead = limiter.ahead(second)
        while ahead is not None:
            moves.append(ahead)
            ahead = await limiter.wait(second, moves=True)
        moves.append(None)

    async with anyio.create_task_group() as group:
        group.start_soon(follow)
        await anyio.wait_all_tasks_blocked()
        limiter.leave(first)  # the first gives up its place
        await anyio.wait_all_tasks_blocked()
        limiter.release(limiter.now())  # the slot goes to the second
    assert moves == [1, 0, None]
    for _ in range(3):
        limiter.enter()
    with pytest.raises(Busy):
        limiter.enter()


async def wait_last_for(limiter: GenerationLimiter, ticket: Any, refused: list[BaseException]) -> None:
    try:
        await limiter.wait(ticket, moves=True)
    except ShuttingDown as exc:
        refused.append(exc)


@pytest.mark.anyio
async def test_draining_refuses_a_waiter_that_follows_its_place() -> None:
    limiter = GenerationLimiter(1, 2)
    limiter.enter()
    waiting = limiter.enter()
    refused: list[BaseException] = []
    async with anyio.create_task_group() as group:
        group.start_soon(wait_last_for, limiter, waiting, refused)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0.5):
            await limiter.drain(0.0)
    assert [exc.code for exc in refused] == ["shutting_down"]  # type: ignore[attr-defined]
