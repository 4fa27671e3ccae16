"""`GET /conversations`, `GET /conversations/{id}` and `DELETE /conversations/{id}`, served for real."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import serve_in_thread


def owner_from_header(app: ASGIApp) -> ASGIApp:
    """Stands in for the API-key middleware: `X-Test-Owner` becomes the caller's identity."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-owner":
                    scope["piagent.owner"] = value.decode()
        await app(scope, receive, send)

    return wrapped


@pytest.fixture(
    params=[pytest.param("memory", id="memory"), pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis")]
)
def memory_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/piagent.db"


@pytest.fixture
def http(make_settings: MakeSettings, memory_url: str) -> Iterator[httpx.Client]:
    app = owner_from_header(create_app(make_settings(memory_url=memory_url)))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def chat(client: httpx.Client, message: str = "hi", owner: str = "", **body: Any) -> str:
    response = client.post("/chat", json={"message": message, **body}, headers={"X-Test-Owner": owner})
    assert response.status_code == 200, response.text
    conversation_id: str = response.json()["conversation_id"]
    return conversation_id


def test_a_conversation_reads_back_with_roles_texts_times_and_agent(http: httpx.Client) -> None:
    conversation = chat(http, "ahoy", agent="pirate")
    chat(http, "again", conversation_id=conversation, agent="pirate")
    response = http.get(f"/conversations/{conversation}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == conversation
    assert body["agent"] == "pirate"
    assert [(t["role"], t["text"], t["interrupted"]) for t in body["turns"]] == [
        ("user", "ahoy", False),
        ("assistant", "Hello, world!", False),
        ("user", "again", False),
        ("assistant", "Hello, world!", False),
    ]
    assert all(isinstance(t["at"], float) for t in body["turns"])
    assert body["updated_at"] >= body["turns"][0]["at"]


def test_the_list_is_newest_first_with_counts_and_previews(http: httpx.Client) -> None:
    older = chat(http, "first question " + "x" * 100)
    newer = chat(http, "second question")
    chat(http, "follow-up", conversation_id=older)  # now the most recently used
    body = http.get("/conversations").json()
    assert body["next"] is None
    assert [(c["id"], c["turns"], c["agent"]) for c in body["conversations"]] == [
        (older, 4, "general"),
        (newer, 2, "general"),
    ]
    assert body["conversations"][0]["preview"] == ("first question " + "x" * 100)[:80]
    assert body["conversations"][1]["preview"] == "second question"
    assert body["conversations"][0]["updated_at"] >= body["conversations"][1]["updated_at"]


def test_the_list_pages_with_the_next_cursor(http: httpx.Client) -> None:
    made = [chat(http, f"m{n}") for n in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        body = http.get("/conversations", params=params).json()
        pages += 1
        seen.extend(c["id"] for c in body["conversations"])
        if body["next"] is None:
            break
        params["before"] = body["next"]
    assert sorted(seen) == sorted(made)
    assert len(seen) == 5
    assert pages == 3


def test_delete_answers_204_then_404(http: httpx.Client) -> None:
    conversation = chat(http)
    response = http.delete(f"/conversations/{conversation}")
    assert response.status_code == 204
    assert response.content == b""
    for method in ("GET", "DELETE"):
        gone = http.request(method, f"/conversations/{conversation}")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "conversation_not_found"
    assert http.get("/conversations").json()["conversations"] == []


def test_each_caller_sees_only_their_own_conversations(http: httpx.Client) -> None:
    alices = chat(http, "alice's", owner="alice")
    bobs = chat(http, "bob's", owner="bob")
    alice = {"X-Test-Owner": "alice"}
    assert [c["id"] for c in http.get("/conversations", headers=alice).json()["conversations"]] == [alices]
    for method in ("GET", "DELETE"):
        response = http.request(method, f"/conversations/{bobs}", headers=alice)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "conversation_not_found"
    # The same id under alice is alice's own conversation; bob's stays as it was.
    same_id = http.post("/chat", json={"message": "mine now", "conversation_id": bobs}, headers=alice)
    assert same_id.status_code == 200
    assert http.get(f"/conversations/{bobs}", headers=alice).json()["turns"][0]["text"] == "mine now"
    assert [t["text"] for t in http.get(f"/conversations/{bobs}", headers={"X-Test-Owner": "bob"}).json()["turns"]] == [
        "bob's",
        "Hello, world!",
    ]


def test_a_stream_the_client_abandons_is_listed_as_interrupted(http: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 200, delay=0.02)
    with http.stream("POST", "/chat", json={"message": "long", "stream": True}) as response:
        chunks = response.iter_raw()  # kept: a collected iterator closes the connection before `left`
        next(chunks)
        conversation = response.headers["x-conversation-id"]
        left = time.monotonic()
    assert fake_ollama.wait_for_client_close(timeout=5, after=left) is not None
    turns: list[dict[str, Any]] = []
    for _ in range(100):  # the partial reply is stored as the server notices the client left
        turns = http.get(f"/conversations/{conversation}").json().get("turns", [])
        if turns:
            break
        time.sleep(0.02)
    assert [t["interrupted"] for t in turns] == [False, True]
    assert turns[1]["text"].startswith("t")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param({"limit": "0"}, "limit", id="limit-zero"),
        pytest.param({"limit": "101"}, "limit", id="limit-too-big"),
        pytest.param({"limit": "ten"}, "limit", id="limit-not-a-number"),
        pytest.param({"before": "not-a-cursor"}, "before", id="cursor-garbage"),
        pytest.param({"before": "WzEsMl0"}, "before", id="cursor-wrong-shape"),
    ],
)
def test_a_bad_page_request_is_a_422_naming_the_parameter(
    http: httpx.Client, query: dict[str, str], field: str
) -> None:
    response = http.get("/conversations", params=query)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert f"at `{field}`" in response.json()["error"]["message"]


def test_an_id_that_cannot_exist_is_a_404(http: httpx.Client) -> None:
    response = http.get("/conversations/" + "x" * 65)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"


def test_other_methods_are_405_listing_get_and_delete(http: httpx.Client) -> None:
    response = http.put("/conversations/abc")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}


def test_with_memory_off_there_is_nothing_to_list(serve: Callable[..., Any]) -> None:
    with serve(memory_enabled=False) as url, httpx.Client(base_url=url) as client:
        client.post("/chat", json={"message": "hi"})
        assert client.get("/conversations").json() == {"conversations": [], "next": None}
        assert client.get("/conversations/abc").status_code == 404
        assert client.delete("/conversations/abc").status_code == 404
