"""The Ollama-compatible door's `POST /api/generate`: one prompt, answered by an agent as a one-turn chat.

The agent's system prompt goes first, then the request's `system`, then the prompt as the user's
message. What a chat cannot honour (`raw` prompts, `suffix` fill-in, images) is a 422 naming the field.
An empty prompt answers at once with `done_reason` `load`, as Ollama does when asked only to load a model.
"""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.exceptions import PiagentError, ValidationFailed
from piagent.http.formats import StreamFormat, token_template
from piagent.http.ollama import agent_name, done_fields, line_safe, timestamp, to_options, to_output
from piagent.http.ollama_schemas import OllamaError, OllamaGenerateRequest, OllamaGenerateResponse
from piagent.http.openapi import JSON, NDJSON, OLLAMA_BODY_ERRORS, UPSTREAM_ERRORS, Body, Endpoint
from piagent.http.requests import decode_body, get_runtime, owner_of, read_json_body
from piagent.http.responses import ENCODER, JSONResponse
from piagent.http.streaming import ReplyStream, reply
from piagent.providers.base import Message
from piagent.schemas import ChatResponse

_REQUEST = msgspec.json.Decoder(OllamaGenerateRequest)


def decode_request(body: bytes, max_message_chars: int) -> tuple[OllamaGenerateRequest, list[Message]]:
    """Decode and validate the body, and the messages it means: the client's system prompt, then the prompt."""
    request = decode_body(_REQUEST, body)
    if request.images:
        raise ValidationFailed("images are not served", "$.images")
    if request.raw:
        raise ValidationFailed("raw prompts are not served: an agent always answers through its chat template", "$.raw")
    if request.suffix:
        raise ValidationFailed("suffix (fill-in-the-middle) is not served", "$.suffix")
    messages = []
    for field, role, text in (("system", "system", request.system), ("prompt", "user", request.prompt)):
        if len(text) > max_message_chars:
            raise ValidationFailed.over_limit("the " + field, len(text), max_message_chars, f"$.{field}", " characters")
        if text:
            messages.append(Message(role, text))
    return request, messages


def _last(model: str, created_at: str, answer: ChatResponse, started: int, text: str = "") -> OllamaGenerateResponse:
    return OllamaGenerateResponse(model, created_at, text, True, *done_fields(answer, started))


def _stream_format(model: str, created_at: str, started: int) -> StreamFormat:
    """NDJSON lines as Ollama writes them for `/api/generate`: the text in `response`."""
    template = ENCODER.encode(OllamaGenerateResponse(model, created_at, "", False))
    token = token_template(template + b"\n", line_safe, b'"response":""')

    def done(answer: ChatResponse) -> bytes:
        return ENCODER.encode(_last(model, created_at, answer, started)) + b"\n"

    def error(exc: PiagentError, request_id: str | None) -> bytes:
        return line_safe(ENCODER.encode(OllamaError(exc.message, request_id))) + b"\n"

    return StreamFormat("application/x-ndjson", token, done, error)


async def generate(request: Request) -> Response | ReplyStream:
    """`POST /api/generate`: the agent named by `model` answers one prompt."""
    started = time.perf_counter_ns()
    runtime = get_runtime(request)
    settings = runtime.settings
    body = await read_json_body(request, settings.max_body_bytes, any_type=True)
    asked, messages = decode_request(body, settings.max_message_chars)
    options = to_options(asked, settings.max_tokens)
    output = to_output(asked, settings.max_schema_depth)
    name = agent_name(asked.model)
    model = asked.model
    created_at = timestamp(time.time())
    if not asked.prompt:
        runtime.agents.resolve(name)  # an unknown agent is a 404 all the same
        return JSONResponse(OllamaGenerateResponse(model, created_at, "", True, "load"))
    prepared = runtime.chat.prepare_stateless(name, messages, options, owner_of(request), output=output)
    return await reply(
        request,
        runtime.chat,
        prepared,
        stream=asked.stream,
        whole=lambda answer: JSONResponse(_last(model, created_at, answer, started, answer.reply)),
        stream_format=lambda: _stream_format(model, created_at, started),
    )


def routes() -> list[Route]:
    """The Ollama-compatible generate endpoint."""
    return [Route("/api/generate", generate, methods=["POST"])]


# What /openapi.json says about this route.
API: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/generate",
        "Ollama-compatible completion: model is an agent, whose system prompt goes first; one prompt, stateless",
        request=OllamaGenerateRequest,
        ok=(
            Body(NDJSON, OllamaGenerateResponse, "stream true (the default): one line per piece, done on the last"),
            Body(JSON, OllamaGenerateResponse, "stream false"),
        ),
        errors=(*OLLAMA_BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
)
