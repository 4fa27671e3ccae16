"""What survives what: a restart keeps SQLite conversations; two processes share Redis ones.

These run `python -m piagent` as real, separate processes: nothing is shared but the store.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from tests.servers import free_port, start_piagent, wait_until_serving


@contextmanager
def piagent_process(memory_url: str, fake: FakeModel, prompts: Path, workdir: Path) -> Iterator[str]:
    """`python -m piagent` on a free port, configured only through its environment; yields its URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIAGENT_")}
    env.update(
        PIAGENT_PORT=str(port),
        PIAGENT_OLLAMA_URL=fake.url,
        PIAGENT_PROMPTS_DIR=str(prompts),
        PIAGENT_MODEL="test-model",
        PIAGENT_MEMORY_URL=memory_url,
        PIAGENT_ACCESS_LOG="false",
        PIAGENT_LOG_LEVEL="warning",
    )
    # The work folder has no config.env, so the environment above is the whole configuration.
    process = start_piagent(env, workdir, capture=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def chat(url: str, message: str, conversation_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, "conversation_id": conversation_id}
    response = httpx.post(f"{url}/chat", json={k: v for k, v in body.items() if v is not None}, timeout=10)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


@pytest.mark.parametrize(
    ("backend", "remembered"),
    [pytest.param("sqlite", True, id="sqlite-remembers"), pytest.param("memory", False, id="memory-forgets")],
)
def test_a_restart_keeps_the_conversation_only_on_sqlite(
    fake_ollama: FakeModel, prompts_dir: Path, tmp_path: Path, backend: str, remembered: bool
) -> None:
    memory_url = f"sqlite:///{tmp_path}/piagent.db" if backend == "sqlite" else "memory://"
    with piagent_process(memory_url, fake_ollama, prompts_dir, tmp_path) as url:
        conversation = chat(url, "my number is 42")["conversation_id"]
    with piagent_process(memory_url, fake_ollama, prompts_dir, tmp_path) as url:
        chat(url, "what is my number?", conversation)
        listed = httpx.get(f"{url}/conversations").json()["conversations"]
    sent = [(m["role"], m["content"]) for m in fake_ollama.chat_requests[-1]["messages"]]
    history = [("user", "my number is 42"), ("assistant", "Hello, world!")] if remembered else []
    assert sent == [("system", "You are a test assistant."), *history, ("user", "what is my number?")]
    assert [(c["id"], c["turns"]) for c in listed] == [(conversation, 4 if remembered else 2)]


def test_two_processes_sharing_redis_continue_each_others_conversations(
    fake_ollama: FakeModel, prompts_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    with (
        piagent_process(redis_url, fake_ollama, prompts_dir, tmp_path) as first,
        piagent_process(redis_url, fake_ollama, prompts_dir, tmp_path) as second,
    ):
        assert first != second
        conversation = chat(first, "hello from the first")["conversation_id"]
        chat(second, "and on to the second", conversation)
        chat(first, "back to the first", conversation)
        on_second = httpx.get(f"{second}/conversations/{conversation}").json()
    to_second, to_first = fake_ollama.chat_requests[-2], fake_ollama.chat_requests[-1]
    assert [m["content"] for m in to_second["messages"][1:]] == [
        "hello from the first",
        "Hello, world!",
        "and on to the second",
    ]
    assert [m["content"] for m in to_first["messages"][1:]] == [
        "hello from the first",
        "Hello, world!",
        "and on to the second",
        "Hello, world!",
        "back to the first",
    ]
    assert len(on_second["turns"]) == 6
