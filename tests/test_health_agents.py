"""`GET /health` (shallow and deep) and `GET /agents`."""

from __future__ import annotations

from typing import Any

import httpx

from bench.fakemodel import FakeModel
from piagent import __version__


def test_health_never_touches_the_upstream(client: httpx.Client, fake_ollama: FakeModel) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "agents": 2, "conversations": 0}
    assert fake_ollama.requests == []


def test_health_counts_conversations(client: httpx.Client) -> None:
    client.post("/chat", json={"message": "hi"})
    client.post("/chat", json={"message": "hi"})
    assert client.get("/health").json()["conversations"] == 2


def test_deep_health_asks_the_upstream(client: httpx.Client, fake_ollama: FakeModel) -> None:
    response = client.get("/health", params={"deep": "1"})
    assert response.status_code == 200
    assert response.json()["upstreams"] == [{"name": "ollama", "status": "ok", "version": "0.12.0", "in_flight": 0}]
    assert [r.path for r in fake_ollama.requests] == ["/api/version"]


def test_deep_health_is_503_naming_an_unreachable_upstream(serve: Any) -> None:
    with serve(ollama_url="http://127.0.0.1:9") as url:
        response = httpx.get(f"{url}/health?deep=1")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert [(u["name"], u["status"]) for u in body["upstreams"]] == [("ollama", "unavailable")]
    assert body["error"]["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in response.text


def test_agents_lists_name_description_and_model(client: httpx.Client) -> None:
    assert client.get("/agents").json() == {
        "agents": [
            {"name": "general", "description": "", "model": "test-model"},
            {"name": "pirate", "description": "Talks like a pirate.", "model": "pirate-model"},
        ],
        "default": "general",
    }
