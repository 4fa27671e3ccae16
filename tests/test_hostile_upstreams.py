"""A model server is not trusted to behave: huge or compressed bodies and replies that never end cost piagent
a bounded amount of memory and time, on both HTTP transports and both upstream protocols.

Each case runs against `python -m piagent` as its own process, whose peak RSS (VmHWM in /proc) is compared
with the peak it had reached when idle after one ordinary reply through every door.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from piagent.exceptions import UpstreamError
from piagent.providers.ollama import OllamaProvider
from piagent.providers.openai import OpenAIProvider
from piagent.providers.pool import UpstreamPool
from piagent.transport import HTTPToolsTransport
from tests.hostile import HostileUpstream, compressed, error_body, gzip_bomb, polite
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


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@dataclass
class Piagent:
    """piagent as a process in front of a hostile upstream, with its idle peak RSS."""

    url: str
    process: subprocess.Popen[str]
    upstream: HostileUpstream
    idle_peak: int

    def growth(self) -> int:
        """How far the peak RSS has risen above the idle peak, in bytes."""
        return peak_rss(self.process.pid) - self.idle_peak

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
            piagent = Piagent(url, process, upstream, 0)
            for path, body in [param.values for param in DOORS]:
                for stream in (False, True):
                    assert piagent.post(path, body, stream).status_code == 200
            piagent.idle_peak = peak_rss(process.pid)
            yield piagent
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(15)


@pytest.fixture
def upstream(piagent: Piagent) -> Iterator[HostileUpstream]:
    """The hostile upstream, polite again after each test."""
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
            ollama = OllamaProvider(client, UpstreamPool.from_urls("ollama", [upstream.url]), max_line_bytes=4096)
            with pytest.raises(UpstreamError, match="answered /api/tags with more than 4096 bytes"):
                await ollama.list_models()
            openai = OpenAIProvider(client, UpstreamPool.from_urls("openai", [upstream.url]), max_line_bytes=4096)
            assert (await openai.check(openai.upstreams[0])).status == "error"
            upstream.other = b'{"models": []}'
            assert await ollama.list_models() == []
