"""The OpenAI-compatible provider: the request it sends, the SSE it reads, every failure it translates.

Unit level with respx for faults a server cannot easily produce, and a real loopback fake server for the
wire (CRLF, comments, API keys).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import respx

from bench.fakemodel import FakeModel, Script
from piagent.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from piagent.providers.base import Completion, Message
from piagent.providers.common import ReplyLimits
from piagent.providers.openai import OpenAIProvider, openai_base
from piagent.providers.pool import UpstreamPool
from tests.upstream import Chunks, cut, openai_events

pytestmark = pytest.mark.anyio
URL = "http://llama.test:8080"
CHAT = f"{URL}/v1/chat/completions"
MESSAGES = [Message("system", "s"), Message("user", "hi")]
TRICKY = ["Grüß", " 🥧", "\u2028", "é€", "\u0085end", "data: [DONE]", "\r\n"]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def run(provider: OpenAIProvider, options: dict[str, object] | None = None) -> list[str | Completion]:
    return [item async for item in provider.stream_chat("m", MESSAGES, options or {})]


async def collect_into(received: list[object], provider: OpenAIProvider) -> None:
    """Iterate the reply, keeping what arrived before it failed."""
    async for item in provider.stream_chat("m", MESSAGES, {}):
        received.append(item)


@respx.mock
async def test_it_posts_a_streaming_request_asking_for_usage_with_openai_option_names(
    client: httpx.AsyncClient,
) -> None:
    route = respx.post(CHAT).mock(return_value=httpx.Response(200, content=openai_events(["Hi", "!"])))
    items = await run(
        OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL])),
        {"num_predict": 5, "temperature": 0.2, "num_ctx": 256, "stop": ["\n"], "top_k": 3, "num_thread": 2},
    )
    assert items == ["Hi", "!", Completion("stop", 5, 2)]
    request = route.calls.last.request
    assert msgspec.json.decode(request.content) == {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.2,
        "stop": ["\n"],
        "top_k": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert request.headers["accept"] == "text/event-stream"
    assert "authorization" not in request.headers


@respx.mock
async def test_an_api_key_is_sent_as_a_bearer_token_and_a_v1_suffix_is_not_doubled(client: httpx.AsyncClient) -> None:
    route = respx.post(CHAT).mock(return_value=httpx.Response(200, content=openai_events(["x"])))
    await run(OpenAIProvider(client, UpstreamPool.from_urls("openai", [openai_base(f"{URL}/v1/")]), api_key="sk-local"))
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-local"


@respx.mock
async def test_any_cut_of_the_upstream_bytes_gives_the_same_tokens(client: httpx.AsyncClient) -> None:
    # Every single position is covered at the splitter level (test_lines); here a stride keeps it quick.
    body = openai_events(TRICKY, end=b"\r\n")
    provider = OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL]))
    route = respx.post(CHAT)
    for position in range(0, len(body) + 1, 5):
        route.mock(return_value=httpx.Response(200, stream=Chunks(cut(body, [position, position + 5]))))
        assert await run(provider) == [*TRICKY, Completion("stop", 5, len(TRICKY))], position


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(openai_events(["a"], usage=None), Completion("stop", 0, 0), id="no-usage-chunk"),
        pytest.param(openai_events(["a"], finish_reason="length"), Completion("length", 5, 1), id="length"),
        pytest.param(openai_events(["a"], done=False), Completion("stop", 5, 1), id="no-done-after-finish"),
        pytest.param(
            b": ping\n\nevent: message\nid: 7\nretry: 10\ndata:" + openai_events(["a"])[6:],
            Completion("stop", 5, 1),
            id="comments-fields-and-no-space-after-data",
        ),
    ],
)
@respx.mock
async def test_usage_and_finish_reason_are_read_as_the_server_sends_them(
    client: httpx.AsyncClient, body: bytes, expected: Completion
) -> None:
    respx.post(CHAT).mock(return_value=httpx.Response(200, content=body))
    assert await run(OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL]))) == ["a", expected]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            openai_events(["a"]).split(b"\n\n")[1] + b'\n\ndata: {"error":{"message":"out of memory","code":500}}\n\n',
            "openai: out of memory",
            id="error-object",
        ),
        pytest.param(b'data: {"error":"context full"}\n\n', "openai: context full", id="error-string"),
        pytest.param(b"data: {nope}\n\n", "not valid JSON", id="invalid-json"),
        pytest.param(b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n', "not valid JSON", id="not-utf8"),
        pytest.param(b'{"choices":[]}\n', "JSON where server-sent events were expected", id="not-sse"),
        pytest.param(openai_events(["a"]).split(b"\n\n")[1] + b"\n\n", "before the reply was done", id="cut-short"),
        pytest.param(b"", "before the reply was done", id="empty"),
    ],
)
@respx.mock
async def test_a_broken_stream_is_an_upstream_error(client: httpx.AsyncClient, body: bytes, message: str) -> None:
    respx.post(CHAT).mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(UpstreamError, match=message) as caught:
        await run(OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL])))
    assert type(caught.value) is UpstreamError


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        pytest.param(
            401,
            b'{"error":{"message":"Invalid API key","type":"invalid_request_error","code":401}}',
            UpstreamError,
            "openai: Invalid API key (HTTP 401)",
            id="401",
        ),
        pytest.param(
            404,
            b'{"error":{"message":"model not found"}}',
            UpstreamError,
            "openai: model not found (HTTP 404)",
            id="404",
        ),
        pytest.param(
            422,
            b'{"detail":[{"loc":["body","messages"],"msg":"field required"}]}',
            UpstreamError,
            "field required",
            id="fastapi-422",
        ),
        pytest.param(429, b'{"error":{"message":"slow down"}}', UpstreamUnavailable, "slow down (HTTP 429)", id="429"),
        pytest.param(503, b"Service Unavailable", UpstreamUnavailable, "Service Unavailable (HTTP 503)", id="503-text"),
    ],
)
@respx.mock
async def test_an_error_status_carries_the_upstream_message(
    client: httpx.AsyncClient, status: int, body: bytes, error: type[Exception], message: str
) -> None:
    respx.post(CHAT).mock(return_value=httpx.Response(status, content=body))
    with pytest.raises(error) as caught:
        await run(OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL])))
    assert type(caught.value) is error
    assert message in str(caught.value)
    assert "llama.test" not in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        pytest.param(httpx.ConnectError("refused"), UpstreamUnavailable, "openai is unreachable", id="refused"),
        pytest.param(
            httpx.ConnectTimeout("slow"), UpstreamUnavailable, "did not accept a connection", id="connect-timeout"
        ),
        pytest.param(httpx.ReadTimeout("slow"), UpstreamTimeout, "did not start its reply within", id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("reset"), UpstreamError, "broke the connection", id="reset"),
    ],
)
@respx.mock
async def test_transport_failures_become_named_upstream_errors(
    client: httpx.AsyncClient, fault: Exception, error: type[Exception], message: str
) -> None:
    respx.post(CHAT).mock(side_effect=fault)
    with pytest.raises(error, match=message) as caught:
        await run(OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL])))
    assert type(caught.value) is error
    assert caught.value.__cause__ is fault


class _FailingStream(httpx.AsyncByteStream):
    """A body that sends one event, then fails the way a dropped connection does."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield openai_events(["a"]).split(b"\n\n")[1] + b"\n\n"
        raise httpx.ReadError("connection reset by peer")


