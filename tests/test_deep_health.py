"""`/health?deep=1` asks the upstreams at most once per PIAGENT_DEEP_HEALTH_CACHE seconds, however often called."""

from __future__ import annotations

import anyio
import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent import create_app
from piagent.http.recent import RecentResult
from tests.conftest import MakeSettings
from tests.servers import serve_in_thread


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def version_requests(fake: FakeModel) -> int:
    return sum(1 for request in fake.requests if request.path == "/api/version")


def test_repeated_deep_health_reuses_one_check_until_it_ages(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    clock = Clock()
    app = create_app(make_settings(deep_health_cache=2.0), upstream_clock=clock)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(20):
            assert client.get("/health", params={"deep": "1"}).status_code == 200
        assert version_requests(fake_ollama) == 1
        clock.now += 1.9
        assert client.get("/health", params={"deep": "1"}).json()["upstreams"][0]["status"] == "ok"
        assert version_requests(fake_ollama) == 1
        clock.now += 0.2
        client.get("/health", params={"deep": "1"})
        assert version_requests(fake_ollama) == 2
        client.get("/health")  # plain health never asks
        assert version_requests(fake_ollama) == 2


def test_without_a_cache_every_deep_health_asks(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    with serve_in_thread(create_app(make_settings(deep_health_cache=0))) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            client.get("/health", params={"deep": "1"})
    assert version_requests(fake_ollama) == 3


@pytest.mark.anyio
async def test_concurrent_callers_share_the_check_in_flight() -> None:
    runs = 0

    async def check() -> int:
        nonlocal runs
        runs += 1
        await anyio.sleep(0.05)
        return runs

    recent: RecentResult[int] = RecentResult(ttl=0)
    results: list[int] = []

    async def call() -> None:
        results.append(await recent.get(check))

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(call)
    assert (runs, results) == (1, [1] * 10)
    assert await recent.get(check) == 2  # ttl 0: a later caller checks again


@pytest.mark.anyio
async def test_a_failed_check_is_not_kept() -> None:
    attempts = 0

    async def check() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("the first check fails")
        return "ok"

    recent: RecentResult[str] = RecentResult(ttl=60)
    with pytest.raises(RuntimeError):
        await recent.get(check)
    assert await recent.get(check) == "ok"
    assert await recent.get(check) == "ok"
    assert attempts == 2
