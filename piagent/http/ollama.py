"""The Ollama-compatible front door: `POST /api/chat`, `GET /api/tags`, `GET /api/version`, each agent a model.

Stateless, as Ollama's chat is: the client sends the whole history, and the agent's system prompt goes
before it. `stream` defaults to true, as in Ollama. Errors take Ollama's `{"error": "..."}` shape
(see `responses.error_response_for`), also as the last line of a stream that failed midway.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.exceptions import PiagentError, ValidationFailed
from piagent.http.ollama_schemas import (
    OllamaChatRequest,
    OllamaChatResponse,
    OllamaError,
    OllamaModel,
    OllamaModelDetails,
    OllamaReplyMessage,
    OllamaTags,
    OllamaVersion,
)
from piagent.http.openapi import BODY_ERRORS, JSON, NDJSON, UPSTREAM_ERRORS, Body, Endpoint
from piagent.http.requests import decode_body, get_runtime, owner_of, read_json_body
from piagent.http.responses import ENCODER, JSONResponse
from piagent.http.streaming import ReplyStream, StreamFormat, reply, token_template
from piagent.providers.base import Message
from piagent.schemas import ChatOptions, ChatResponse
from piagent.version import __version__

_REQUEST = msgspec.json.Decoder(OllamaChatRequest)


def _line_safe(line: bytes) -> bytes:
    """Escape the characters `str.splitlines()` breaks lines on that JSON leaves raw (U+0085, U+2028,
    U+2029): the `ollama` package reads NDJSON with it, and Ollama's own (Go) encoder escapes the last two.
    Cheap when they are absent: `bytes.replace` returns the same object."""
    return (
        line.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029").replace(b"\xc2\x85", b"\\u0085")
    )


def _timestamp(unix: float) -> str:
    """RFC 3339 in UTC, as Ollama writes `created_at` and `modified_at`."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def agent_name(model: str) -> str:
    """The agent a model name means: Ollama clients may add the default tag `:latest`."""
    return model.removesuffix(":latest")


def decode_request(body: bytes, max_message_chars: int) -> tuple[OllamaChatRequest, list[Message]]:
    """Decode and validate the body, and the client's messages as the provider takes them."""
    request = decode_body(_REQUEST, body)
    messages = []
    for index, message in enumerate(request.messages):
        if message.images:
            raise ValidationFailed("images are not served", f"$.messages[{index}].images")
        if len(message.content) > max_message_chars:
            raise ValidationFailed.over_limit(
                "the message", len(message.content), max_message_chars, f"$.messages[{index}].content", " characters"
            )
        messages.append(Message(message.role, message.content))
    return request, messages


def to_options(request: OllamaChatRequest, max_tokens: int) -> ChatOptions | None:
    """The sampling options piagent passes on; unset ones (and `num_predict` <= 0) keep the agent's. A
    `num_predict` over `max_tokens` (PIAGENT_MAX_TOKENS) is a 422 naming it, as on `/chat`."""
    options = request.options
    if options is None:
        return None
    num_predict = options.num_predict
    if num_predict is not None and num_predict > max_tokens:
        raise ValidationFailed.over_limit("num_predict", num_predict, max_tokens, "$.options.num_predict")
    return ChatOptions(
        temperature=options.temperature,
        max_tokens=num_predict if num_predict is not None and num_predict > 0 else None,
        top_p=options.top_p,
        seed=options.seed,
        stop=options.stop,
    )


def _last(model: str, created_at: str, reply: ChatResponse, started: int, content: str = "") -> OllamaChatResponse:
    """The final object: the whole reply (non-streamed) or an empty piece (streamed), with the counts."""
    usage = reply.usage
    return OllamaChatResponse(
        model,
        created_at,
        OllamaReplyMessage("assistant", content),
        True,
        reply.done_reason,
        time.perf_counter_ns() - started,
        usage.prompt_tokens or None,
        usage.completion_tokens or None,
    )


def _stream_format(model: str, created_at: str, started: int) -> StreamFormat:
    """NDJSON lines as Ollama writes them; the token line is built once around the escaped text."""
    template = ENCODER.encode(OllamaChatResponse(model, created_at, OllamaReplyMessage("assistant", ""), False))
    token = token_template(template + b"\n", _line_safe)

    def done(reply: ChatResponse) -> bytes:
        return ENCODER.encode(_last(model, created_at, reply, started)) + b"\n"

    def error(exc: PiagentError) -> bytes:
        return _line_safe(ENCODER.encode(OllamaError(exc.message))) + b"\n"

    return StreamFormat("application/x-ndjson", token, done, error)


async def chat(request: Request) -> Response | ReplyStream:
    """`POST /api/chat`: the agent named by `model` answers the client's messages."""
    started = time.perf_counter_ns()
    runtime = get_runtime(request)
    settings = runtime.settings
    body = await read_json_body(request, settings.max_body_bytes)
    ollama_request, messages = decode_request(body, settings.max_message_chars)
    options = to_options(ollama_request, settings.max_tokens)
    prepared = runtime.chat.prepare_stateless(agent_name(ollama_request.model), messages, options, owner_of(request))
    model = ollama_request.model
    created_at = _timestamp(time.time())
    return await reply(
        request,
        runtime.chat,
        prepared,
        stream=ollama_request.stream,
        whole=lambda answer: JSONResponse(_last(model, created_at, answer, started, answer.reply)),
        stream_format=lambda: _stream_format(model, created_at, started),
    )


async def tags(request: Request) -> Response:
    """`GET /api/tags`: every agent, as a model; the digest changes when the agent's definition does."""
    runtime = get_runtime(request)
    modified_at = _timestamp(runtime.started_at)
    models = []
    for agent in runtime.agents.values():
        definition = f"{agent.provider}\n{agent.model}\n{agent.system_prompt}".encode()
        details = OllamaModelDetails(agent.model, "", agent.provider, None, "", "")
        digest = hashlib.sha256(definition).hexdigest()
        models.append(OllamaModel(agent.name, agent.name, modified_at, len(definition), digest, details))
    return JSONResponse(OllamaTags(models))


async def version(request: Request) -> Response:
    """`GET /api/version`: piagent's version."""
    return JSONResponse(OllamaVersion(__version__))


def routes() -> list[Route]:
    """The Ollama-compatible endpoints."""
    return [
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
    ]


# What /openapi.json says about this door's routes.
API: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/chat",
        "Ollama-compatible chat: model is an agent; streams NDJSON unless stream is false; stateless",
        request=OllamaChatRequest,
        ok=(
            Body(NDJSON, OllamaChatResponse, "stream true (the default): one line per piece, done on the last"),
            Body(JSON, OllamaChatResponse, "stream false"),
        ),
        errors=(*BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
    Endpoint("GET", "/api/tags", "Ollama-compatible model list: every agent", ok=(Body(JSON, OllamaTags),)),
    Endpoint("GET", "/api/version", "Ollama-compatible version: piagent's", ok=(Body(JSON, OllamaVersion),)),
)
