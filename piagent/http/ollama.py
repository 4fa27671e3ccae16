"""The Ollama-compatible front door's chat, `POST /api/chat`, each agent a model; and what its other routes share.

Stateless, as Ollama's chat is: the client sends the whole history, and the agent's system prompt goes
before it. `stream` defaults to true, as in Ollama. Errors take Ollama's `{"error": "..."}` shape
(see `responses.error_response_for`), also as the last line of a stream that failed midway.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.exceptions import PiagentError, ValidationFailed
from piagent.http.formats import StreamFormat, token_template
from piagent.http.ollama_schemas import (
    OllamaChatRequest,
    OllamaChatResponse,
    OllamaError,
    OllamaGenerateRequest,
    OllamaReplyFunction,
    OllamaReplyMessage,
    OllamaReplyToolCall,
)
from piagent.http.openapi import JSON, NDJSON, OLLAMA_BODY_ERRORS, UPSTREAM_ERRORS, Body, Endpoint
from piagent.http.requests import decode_body, get_runtime, owner_of, read_json_body
from piagent.http.responses import ENCODER, JSONResponse
from piagent.http.streaming import ReplyStream, reply
from piagent.http.tooling import CallNames, check_depth, offered_specs
from piagent.providers.base import Message, OutputFormat, ToolCall, Tools, new_call_id
from piagent.schemas import ChatOptions, ChatResponse, Timings
from piagent.settings import Settings

_REQUEST = msgspec.json.Decoder(OllamaChatRequest)
_NO_TIMINGS = Timings()


def line_safe(line: bytes) -> bytes:
    """Escape the characters `str.splitlines()` breaks lines on that JSON leaves raw (U+0085, U+2028,
    U+2029): the `ollama` package reads NDJSON with it, and Ollama's own (Go) encoder escapes the last two.
    Cheap when they are absent: `bytes.replace` returns the same object."""
    return (
        line.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029").replace(b"\xc2\x85", b"\\u0085")
    )


def timestamp(unix: float) -> str:
    """RFC 3339 in UTC, as Ollama writes `created_at` and `modified_at`."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def agent_name(model: str) -> str:
    """The agent a model name means: Ollama clients may add the default tag `:latest`."""
    return model.removesuffix(":latest")


def decode_request(body: bytes, max_message_chars: int) -> tuple[OllamaChatRequest, list[Message]]:
    """Decode and validate the body, and the client's messages as the provider takes them: tool calls get
    ids (Ollama's clients send none) and each tool result the id of the call it answers."""
    request = decode_body(_REQUEST, body)
    messages = []
    names = CallNames()
    for index, message in enumerate(request.messages):
        if message.images:
            raise ValidationFailed("images are not served", f"$.messages[{index}].images")
        if len(message.content) > max_message_chars:
            raise ValidationFailed.over_limit(
                "the message", len(message.content), max_message_chars, f"$.messages[{index}].content", " characters"
            )
        if message.tool_calls:
            calls = [
                ToolCall(new_call_id(), call.function.name, ENCODER.encode(call.function.arguments).decode())
                for call in message.tool_calls
            ]
            names.called(calls)
            messages.append(Message(message.role, message.content, tuple(calls)))
        elif message.role == "tool":
            name = message.tool_name or ""
            messages.append(Message("tool", message.content, tool_call_id=names.id_of(name), tool_name=name))
        else:
            messages.append(Message(message.role, message.content))
    return request, messages


def to_tools(request: OllamaChatRequest, settings: Settings) -> Tools | None:
    """The tools the client offers, bounded (PIAGENT_MAX_TOOLS, PIAGENT_MAX_SCHEMA_DEPTH); Ollama has no
    `tool_choice`, so the model chooses."""
    if not request.tools:
        return None
    specs = offered_specs(request.tools, settings.max_tools, settings.max_schema_depth)
    return Tools(specs)


def to_output(request: OllamaChatRequest | OllamaGenerateRequest, max_depth: int) -> OutputFormat | None:
    """`format` as piagent passes it on: `"json"` is any JSON object, a schema is JSON matching it."""
    wanted = request.format
    if not wanted:  # None, or the "" the `ollama` package lets callers pass for no format
        return None
    if wanted == "json":
        return OutputFormat()
    assert isinstance(wanted, dict)
    check_depth(wanted, max_depth, "$.format")
    return OutputFormat(wanted)


