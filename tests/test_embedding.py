"""piagent is plain ASGI: mounted under another app at a prefix, and served by another ASGI server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import free_socket, serve_in_thread


async def host_home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the host app")


def test_mounted_at_a_prefix_with_the_lifespan_composed(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    pi = create_app(make_settings())
    host = Starlette(
        routes=[Route("/", host_home), Mount("/pi", app=pi)],
        lifespan=pi.router.lifespan_context,
    )
    fake_ollama.script = Script(tokens=["mounted", " reply"])
    with serve_in_thread(host) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "the host app"
        assert client.get("/pi/health").json()["status"] == "ok"
        reply = client.post("/pi/chat", json={"message": "hi"}).json()
        assert reply["reply"] == "mounted reply"
        streamed = client.post(
            "/pi/chat", json={"message": "again", "stream": True, "conversation_id": reply["conversation_id"]}
        )
        assert streamed.text == "mounted reply"
        assert len(fake_ollama.chat_requests[-1]["messages"]) == 4
        assert client.get("/pi/nowhere").json()["error"]["code"] == "not_found"


def test_a_host_that_did_not_run_the_lifespan_gets_a_clear_error(make_settings: MakeSettings) -> None:
    host = Starlette(routes=[Mount("/pi", app=create_app(make_settings()))])
    with serve_in_thread(host) as url:
        response = httpx.post(f"{url}/pi/chat", json={"message": "hi"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "not_started"
    assert "lifespan=piagent_app.router.lifespan_context" in response.json()["error"]["message"]


@contextmanager
def serve_with_hypercorn(app: ASGIApp) -> Iterator[str]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        async def shutdown_trigger() -> None:
            started.set()
            await stop.wait()

        await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def test_served_by_hypercorn_it_chats_and_streams(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["hyper", "corn"])
    with serve_with_hypercorn(create_app(make_settings())) as url, httpx.Client(base_url=url) as client:
        assert client.post("/chat", json={"message": "hi"}).json()["reply"] == "hypercorn"
        response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
        events: list[Any] = [block.split("\n")[0] for block in response.text.strip().split("\n\n")]
        assert events == ["event: token", "event: token", "event: done"]


def fastapi_host(pi: Starlette) -> ASGIApp:
    """The recipe under FastAPI: mount it, and run its lifespan as the host's."""
    from fastapi import FastAPI

    host = FastAPI(lifespan=pi.router.lifespan_context)
    host.mount("/pi", pi)
    return host


def litestar_host(pi: Starlette) -> ASGIApp:
    """The recipe under Litestar, which runs the lifespan but passes no lifespan state to a mounted app, and
    hands it `/health/` (a slash added) with an empty root path."""
    from litestar import Litestar, asgi
    from litestar.types import Receive, Scope, Send

    @asgi("/pi", is_mount=True, copy_scope=True)
    async def piagent(scope: Scope, receive: Receive, send: Send) -> None:
        await pi(scope, receive, send)  # type: ignore[arg-type]

    return Litestar(route_handlers=[piagent], lifespan=[pi.router.lifespan_context])


def starlette_host(pi: Starlette) -> ASGIApp:
    return Starlette(routes=[Mount("/pi", app=pi)], lifespan=pi.router.lifespan_context)


@pytest.mark.parametrize(
    "build_host",
    [
        pytest.param(starlette_host, id="starlette"),
        pytest.param(fastapi_host, id="fastapi"),
        pytest.param(litestar_host, id="litestar"),
    ],
)
def test_the_embedding_recipe_works_under_each_host(
    make_settings: MakeSettings, fake_ollama: FakeModel, build_host: Any
) -> None:
    fake_ollama.script = Script(tokens=["mounted", " reply"])
    with serve_in_thread(build_host(create_app(make_settings()))) as url:
        with httpx.Client(base_url=url, timeout=10, follow_redirects=False) as client:
            assert client.get("/pi/health").json()["status"] == "ok"
            assert client.get("/pi/health/").json()["status"] == "ok"
            assert client.get("/pi/").headers["content-type"].startswith("text/html")  # the mount's root: no loop
            reply = client.post("/pi/chat", json={"message": "hi"})
            assert (reply.status_code, reply.json()["reply"]) == (200, "mounted reply")
            streamed = client.post("/pi/chat", json={"message": "again", "stream": True})
            assert streamed.text == "mounted reply"
            assert client.get("/pi/api/tags").json()["models"][0]["name"] == "general"
            assert client.get("/pi/nowhere").status_code == 404
        with openai.OpenAI(base_url=f"{url}/pi/v1", api_key="x", max_retries=0, timeout=10) as sdk:
            completion = sdk.chat.completions.create(model="general", messages=[{"role": "user", "content": "hi"}])
            assert completion.choices[0].message.content == "mounted reply"


def test_a_trailing_slash_is_served_not_redirected(client: httpx.Client) -> None:
    response = client.get("/health/", follow_redirects=False)
    assert (response.status_code, response.json()["status"]) == (200, "ok")


def test_a_host_middleware_sees_every_body_write_of_a_streamed_reply(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    # A streamed reply sends its body to the send piagent's app was given, past piagent's own middleware: a
    # host's middleware around piagent must still see every message, and the client the whole reply.
    seen: list[dict[str, Any]] = []

    def counting(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            async def counted(message: Any) -> None:
                if scope["type"] == "http":
                    seen.append(message)
                await send(message)

            await app(scope, receive, counted)

        return wrapped

    pi = create_app(make_settings())
    host = Starlette(routes=[Mount("/pi", app=counting(pi))], lifespan=pi.router.lifespan_context)
    fake_ollama.script = Script(tokens=["one", " two", " three"], delay=0.05)
    with serve_in_thread(host) as url, httpx.Client(base_url=url) as client:
        streamed = client.post("/pi/chat", json={"message": "hi", "stream": True})
    assert streamed.text == "one two three"
    assert streamed.headers["x-request-id"]  # the start went through piagent's middleware
    bodies = [message for message in seen if message["type"] == "http.response.body"]
    assert b"".join(message.get("body", b"") for message in bodies) == b"one two three"
    assert len(bodies) >= 4  # three tokens apart, then the end
    assert bodies[-1].get("more_body", False) is False