@respx.mock
async def test_a_transport_failure_mid_stream_is_translated_too(client: httpx.AsyncClient) -> None:
    respx.post(CHAT).mock(return_value=httpx.Response(200, stream=_FailingStream()))
    received: list[object] = []
    with pytest.raises(UpstreamError, match="openai broke the connection \\(ReadError\\)"):
        await collect_into(received, OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL])))
    assert received == ["a"]


@respx.mock
async def test_a_line_over_the_cap_is_an_upstream_error(client: httpx.AsyncClient) -> None:
    huge = b'data: {"choices":[{"delta":{"content":"' + b"x" * 5000 + b'"}}]}\n\n'
    respx.post(CHAT).mock(return_value=httpx.Response(200, content=huge))
    with pytest.raises(UpstreamError, match="longer than 4096 bytes"):
        await run(OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL]), ReplyLimits(max_line_bytes=4096)))


@respx.mock
async def test_check_asks_for_the_model_list_and_reports_the_failure(client: httpx.AsyncClient) -> None:
    route = respx.get(f"{URL}/v1/models")
    provider = OpenAIProvider(client, UpstreamPool.from_urls("openai", [URL]), api_key="k")
    (upstream,) = provider.upstreams
    route.mock(return_value=httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]}))
    health = await provider.check(upstream)
    assert (health.name, health.status, health.version, health.in_flight) == ("openai", "ok", None, 0)
    assert route.calls.last.request.headers["authorization"] == "Bearer k"
    route.mock(return_value=httpx.Response(401, json={"error": {"message": "Invalid API key"}}))
    assert (await provider.check(upstream)).error == "openai: Invalid API key (HTTP 401)"
    route.mock(side_effect=httpx.ConnectError("refused"))
    health = await provider.check(upstream)
    assert (health.status, health.error) == (
        "unavailable",
        "openai is unreachable (connection refused or no route); is it running?",
    )


