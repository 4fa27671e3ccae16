"""A store that is down: 503 naming it before anything goes upstream, the server still up, health tells."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from tests.redis_server import REDIS_SERVER, SKIP_REASON, RedisServer
from tests.servers import free_socket


@pytest.fixture(params=[pytest.param("redis", id="redis-unreachable"), pytest.param("sqlite", id="sqlite-unwritable")])
def down_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "redis":
        with free_socket() as sock:  # bound, never listening: connections are refused
            yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        return
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    yield f"sqlite:///{blocker}/piagent.db"


def test_a_down_store_gets_503_naming_it_and_the_model_is_never_asked(
    serve: Any, fake_ollama: FakeModel, down_url: str
) -> None:
    name = down_url.partition(":")[0]
    with serve(memory_url=down_url) as url, httpx.Client(base_url=url, timeout=10) as client:
        for request in (
            client.build_request("POST", "/chat", json={"message": "hi"}),
            client.build_request("POST", "/chat", json={"message": "hi", "stream": True}),
            client.build_request("GET", "/conversations"),
            client.build_request("GET", "/conversations/abc"),
            client.build_request("DELETE", "/conversations/abc"),
        ):
            response = client.send(request)
            assert response.status_code == 503, request
            error = response.json()["error"]
            assert error["code"] == "store_unavailable"
            assert error["message"].startswith(f"memory store {name!r} is unavailable: ")
            assert "127.0.0.1" not in error["message"]
        assert fake_ollama.chat_requests == []
        shallow = client.get("/health")
        assert shallow.status_code == 200
        assert "conversations" not in shallow.json()
        deep = client.get("/health", params={"deep": "1"})
    assert deep.status_code == 503
    body = deep.json()
    assert body["status"] == "degraded"
    assert [upstream["status"] for upstream in body["upstreams"]] == ["ok"]
    assert body["store"]["name"] == name
    assert body["store"]["status"] == "unavailable"
    assert body["error"]["code"] == "store_unavailable"


def test_deep_health_reports_a_working_store(serve: Any, tmp_path: Path) -> None:
    with serve(memory_url=f"sqlite:///{tmp_path}/piagent.db") as url:
        response = httpx.get(f"{url}/health", params={"deep": "1"})
    assert response.status_code == 200
    assert response.json()["store"] == {"name": "sqlite", "status": "ok"}
    assert response.json()["conversations"] == 0


def test_sqlite_serves_again_once_its_folder_is_fixed(serve: Any, tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.write_text("")  # a file where the folder should be
    with serve(memory_url=f"sqlite:///{folder}/piagent.db") as url, httpx.Client(base_url=url) as client:
        assert client.post("/chat", json={"message": "hi"}).status_code == 503
        folder.unlink()
        folder.mkdir()
        response = client.post("/chat", json={"message": "hi"})
        assert response.status_code == 200
        assert client.get("/health", params={"deep": "1"}).status_code == 200
    assert (folder / "piagent.db").is_file()


needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)


@needs_redis
def test_redis_dying_during_a_json_reply_is_a_503_not_a_500(serve: Any, fake_ollama: FakeModel) -> None:
    with RedisServer() as redis_server, serve(memory_url=redis_server.url) as url:
        fake_ollama.script = Script(tokens=["a", "b", "c", "d"], delay=0.1)
        with httpx.Client(base_url=url, timeout=10) as client:
            pending = client.build_request("POST", "/chat", json={"message": "hi"})
            outcome: list[httpx.Response] = []
            thread = threading.Thread(target=lambda: outcome.append(client.send(pending)))
            thread.start()
            assert fake_ollama.wait_for_requests(1, timeout=5)
            redis_server.stop()
            thread.join(timeout=20)
    [response] = outcome
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"


@needs_redis
def test_redis_dying_during_a_stream_ends_it_with_a_store_error_event(serve: Any, fake_ollama: FakeModel) -> None:
    with RedisServer() as redis_server, serve(memory_url=redis_server.url) as url:
        fake_ollama.script = Script(tokens=["a", "b", "c", "d"], delay=0.1)
        body = {"message": "hi", "stream": True}
        headers = {"Accept": "text/event-stream"}
        with httpx.stream("POST", f"{url}/chat", json=body, headers=headers, timeout=10) as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            first = next(chunks)
            redis_server.stop()
            rest = b"".join(chunks)
    events = [block for block in (first + rest).decode().split("\n\n") if block]
    assert events[0].startswith("event: token")
    last_event, last_data = events[-1].split("\n", 1)
    assert last_event == "event: error"
    assert msgspec.json.decode(last_data.removeprefix("data: "))["code"] == "store_unavailable"
