"""A model server is not trusted to behave: huge or compressed bodies and replies that never end cost piagent
a bounded amount of memory and time, on both HTTP transports and both upstream protocols.

Each case runs against `python -m piagent` as its own process (one per transport and protocol, warmed up by an
ordinary reply through every door): its peak RSS is reset before the case (`/proc/PID/clear_refs`), and the
peak the case reaches (VmHWM) is compared with the resident set it started from (VmRSS).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from piagent.exceptions import UpstreamError
from piagent.providers.base import Message
from piagent.providers.common import ReplyLimits
from piagent.providers.ollama import OllamaProvider
from piagent.providers.openai import OpenAIProvider
from piagent.providers.pool import UpstreamPool
from piagent.transport import HTTPToolsTransport
from tests.hostile import (
    Behaviour,
    HostileUpstream,
    compressed,
    done_then_open,
    error_body,
    gzip_bomb,
    huge_head,
    long_reply,
    polite,
)
from tests.servers import free_port, start_piagent, wait_until_serving

MiB = 1024 * 1024
# The budget: whatever an upstream sends, piagent's peak RSS stays within this of its idle peak.
RSS_BUDGET = 32 * MiB
REPLY_CAP = 256 * 1024  # PIAGENT_MAX_REPLY_BYTES's default

DOORS = [
    pytest.param("/chat", {"message": "hi"}, id="native"),
    pytest.param(
        "/v1/chat/completions", {"model": "general", "messages": [{"role": "user", "content": "hi"}]}, id="openai"
    ),
    pytest.param("/api/chat", {"model": "general", "messages": [{"role": "user", "content": "hi"}]}, id="ollama"),
]


def memory(pid: int, field: str) -> int:
    """One memory figure of a process from /proc, in bytes: VmRSS (resident now) or VmHWM (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc")


@dataclass
class Piagent:
    """piagent as a process in front of a hostile upstream, with the resident set the current case began at."""

    url: str
    process: subprocess.Popen[str]
    upstream: HostileUpstream
    idle: int = 0

    def start_case(self) -> None:
        """Reset the process's peak RSS to its resident set now (Linux: 5 to clear_refs), the case's idle."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        self.idle = memory(self.process.pid, "VmRSS")

    def growth(self) -> int:
        """How far the peak RSS has risen, since `start_case`, above the resident set it started from."""
        return memory(self.process.pid, "VmHWM") - self.idle

    def post(self, path: str, body: dict[str, object], stream: bool) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json={**body, "stream": stream}, timeout=30)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("true", "ollama"), id="fast-ollama"),
        pytest.param(("false", "ollama"), id="httpx-ollama"),
        pytest.param(("true", "openai"), id="fast-openai"),
        pytest.param(("false", "openai"), id="httpx-openai"),
    ],
)
def piagent(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Piagent]:
    fast, protocol = request.param
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "prompts").mkdir()
    (folder / "prompts" / "general.md").write_text("You are a test assistant.\n", encoding="utf-8")
    port = free_port()
    with HostileUpstream() as upstream:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PIAGENT_")}
        env.update(
            PIAGENT_PORT=str(port),
            PIAGENT_PROMPTS_DIR=str(folder / "prompts"),
            PIAGENT_PROVIDER=protocol,
            PIAGENT_OLLAMA_URL=upstream.url,
            PIAGENT_OPENAI_URL=upstream.url,
            PIAGENT_FAST_TRANSPORT=fast,
            PIAGENT_READ_TIMEOUT="20",
        )
        process = start_piagent(env, folder, capture=False)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url, process)
            piagent = Piagent(url, process, upstream)
            for path, body in [param.values for param in DOORS]:
                for stream in (False, True):
                    assert piagent.post(path, body, stream).status_code == 200
            yield piagent
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)


@pytest.fixture
def upstream(piagent: Piagent) -> Iterator[HostileUpstream]:
    """The hostile upstream, polite again after each test; the case's memory is measured from its start."""
    piagent.start_case()
    yield piagent.upstream
    piagent.upstream.behaviour = polite


def test_an_upstream_error_body_is_read_only_up_to_its_cap(piagent: Piagent, upstream: HostileUpstream) -> None:
    upstream.behaviour = error_body(200 * MiB)
    reply = piagent.post("/chat", {"message": "hi"}, stream=False)
    assert reply.status_code == 502
    assert "xxxx" in reply.json()["error"]["message"]
    assert piagent.growth() < RSS_BUDGET
    assert upstream.written < 32 * MiB  # piagent hung up long before the end
    upstream.behaviour = polite
    assert piagent.post("/chat", {"message": "hi"}, stream=False).json()["reply"] == "Hello"


def test_a_huge_response_head_is_refused_within_the_memory_budget(piagent: Piagent, upstream: HostileUpstream) -> None:
    upstream.behaviour = huge_head(100 * MiB)
    reply = piagent.post("/chat", {"message": "hi"}, stream=False)
    assert reply.status_code == 502
    assert "sent a response head too large to accept" in reply.json()["error"]["message"]
    assert piagent.growth() < RSS_BUDGET
    assert upstream.written < 32 * MiB  # piagent hung up long before the end
    upstream.behaviour = polite
    assert piagent.post("/chat", {"message": "hi"}, stream=False).json()["reply"] == "Hello"


@pytest.fixture(scope="session")
def bombs() -> dict[str, bytes]:
    """For each protocol, a 1.5 MB gzip body that inflates to 200 MB of well-formed reply lines."""
    return {protocol: gzip_bomb(protocol, 200 * MiB) for protocol in ("ollama", "openai")}


def test_upstream_requests_ask_for_no_compression_and_a_compressed_body_is_refused(
    piagent: Piagent, upstream: HostileUpstream, bombs: dict[str, bytes]
) -> None:
    upstream.behaviour = compressed(bombs)
    reply = piagent.post("/chat", {"message": "hi"}, stream=False)
    assert piagent.growth() < RSS_BUDGET
    assert reply.status_code == 502
    assert "compressed body (Content-Encoding: gzip)" in reply.json()["error"]["message"]
    assert upstream.requests[-1]["accept-encoding"] == "identity"
    upstream.behaviour = polite
    assert piagent.post("/chat", {"message": "hi"}, stream=False).json()["reply"] == "Hello"


@pytest.mark.anyio
@pytest.mark.parametrize("fast", [pytest.param(True, id="fast"), pytest.param(False, id="httpx")])
async def test_a_small_json_answer_is_read_only_up_to_the_line_limit(fast: bool) -> None:
    with HostileUpstream() as upstream:
        upstream.other = b'{"models": [' + b" " * (4 * MiB) + b"]}"
        async with httpx.AsyncClient(transport=HTTPToolsTransport() if fast else None) as client:
            ollama = OllamaProvider(
                client, UpstreamPool.from_urls("ollama", [upstream.url]), ReplyLimits(max_line_bytes=4096)
            )
            with pytest.raises(UpstreamError, match="answered /api/tags with more than 4096 bytes"):
                await ollama.list_models()
            openai = OpenAIProvider(
                client, UpstreamPool.from_urls("openai", [upstream.url]), ReplyLimits(max_line_bytes=4096)
            )
            assert (await openai.check(openai.upstreams[0])).status == "error"
            upstream.other = b'{"models": []}'
            assert await ollama.list_models() == []


def reply_of(path: str, response: httpx.Response) -> tuple[str, str | None]:
    """The reply text and the stop reason of one door's whole (JSON) answer."""
    body = response.json()
    if path == "/v1/chat/completions":
        return body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]
    if path == "/api/chat":
        return body["message"]["content"], body["done_reason"]
    return body["reply"], body["done_reason"]