# ---------------------------------------------------------------- over a real loopback server


@pytest.fixture
def fake_openai() -> AsyncIterator[FakeModel]:  # type: ignore[misc]
    with FakeModel(models=["fake-model"]) as fake:
        yield fake
    assert fake.errors == [], "the fake OpenAI server itself failed"


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(Script(tokens=["a", "\u2028", "c"]), id="plain"),
        pytest.param(Script(tokens=["a", "\u2028", "c"], crlf=True), id="crlf"),
        pytest.param(Script(tokens=["a", "\u2028", "c"], comments=True, crlf=True), id="comments"),
    ],
)
async def test_it_streams_from_a_real_server_as_each_token_is_sent(fake_openai: FakeModel, script: Script) -> None:
    fake_openai.script = script
    async with httpx.AsyncClient() as http:
        items = await run(OpenAIProvider(http, UpstreamPool.from_urls("openai", [fake_openai.url])))
    assert items == ["a", "\u2028", "c", Completion("stop", 7, 3)]


async def test_a_server_that_sends_no_usage_gives_zero_counts(fake_openai: FakeModel) -> None:
    fake_openai.script = Script(tokens=["a"], usage=False, done_reason="length")
    async with httpx.AsyncClient() as http:
        assert await run(OpenAIProvider(http, UpstreamPool.from_urls("openai", [fake_openai.url]))) == [
            "a",
            Completion("length", 0, 0),
        ]


async def test_a_server_wanting_a_key_answers_401_without_it_and_streams_with_it(fake_openai: FakeModel) -> None:
    fake_openai.api_key = "sk-test"
    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError, match=r"openai: Invalid API key \(HTTP 401\)"):
            await run(OpenAIProvider(http, UpstreamPool.from_urls("openai", [fake_openai.url])))
        assert await run(
            OpenAIProvider(http, UpstreamPool.from_urls("openai", [fake_openai.url]), api_key="sk-test")
        ) == [
            "Hello",
            ",",
            " world",
            "!",
            Completion("stop", 7, 4),
        ]


async def test_a_mid_stream_error_event_from_a_real_server(fake_openai: FakeModel) -> None:
    fake_openai.script = Script(tokens=["a", "b", "c"], error_after=2, error="KV cache full")
    received: list[object] = []
    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError, match="openai: KV cache full"):
            await collect_into(received, OpenAIProvider(http, UpstreamPool.from_urls("openai", [fake_openai.url])))
    assert received == ["a", "b"]


async def test_the_connection_goes_back_to_the_pool_for_the_next_request(fake_openai: FakeModel) -> None:
    fake_openai.script = Script(tokens=["a", "b"])
    async with httpx.AsyncClient() as http:
        provider = OpenAIProvider(http, UpstreamPool.from_urls("openai", [fake_openai.url]))
        for _ in range(3):
            assert await run(provider) == ["a", "b", Completion("stop", 7, 2)]
    assert fake_openai.connection_count == 1


@pytest.mark.parametrize(
    ("script", "message"),
    [
        pytest.param(Script(stall_before_headers=True), "openai did not start its reply within 0.3 s", id="first"),
        pytest.param(
            Script(tokens=["a", "b"], stall_after=1), "openai went silent for 0.5 s after starting", id="idle"
        ),
    ],
)
async def test_first_token_and_idle_timeouts_are_told_apart(
    fake_openai: FakeModel, script: Script, message: str
) -> None:
    fake_openai.script = script
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5, connect=2)) as http:
        with pytest.raises(UpstreamTimeout, match=message):
            await run(
                OpenAIProvider(
                    http, UpstreamPool.from_urls("openai", [fake_openai.url]), ReplyLimits(first_token_timeout=0.3)
                )
            )