def to_options(request: OllamaChatRequest | OllamaGenerateRequest, max_tokens: int) -> ChatOptions | None:
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


def _tool_calls(calls: list[ToolCall]) -> list[OllamaReplyToolCall]:
    # The arguments are a JSON object's text (checked by the provider): written as the object itself.
    return [OllamaReplyToolCall(OllamaReplyFunction(call.name, msgspec.Raw(call.arguments.encode()))) for call in calls]


def done_fields(
    reply: ChatResponse, started: int
) -> tuple[str | None, int, int | None, int | None, int | None, int | None, int | None]:
    """The final object's fields from `done_reason` on, in the order Ollama's objects have them: the
    counts, piagent's own total time, and the upstream's timings when it sent them. `tool_calls` is
    OpenAI's reason for a reply with tool calls; Ollama says `stop`."""
    usage = reply.usage
    timings = reply.timings or _NO_TIMINGS
    return (
        "stop" if reply.done_reason == "tool_calls" else reply.done_reason,
        time.perf_counter_ns() - started,
        timings.load_duration or None,
        usage.prompt_tokens or None,
        timings.prompt_eval_duration or None,
        usage.completion_tokens or None,
        timings.eval_duration or None,
    )


def _last(model: str, created_at: str, reply: ChatResponse, started: int, whole: bool = False) -> OllamaChatResponse:
    """The final object: the whole reply (non-streamed) or an empty piece (streamed), with the counts."""
    message = OllamaReplyMessage("assistant", "")
    if whole:
        calls = _tool_calls(reply.tool_calls) if reply.tool_calls else None
        message = OllamaReplyMessage("assistant", reply.reply, calls)
    return OllamaChatResponse(model, created_at, message, True, *done_fields(reply, started))


def _stream_format(model: str, created_at: str, started: int) -> StreamFormat:
    """NDJSON lines as Ollama writes them; the token line is built once around the escaped text."""
    template = ENCODER.encode(OllamaChatResponse(model, created_at, OllamaReplyMessage("assistant", ""), False))
    token = token_template(template + b"\n", line_safe)

    def done(reply: ChatResponse) -> bytes:
        return ENCODER.encode(_last(model, created_at, reply, started)) + b"\n"

    def error(exc: PiagentError, request_id: str | None) -> bytes:
        return line_safe(ENCODER.encode(OllamaError(exc.message, request_id))) + b"\n"

    def tool_call(call: ToolCall) -> bytes:
        # Whole, one call a line, as Ollama streams them.
        message = OllamaReplyMessage("assistant", "", _tool_calls([call]))
        return line_safe(ENCODER.encode(OllamaChatResponse(model, created_at, message, False))) + b"\n"

    return StreamFormat("application/x-ndjson", token, done, error, tool_call=tool_call)


async def chat(request: Request) -> Response | ReplyStream:
    """`POST /api/chat`: the agent named by `model` answers the client's messages."""
    started = time.perf_counter_ns()
    runtime = get_runtime(request)
    settings = runtime.settings
    body = await read_json_body(request, settings.max_body_bytes, any_type=True)
    ollama_request, messages = decode_request(body, settings.max_message_chars)
    options = to_options(ollama_request, settings.max_tokens)
    tools = to_tools(ollama_request, settings)
    output = to_output(ollama_request, settings.max_schema_depth)
    prepared = runtime.chat.prepare_stateless(
        agent_name(ollama_request.model), messages, options, owner_of(request), tools, output
    )
    model = ollama_request.model
    created_at = timestamp(time.time())
    return await reply(
        request,
        runtime.chat,
        prepared,
        stream=ollama_request.stream,
        whole=lambda answer: JSONResponse(_last(model, created_at, answer, started, whole=True)),
        stream_format=lambda: _stream_format(model, created_at, started),
    )


def routes() -> list[Route]:
    """The Ollama-compatible endpoints."""
    return [
        Route("/api/chat", chat, methods=["POST"]),
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
        errors=(*OLLAMA_BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
)