def stream_of(piagent: Piagent, path: str, body: dict[str, object]) -> httpx.Response:
    """One door's streamed answer (the native door as NDJSON events, so that it carries its stop reason)."""
    headers = {"Accept": "application/x-ndjson"} if path == "/chat" else {}
    return httpx.post(f"{piagent.url}{path}", json={**body, "stream": True}, headers=headers, timeout=30)


@pytest.mark.parametrize(("path", "body"), DOORS)
def test_a_reply_past_the_byte_cap_ends_as_a_length_stop_and_the_kept_part_is_stored(
    piagent: Piagent, upstream: HostileUpstream, path: str, body: dict[str, object]
) -> None:
    upstream.behaviour = long_reply(600, 500_000)  # 300 MB of reply text
    whole = piagent.post(path, body, stream=False)
    assert upstream.written < 32 * MiB  # piagent closed the upstream request
    streamed = stream_of(piagent, path, body)
    assert upstream.written < 32 * MiB
    assert piagent.growth() < RSS_BUDGET
    assert whole.status_code == streamed.status_code == 200
    text, reason = reply_of(path, whole)
    assert (len(text), reason) == (REPLY_CAP, "length")
    assert ('"finish_reason":"length"' if path == "/v1/chat/completions" else '"done_reason":"length"') in streamed.text
    if path == "/chat":
        conversation = httpx.get(f"{piagent.url}/conversations/{whole.headers['x-conversation-id']}").json()
        stored = conversation["turns"][-1]
        assert (stored["role"], len(stored["text"]), stored["interrupted"]) == ("assistant", REPLY_CAP, False)


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(done_then_open(), id="done"),
        pytest.param(done_then_open(done_marker=False), id="finish-and-usage"),
        pytest.param(done_then_open(usage=False, done_marker=False), id="finish-alone"),
    ],
)
@pytest.mark.parametrize(("path", "body"), DOORS)
def test_a_reply_is_complete_at_its_last_line_even_if_the_body_stays_open(
    piagent: Piagent, upstream: HostileUpstream, path: str, body: dict[str, object], behaviour: Behaviour
) -> None:
    upstream.behaviour = behaviour
    for stream in (False, True):
        started = time.monotonic()
        response = stream_of(piagent, path, body) if stream else piagent.post(path, body, stream=False)
        assert response.status_code == 200
        assert time.monotonic() - started < 2  # not the 20 s read timeout
        assert "Hello" in response.text
        # piagent hung up on the open body, so no stale byte of it can reach a later request.
        assert upstream.wait_for_close(after=started, timeout=2) is not None
    # The generation slot (one, by default) is free again at once, and the next reply arrives whole.
    upstream.behaviour = polite
    started = time.monotonic()
    assert piagent.post("/chat", {"message": "hi"}, stream=False).json()["reply"] == "Hello"
    assert time.monotonic() - started < 2


@pytest.mark.anyio
@pytest.mark.parametrize("protocol", ["ollama", "openai"])
@pytest.mark.parametrize("fast", [pytest.param(True, id="fast"), pytest.param(False, id="httpx")])
async def test_a_body_that_ends_at_its_last_line_keeps_its_connection_for_the_next_reply(
    fast: bool, protocol: str
) -> None:
    with HostileUpstream() as upstream:
        # The body's end comes a moment after the last line, as it may from a busy server: it is waited for.
        upstream.behaviour = functools.partial(polite, end_delay=0.02)
        async with httpx.AsyncClient(transport=HTTPToolsTransport() if fast else None) as client:
            pool = UpstreamPool.from_urls(protocol, [upstream.url])
            provider = OllamaProvider(client, pool) if protocol == "ollama" else OpenAIProvider(client, pool)
            for _ in range(3):
                items = [item async for item in provider.stream_chat("m", [Message("user", "hi")], {})]
                assert items[0] == "Hello"
        assert upstream.connections == 1
