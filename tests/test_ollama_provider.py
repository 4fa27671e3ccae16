"""The Ollama provider at the unit level (respx): the request it sends and every failure it translates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
import respx

from piagent.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from piagent.providers.base import Completion, Message
from piagent.providers.common import ReplyLimits
from piagent.providers.ollama import OllamaProvider
from piagent.providers.pool import UpstreamPool
from tests.upstream import Chunks, cut, ollama_lines

pytestmark = pytest.mark.anyio
URL = "http://ollama.test:11434"
MESSAGES = [Message("system", "s"), Message("user", "hi")]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def run(provider: OllamaProvider, options: dict[str, object] | None = None) -> list[str | Completion]:
    return [item async for item in provider.stream_chat("m", MESSAGES, options or {})]


@respx.mock
async def test_it_posts_the_messages_and_maps_options_to_ollama_names(client: httpx.AsyncClient) -> None:
    route = respx.post(f"{URL}/api/chat").mock(return_value=httpx.Response(200, content=ollama_lines(["Hi", "!"])))
    provider = OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL]), keep_alive="-1")
    items = await run(provider, {"max_tokens": 5, "temperature": 0.2, "num_ctx": 256})
    assert items == ["Hi", "!", Completion("stop", 5, 2)]
    sent = msgspec.json.decode(route.calls.last.request.content)
    assert sent == {
        "model": "m",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"num_predict": 5, "temperature": 0.2, "num_ctx": 256},
        "keep_alive": -1.0,
    }


@respx.mock
async def test_keep_alive_durations_and_no_options_are_sent_as_ollama_reads_them(client: httpx.AsyncClient) -> None:
    route = respx.post(f"{URL}/api/chat").mock(return_value=httpx.Response(200, content=ollama_lines([])))
    await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL]), keep_alive="10m"))
    sent = msgspec.json.decode(route.calls.last.request.content)
    assert sent["keep_alive"] == "10m"
    assert "options" not in sent
    await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL])))
    assert "keep_alive" not in msgspec.json.decode(route.calls.last.request.content)


@respx.mock
async def test_any_cut_of_the_upstream_bytes_gives_the_same_tokens(client: httpx.AsyncClient) -> None:
    tokens = ["Grüß", " 🥧", "\u2028", "é€", "\u0085end"]
    body = ollama_lines(tokens)
    provider = OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL]))
    route = respx.post(f"{URL}/api/chat")
    for position in range(len(body) + 1):
        route.mock(return_value=httpx.Response(200, stream=Chunks(cut(body, [position, position + 3]))))
        assert await run(provider) == [*tokens, Completion("stop", 5, len(tokens))], position


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        pytest.param(
            404, b'{"error":"model \'m\' not found"}', UpstreamError, "ollama: model 'm' not found (HTTP 404)", id="404"
        ),
        pytest.param(
            500, b'{"error":"model requires more system memory"}', UpstreamError, "more system memory", id="500"
        ),
        pytest.param(503, b'{"error":"server busy"}', UpstreamUnavailable, "ollama: server busy (HTTP 503)", id="503"),
        pytest.param(
            502, b"<html>bad gateway</html>", UpstreamError, "<html>bad gateway</html> (HTTP 502)", id="not-json"
        ),
    ],
)
@respx.mock
async def test_an_error_status_carries_the_upstream_message(
    client: httpx.AsyncClient, status: int, body: bytes, error: type[Exception], message: str
) -> None:
    respx.post(f"{URL}/api/chat").mock(return_value=httpx.Response(status, content=body))
    with pytest.raises(error) as caught:
        await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL])))
    assert type(caught.value) is error
    assert message in str(caught.value)
    assert URL not in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        pytest.param(httpx.ConnectError("refused"), UpstreamUnavailable, "unreachable", id="refused"),
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
    respx.post(f"{URL}/api/chat").mock(side_effect=fault)
    with pytest.raises(error, match=message) as caught:
        await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL])))
    assert type(caught.value) is error
    assert caught.value.__cause__ is fault


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            ollama_lines(["a"]).split(b"\n")[0] + b'\n{"error":"out of memory"}\n',
            "ollama: out of memory",
            id="error-line",
        ),
        pytest.param(b'{"message":{"content":"a"},"done":false}\n{nope}\n', "not valid JSON", id="invalid-json"),
        pytest.param(b'{"message":{"content":"\xff\xfe"},"done":false}\n', "not valid JSON", id="not-utf8"),
        pytest.param(
            ollama_lines(["a", "b"]).rsplit(b"\n", 2)[0] + b"\n", "before the reply was done", id="no-done-line"
        ),
    ],
)
@respx.mock
async def test_a_broken_stream_is_an_upstream_error(client: httpx.AsyncClient, body: bytes, message: str) -> None:
    respx.post(f"{URL}/api/chat").mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(UpstreamError, match=message):
        await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL])))


@respx.mock
async def test_a_line_over_the_cap_is_an_upstream_error(client: httpx.AsyncClient) -> None:
    huge = b'{"message":{"content":"' + b"x" * 5000 + b'"},"done":false}\n'
    respx.post(f"{URL}/api/chat").mock(return_value=httpx.Response(200, content=huge))
    with pytest.raises(UpstreamError, match="longer than 4096 bytes"):
        await run(OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL]), ReplyLimits(max_line_bytes=4096)))


@respx.mock
async def test_check_reports_version_or_the_failure(client: httpx.AsyncClient) -> None:
    route = respx.get(f"{URL}/api/version")
    route.mock(return_value=httpx.Response(200, json={"version": "0.12.0"}))
    provider = OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL]))
    (upstream,) = provider.upstreams
    health = await provider.check(upstream)
    assert (health.name, health.status, health.version, health.in_flight) == ("ollama", "ok", "0.12.0", 0)
    route.mock(side_effect=httpx.ConnectError("refused"))
    health = await provider.check(upstream)
    assert health.status == "unavailable"
    assert "unreachable" in (health.error or "")
    route.mock(return_value=httpx.Response(500, json={"error": "broken"}))
    assert (await provider.check(upstream)).error == "ollama: broken (HTTP 500)"
    route.mock(return_value=httpx.Response(200, text="<html>"))
    assert (await provider.check(upstream)).error == "ollama answered /api/version with something else"


@respx.mock
@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        pytest.param(6, ["héllo"], id="at-a-piece-end"),
        pytest.param(7, ["héllo", "w"], id="inside-a-piece"),
        pytest.param(8, ["héllo", "w"], id="a-character-cut-in-two-is-dropped"),
        pytest.param(9, ["héllo", "wö"], id="after-a-multibyte-character"),
    ],
)
async def test_a_reply_past_its_byte_cap_is_cut_there_as_a_length_stop(
    client: httpx.AsyncClient, cap: int, expected: list[str]
) -> None:
    respx.post(f"{URL}/api/chat").mock(return_value=httpx.Response(200, content=ollama_lines(["héllo", "wörld"])))
    provider = OllamaProvider(client, UpstreamPool.from_urls("ollama", [URL]), ReplyLimits(max_reply_bytes=cap))
    # Cut before its done line, the reply's counts are unknown: the pieces relayed stand in for its tokens.
    assert await run(provider) == [*expected, Completion("length", 0, len(expected))]
