"""Several upstream URLs for one provider: least busy first, a refusing one skipped and cooled off, each reported."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from bench.fakemodel import FakeModel, Script
from piagent.exceptions import UpstreamError, UpstreamUnavailable
from piagent.providers.base import Completion, Message, Timings
from piagent.providers.ollama import OllamaProvider
from piagent.providers.pool import UpstreamPool
from tests.bodies import error_body
from tests.upstream import ollama_lines

A, B, C = "http://a.test:11434", "http://b.test:11434", "http://c.test:11434"
MESSAGES = [Message("user", "hi")]
FAKE_TIMINGS = Timings(1000, 1000, 5000)  # the durations the fake Ollama reports


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def names(pool: UpstreamPool) -> list[str]:
    return [upstream.name for upstream in pool.candidates()]


def test_one_url_keeps_the_plain_name_several_are_numbered_in_order() -> None:
    assert [u.name for u in UpstreamPool.from_urls("ollama", [A]).upstreams] == ["ollama"]
    assert [(u.name, u.url) for u in UpstreamPool.from_urls("ollama", [A, f"{B}/"]).upstreams] == [
        ("ollama#1", A),
        ("ollama#2", B),
    ]


def test_idle_upstreams_take_turns_and_the_least_busy_goes_first() -> None:
    pool = UpstreamPool.from_urls("ollama", [A, B, C], clock=Clock())
    assert [names(pool)[0] for _ in range(4)] == ["ollama#1", "ollama#2", "ollama#3", "ollama#1"]
    first, second, third = pool.upstreams
    first.in_flight, second.in_flight, third.in_flight = 2, 0, 1
    assert names(pool) == ["ollama#2", "ollama#3", "ollama#1"]


def test_a_refusing_upstream_goes_last_until_its_cool_off_ends() -> None:
    clock = Clock()
    pool = UpstreamPool.from_urls("ollama", [A, B], cooloff=5, clock=clock)
    first, second = pool.upstreams
    second.in_flight = 10
    pool.mark_down(first)
    assert pool.is_down(first)
    assert [names(pool)[0] for _ in range(3)] == ["ollama#2"] * 3
    clock.now += 5.01
    assert not pool.is_down(first)
    assert names(pool)[0] == "ollama#1"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def run(provider: OllamaProvider) -> list[str | Completion]:
    return [item async for item in provider.stream_chat("m", MESSAGES, {})]


@pytest.mark.anyio
@respx.mock
async def test_a_refused_connection_is_retried_on_the_next_upstream_and_cooled_off(client: httpx.AsyncClient) -> None:
    clock = Clock()
    pool = UpstreamPool.from_urls("ollama", [A, B], cooloff=5, clock=clock)
    refused = respx.post(f"{A}/api/chat").mock(side_effect=httpx.ConnectError("refused"))
    answered = respx.post(f"{B}/api/chat").mock(return_value=httpx.Response(200, content=ollama_lines(["ok"])))
    provider = OllamaProvider(client, pool)
    for _ in range(3):
        assert await run(provider) == ["ok", Completion("stop", 5, 1)]
    # Tried once, then skipped for the cool-off, whatever the turn says.
    assert (refused.call_count, answered.call_count) == (1, 3)
    clock.now += 6
    for _ in range(2):  # idle upstreams take turns, so one of the next two requests tries it again
        assert await run(provider) == ["ok", Completion("stop", 5, 1)]
    assert refused.call_count == 2
    assert [upstream.in_flight for upstream in pool.upstreams] == [0, 0]


@pytest.mark.anyio
@respx.mock
async def test_when_every_upstream_refuses_the_error_names_them_all(client: httpx.AsyncClient) -> None:
    respx.post(f"{A}/api/chat").mock(side_effect=httpx.ConnectError("refused"))
    respx.post(f"{B}/api/chat").mock(side_effect=httpx.ConnectTimeout("slow"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [A, B])))
    assert caught.value.message == (
        "ollama: none of its 2 upstreams accepted a connection (ollama#1, ollama#2); are they running?"
    )
    assert "a.test" not in caught.value.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"side_effect": httpx.ReadTimeout("slow")}, id="timeout-after-sending"),
        pytest.param({"side_effect": httpx.RemoteProtocolError("reset")}, id="reset-after-sending"),
        pytest.param({"return_value": httpx.Response(500, json={"error": "boom"})}, id="error-status"),
    ],
)
@respx.mock
async def test_a_failure_after_the_request_was_sent_is_not_retried_elsewhere(
    client: httpx.AsyncClient, answer: dict[str, Any]
) -> None:
    # Only a refused connection proves the request never arrived; anything later might have run it.
    pool = UpstreamPool.from_urls("ollama", [A, B], clock=Clock())
    first = respx.post(f"{A}/api/chat").mock(**answer)
    second = respx.post(f"{B}/api/chat").mock(return_value=httpx.Response(200, content=ollama_lines(["ok"])))
    with pytest.raises(UpstreamError, match="ollama#1"):
        await run(OllamaProvider(client, pool))
    assert (first.call_count, second.call_count) == (1, 0)
    assert [upstream.in_flight for upstream in pool.upstreams] == [0, 0]
    assert not pool.is_down(pool.upstreams[0])


@pytest.mark.anyio
@respx.mock
async def test_a_stream_counts_as_in_flight_until_it_ends_or_is_closed(client: httpx.AsyncClient) -> None:
    respx.post(f"{A}/api/chat").mock(return_value=httpx.Response(200, content=ollama_lines(["a", "b"])))
    provider = OllamaProvider(client, UpstreamPool.from_urls("ollama", [A]))
    (upstream,) = provider.upstreams
    replies = provider.stream_chat("m", MESSAGES, {})
    assert await replies.__anext__() == "a"
    assert upstream.in_flight == 1
    await replies.aclose()
    assert upstream.in_flight == 0


# ---------------------------------------------------------------- end to end, two real fake Ollamas


@pytest.fixture
def second_ollama() -> Any:
    with FakeModel() as fake:
        yield fake
    assert fake.errors == []


def test_a_second_request_goes_to_the_upstream_that_is_not_busy(
    serve: Any, fake_ollama: FakeModel, second_ollama: FakeModel
) -> None:
    slow = Script(tokens=["s"] * 6, delay=0.1)
    fake_ollama.script = second_ollama.script = slow
    with (
        serve(ollama_url=f"{fake_ollama.url},{second_ollama.url}") as url,
        httpx.Client(base_url=url) as client,
        client.stream("POST", "/chat", json={"message": "one", "stream": True}) as first,
    ):
        chunks = first.iter_raw()
        assert next(chunks) == b"s"
        busy = fake_ollama if fake_ollama.chat_requests else second_ollama
        idle = second_ollama if busy is fake_ollama else fake_ollama
        assert len(busy.chat_requests) == 1
        health = client.get("/health", params={"deep": "1"}).json()
        assert sorted((u["name"], u["in_flight"]) for u in health["upstreams"]) == [
            ("ollama#1", int(busy is fake_ollama)),
            ("ollama#2", int(busy is second_ollama)),
        ]
        second = client.post("/chat", json={"message": "two"})
        assert second.json()["reply"] == "ssssss"
        assert (len(busy.chat_requests), len(idle.chat_requests)) == (1, 1)
        assert b"".join(chunks) == b"sssss"


def test_requests_keep_working_when_one_upstream_refuses_and_health_names_it(
    serve: Any, fake_ollama: FakeModel
) -> None:
    with serve(ollama_url=f"http://127.0.0.1:9,{fake_ollama.url}") as url, httpx.Client(base_url=url) as client:
        replies = [client.post("/chat", json={"message": "hi"}) for _ in range(4)]
        assert [r.status_code for r in replies] == [200] * 4
        assert len(fake_ollama.chat_requests) == 4
        response = client.get("/health", params={"deep": "1"})
    assert response.status_code == 503
    body = error_body(response)
    assert body["status"] == "degraded"
    assert [(u["name"], u["status"]) for u in body["upstreams"]] == [("ollama#1", "unavailable"), ("ollama#2", "ok")]
    assert body["error"] == {
        "code": "upstream_unavailable",
        "message": "ollama#1 is unreachable (connection refused or no route); is it running?",
    }
    assert "127.0.0.1" not in response.text


def test_concurrent_streams_spread_over_the_upstreams(
    serve: Any, fake_ollama: FakeModel, second_ollama: FakeModel
) -> None:
    fake_ollama.script = second_ollama.script = Script(tokens=["t"] * 4, delay=0.05)
    results: list[str] = []

    def ask(url: str) -> None:
        results.append(httpx.post(f"{url}/chat", json={"message": "hi", "stream": True}, timeout=10).text)

    with serve(ollama_url=f"{fake_ollama.url},{second_ollama.url}") as url:
        threads = [threading.Thread(target=ask, args=(url,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert results == ["tttt"] * 6
    assert (len(fake_ollama.chat_requests), len(second_ollama.chat_requests)) == (3, 3)


@pytest.mark.anyio
async def test_the_connection_goes_back_to_the_pool_for_the_next_request(fake_ollama: FakeModel) -> None:
    async with httpx.AsyncClient() as http:
        provider = OllamaProvider(http, UpstreamPool.from_urls("ollama", [fake_ollama.url]))
        for _ in range(3):
            assert await run(provider) == ["Hello", ",", " world", "!", Completion("stop", 7, 4, FAKE_TIMINGS)]
    assert fake_ollama.connection_count == 1
