"""Shared fixtures: a clean environment, agents on disk, a fake Ollama and piagent served for real."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent import Settings, create_app
from tests.redis_server import REDIS_SERVER, SKIP_REASON, RedisServer
from tests.servers import Served, serve_app, serve_in_thread

MakeSettings = Callable[..., Settings]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own PIAGENT_* variables."""
    for key in list(os.environ):
        if key.startswith("PIAGENT_"):
            monkeypatch.delenv(key)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    """Two agents: `general` with defaults, `pirate` with its own model, options and memory depth."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "general.md").write_text("You are a test assistant.\n", encoding="utf-8")
    (folder / "pirate.md").write_text(
        "---\ndescription: Talks like a pirate.\nmodel: pirate-model\nmax_turns: 4\n"
        "options:\n  temperature: 0.1\n  num_ctx: 512\n---\nYou are a pirate.\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture
def fake_ollama() -> Iterator[FakeModel]:
    with FakeModel() as fake:
        yield fake
    assert fake.errors == [], "the fake Ollama itself failed"


@pytest.fixture
def fast_transport() -> bool:
    """piagent's own upstream transport (the default); a test marked `both_transports` also runs on httpx's."""
    return True


@pytest.fixture
def make_settings(prompts_dir: Path, fake_ollama: FakeModel, fast_transport: bool) -> MakeSettings:
    """Settings pointing at the fake Ollama and the test agents; keyword arguments override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "ollama_url": fake_ollama.url,
            "prompts_dir": str(prompts_dir),
            "model": "test-model",
            "read_timeout": 10.0,
            "fast_transport": fast_transport,
            # Admission by this machine's memory and heat is off: tests/test_admission.py feeds its own readings.
            "min_available_mb": 0,
            "max_temperature_c": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def serve(make_settings: MakeSettings) -> Callable[..., Any]:
    """Start piagent for real (uvicorn on a free port) with settings overrides; a context manager."""

    def start(**overrides: Any) -> Any:
        return serve_in_thread(create_app(make_settings(**overrides)))

    return start


@pytest.fixture
def serve_full(make_settings: MakeSettings) -> Callable[..., Any]:
    """Like `serve`, but the context manager yields a `Served`: the URL plus the server's loop and state."""

    def start(**overrides: Any) -> Any:
        return serve_app(create_app(make_settings(**overrides)))

    return start


@pytest.fixture
def served(serve_full: Callable[..., Any]) -> Iterator[Served]:
    with serve_full() as running:
        yield running


@pytest.fixture
def server(served: Served) -> str:
    return served.url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole run; skipped (with the reason) only when the binary is missing."""
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared redis-server's URL, emptied for this test."""
    redis_server.flush()
    return redis_server.url
