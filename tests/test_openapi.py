"""`GET /openapi.json`: a valid OpenAPI 3.1 document covering every route, generated from the Structs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from bench.fakemodel import FakeModel
from piagent import __version__, create_app
from piagent.http.openapi import build_openapi
from piagent.http.page import load_chat_page
from piagent.http.routes import API, build_routes
from tests.conftest import MakeSettings
from tests.servers import serve_app, serve_in_thread


def route_operations(metrics: bool = False) -> set[tuple[str, str]]:
    """Every (method, path) piagent can serve: with the chat page, and with /metrics when `metrics` is on."""
    operations = set()
    routes = build_routes(load_chat_page())
    if metrics:
        from piagent.http.metrics import Metrics

        routes.append(Metrics().route())
    for route in routes:
        assert isinstance(route, Route), f"{route!r}: only plain Routes can be described"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET
                operations.add((method, route.path))
    return operations


def test_every_route_has_a_row_in_the_api_table_and_every_row_a_route() -> None:
    rows = [(endpoint.method, endpoint.path) for endpoint in API]
    assert len(rows) == len(set(rows)), "a route has two rows"
    missing = route_operations(metrics=True) - set(rows)
    assert not missing, f"add a row to the door's API rows for {sorted(missing)}"
    assert set(rows) - route_operations(metrics=True) == set(), "a row describes a route that does not exist"


@pytest.fixture
def document(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {"title": "piagent", "version": __version__}


def test_it_covers_every_endpoint_with_its_request_and_answers(document: dict[str, Any]) -> None:
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert operations == route_operations()
    chat = document["paths"]["/chat"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert set(chat["responses"]["200"]["content"]) == {
        "application/json",
        "text/plain",
        "text/event-stream",
        "application/x-ndjson",
    }
    completions = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert completions["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenAIErrorBody"
    }
    assert document["paths"]["/api/chat"]["post"]["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OllamaError"
    }


def validators(document: dict[str, Any]) -> Callable[[str, Any], None]:
    """Validate a body against one component of the document (its $refs pointed at a standalone $defs)."""
    components = _rewrite(document["components"]["schemas"], "#/components/schemas/", "#/$defs/")
    built: dict[str, jsonschema.Draft202012Validator] = {}

    def check(name: str, body: Any) -> None:
        if name not in built:
            built[name] = jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": components})
        built[name].validate(body)

    return check


def _rewrite(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: (v.replace(old, new) if k == "$ref" else _rewrite(v, old, new)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, old, new) for v in value]
    return value


def test_real_bodies_validate_against_the_documented_schemas(
    document: dict[str, Any], client: httpx.Client, fake_ollama: FakeModel
) -> None:
    hi = [{"role": "user", "content": "hi"}]
    cases = [
        ("Health", client.get("/health", params={"deep": "1"}).json()),
        ("AgentList", client.get("/agents").json()),
        ("ChatResponse", client.post("/chat", json={"message": "hi"}).json()),
        ("ErrorBody", client.post("/chat", json={"message": ""}).json()),
        ("ChatCompletion", client.post("/v1/chat/completions", json={"model": "general", "messages": hi}).json()),
        ("ModelList", client.get("/v1/models").json()),
        ("OpenAIErrorBody", client.post("/v1/chat/completions", json={"model": "x", "messages": hi}).json()),
        (
            "OllamaChatResponse",
            client.post("/api/chat", json={"model": "general", "messages": hi, "stream": False}).json(),
        ),
        ("OllamaTags", client.get("/api/tags").json()),
        ("OllamaVersion", client.get("/api/version").json()),
        ("OllamaError", client.post("/api/chat", json={"model": "x", "messages": hi}).json()),
    ]
    check = validators(document)
    for name, body in cases:
        check(name, body)
    for line in client.post("/api/chat", json={"model": "general", "messages": hi}).text.splitlines():
        check("OllamaChatResponse", msgspec.json.decode(line))
    stream = client.post(
        "/v1/chat/completions",
        json={"model": "general", "messages": hi, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = stream.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    for event in events[:-2]:
        check("ChatCompletionChunk", msgspec.json.decode(event.removeprefix("data: ")))
    request = {"model": "general", "messages": hi, "stream": True, "stream_options": {"include_usage": True}}
    check("ChatCompletionRequest", request)


def test_a_mounted_app_names_its_prefix_as_the_server(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    pi = create_app(make_settings())
    # One app (one runtime, one kept document) under two prefixes: each answer names its own.
    host = Starlette(routes=[Mount("/pi", app=pi), Mount("/agent", app=pi)], lifespan=pi.router.lifespan_context)
    with serve_in_thread(host) as url:
        for prefix in ("/pi", "/agent", "/pi", "/pi"):
            assert httpx.get(f"{url}{prefix}/openapi.json").json()["servers"] == [{"url": prefix}]


def test_the_document_is_built_once_and_served_from_then_on(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import piagent.http.routes

    built: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(kwargs["server"])
        return build_openapi(*args, **kwargs)

    monkeypatch.setattr(piagent.http.routes, "build_openapi", counted)
    with serve_app(create_app(make_settings())) as served, httpx.Client(base_url=served.url) as client:
        bodies = {client.get("/openapi.json").content for _ in range(3)}
    assert built == ["/"]
    assert len(bodies) == 1
    validate(msgspec.json.decode(bodies.pop()))


@pytest.mark.parametrize("metrics", [True, False])
def test_the_metrics_row_is_in_the_document_exactly_when_the_route_is_served(
    make_settings: MakeSettings, metrics: bool
) -> None:
    with serve_app(create_app(make_settings(metrics=metrics))) as served, httpx.Client(base_url=served.url) as client:
        document = client.get("/openapi.json").json()
        served_metrics = client.get("/metrics").status_code
    validate(document)
    assert ("/metrics" in document["paths"]) is metrics
    assert served_metrics == (200 if metrics else 404)
    if metrics:
        assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_tool_calls_and_the_ollama_models_routes_validate_against_the_documented_schemas(
    document: dict[str, Any], client: httpx.Client, fake_ollama: FakeModel
) -> None:
    from bench.fakemodel import Script
    from tests.upstream import ollama_tool_lines

    check = validators(document)
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ask = [{"role": "user", "content": "hi"}]
    calls = Script(raw_body=[ollama_tool_lines([("f", {"a": [1, {"b": None}]})])])
    openai_request = {
        "model": "general",
        "messages": [
            *ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ],
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {}, "strict": True}},
    }
    check("ChatCompletionRequest", openai_request)
    ollama_request = {
        "model": "general",
        "messages": [
            *ask,
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
            {"role": "tool", "content": "ok", "tool_name": "f"},
        ],
        "tools": [tool],
        "format": "json",
        "stream": False,
    }
    check("OllamaChatRequest", ollama_request)
    fake_ollama.script = calls
    whole = client.post("/v1/chat/completions", json={"model": "general", "messages": ask, "tools": [tool]}).json()
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    check("ChatCompletion", whole)
    stream = client.post(
        "/v1/chat/completions", json={"model": "general", "messages": ask, "tools": [tool], "stream": True}
    )
    for event in stream.text.split("\n\n")[:-2]:
        check("ChatCompletionChunk", msgspec.json.decode(event.removeprefix("data: ")))
    answer = client.post("/api/chat", json={**ollama_request, "stream": False}).json()
    assert answer["message"]["tool_calls"][0]["function"]["arguments"] == {"a": [1, {"b": None}]}
    check("OllamaChatResponse", answer)
    for line in client.post("/api/chat", json={**ollama_request, "stream": True}).text.splitlines():
        check("OllamaChatResponse", msgspec.json.decode(line))
    fake_ollama.script = Script()
    generate = {"model": "general", "prompt": "hi", "system": "s", "format": "json"}
    check("OllamaGenerateRequest", generate)
    check("OllamaGenerateResponse", client.post("/api/generate", json={**generate, "stream": False}).json())
    for line in client.post("/api/generate", json=generate).text.splitlines():
        check("OllamaGenerateResponse", msgspec.json.decode(line))
    check("OllamaShow", client.post("/api/show", json={"model": "general"}).json())
    check("OllamaProcesses", client.get("/api/ps").json())
