"""The OpenAPI 3.1 document, generated from the route table and the msgspec Structs of every body."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, NamedTuple

import msgspec

from piagent.http.ollama_schemas import OllamaError
from piagent.http.openai_schemas import OpenAIErrorBody
from piagent.schemas import ErrorBody

JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
# The error statuses most endpoints share: a bad body, and the upstream failing.
BODY_ERRORS = (400, 413, 415, 422)
# The Ollama door reads any Content-Type as JSON, as Ollama does: no 415.
OLLAMA_BODY_ERRORS = (400, 413, 422)
UPSTREAM_ERRORS = (502, 503, 504)
_REF = "#/components/schemas/{name}"


class Body(NamedTuple):
    """One media type a route answers 200 with; for a stream, `schema` is one event (one line)."""

    media_type: str
    schema: Any
    description: str = ""


class Param(NamedTuple):
    """One query or path parameter."""

    name: str
    description: str


class Endpoint(NamedTuple):
    """One row of the API table: a route's method and path, and what the document says about it."""

    method: str
    path: str
    summary: str
    request: Any = None
    ok: tuple[Body, ...] = ()
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()
    status: int = 200  # the success status; with no `ok` bodies it answers no content (204)


def error_schema(path: str) -> Any:
    """The error body a route answers with, by the same prefixes the error handler uses."""
    if path.startswith("/v1/"):
        return OpenAIErrorBody
    if path.startswith("/api/"):
        return OllamaError
    return ErrorBody


def _ecma_patterns(schema: Any) -> Any:
    r"""The schema with Python's whole-string `\A...\Z` patterns spelled `^...$`, as JSON Schema's
    ECMA-262 regexes read them (there `\A` is the letter A, and `$` never matches before a final newline)."""
    if isinstance(schema, dict):
        pattern = schema.get("pattern")
        fixed = {key: _ecma_patterns(value) for key, value in schema.items()}
        if isinstance(pattern, str) and pattern.startswith("\\A") and pattern.endswith("\\Z"):
            fixed["pattern"] = f"^{pattern[2:-2]}$"
        return fixed
    if isinstance(schema, list | tuple):
        return type(schema)(_ecma_patterns(item) for item in schema)
    return schema


def build_openapi(endpoints: Sequence[Endpoint], title: str, version: str, server: str = "/") -> dict[str, Any]:
    """The whole document; every schema comes from `msgspec.json.schema_components`, shared ones by $ref."""
    types: list[Any] = []
    for endpoint in endpoints:
        if endpoint.request is not None:
            types.append(endpoint.request)
        types.extend(body.schema for body in endpoint.ok)
        if endpoint.errors:
            types.append(error_schema(endpoint.path))
    schemas, components = _ecma_patterns(msgspec.json.schema_components(types, ref_template=_REF))
    schema_of = iter(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.method.lower() + "".join(c if c.isalnum() else "_" for c in endpoint.path),
        }
        parameters = [
            {"name": p.name, "in": "path", "required": True, "description": p.description, "schema": {"type": "string"}}
            for p in endpoint.path_params
        ]
        parameters += [
            {"name": q.name, "in": "query", "required": False, "description": q.description, "schema": {}}
            for q in endpoint.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if endpoint.request is not None:
            operation["requestBody"] = {"required": True, "content": {JSON: {"schema": next(schema_of)}}}
        content = {body.media_type: {"schema": next(schema_of)} for body in endpoint.ok}
        descriptions = "; ".join(f"{body.media_type}: {body.description}" for body in endpoint.ok if body.description)
        success: dict[str, Any] = {"description": descriptions or HTTPStatus(endpoint.status).phrase}
        if content:
            success["content"] = content
        responses: dict[str, Any] = {str(endpoint.status): success}
        if endpoint.errors:
            error = {JSON: {"schema": next(schema_of)}}
            for status in endpoint.errors:
                responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": error}
        operation["responses"] = responses
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": server}],
        "paths": paths,
        "components": {"schemas": components},
    }


class DocumentCache:
    """The encoded document, built on first use: it never changes while the app runs (building it costs ~11 ms).

    One slot, for the root path it was built for: an app is served under one (the server's `--root-path`, or the
    path a host mounts it at), so no client input can grow it, and a host mounting one app twice only rebuilds.
    """

    __slots__ = ("_body", "_root")

    def __init__(self) -> None:
        self._root: str | None = None
        self._body = b""

    def get(self, root: str, build: Callable[[], bytes]) -> bytes:
        """The document for `root`, built by `build()` when it is not the one kept."""
        if self._root != root:
            self._body, self._root = build(), root
        return self._body
