"""The OpenAI-compatible front door: `POST /v1/chat/completions` and `GET /v1/models`, each agent a model.

Stateless, as the API is: the client sends the whole history, and the agent's system prompt goes
before it. Errors take OpenAI's shape (see `responses.error_response_for`), also mid-stream.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.exceptions import PiagentError, ValidationFailed, clip
from piagent.http.formats import StreamFormat, token_template
from piagent.http.openai_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    CompletionChoice,
    CompletionUsage,
    FunctionCall,
    FunctionPiece,
    JSONObjectFormat,
    JSONSchemaFormat,
    MessageToolCall,
    Model,
    ModelList,
    ToolCallPiece,
)
from piagent.http.openapi import BODY_ERRORS, JSON, SSE, UPSTREAM_ERRORS, Body, Endpoint, Param
from piagent.http.requests import decode_body, get_runtime, owner_of, read_json_body
from piagent.http.responses import ENCODER, JSONResponse, openai_error
from piagent.http.streaming import ReplyStream, reply
from piagent.http.tooling import CallNames, check_depth, offered_specs
from piagent.providers.base import Message, OutputFormat, ToolCall, Tools
from piagent.schemas import ChatOptions, ChatResponse
from piagent.settings import Settings

_REQUEST = msgspec.json.Decoder(ChatCompletionRequest)
_ARGUMENTS = msgspec.json.Decoder(dict[str, Any])
_DONE = b"data: [DONE]\n\n"
# Roles OpenAI has that Ollama and older servers do not: `developer` is the newer name for `system`.
_ROLES = {"developer": "system"}


def decode_request(body: bytes) -> ChatCompletionRequest:
    """Decode and validate the body; 400 for JSON syntax, 422 naming the field otherwise."""
    return decode_body(_REQUEST, body)


def _text_of(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for number, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise ValidationFailed(
                f"only text content parts are served, got {clip(part.type)}",
                f"$.messages[{index}].content[{number}].type",
            )
        texts.append(part.text)
    return "".join(texts)


def _calls_of(message: ChatMessage, index: int) -> tuple[ToolCall, ...]:
    """The tool calls an assistant message made; their arguments must be JSON objects, since an Ollama
    upstream takes them as objects."""
    calls = []
    for number, call in enumerate(message.tool_calls or ()):
        arguments = call.function.arguments or "{}"
        try:
            _ARGUMENTS.decode(arguments)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ValidationFailed(
                f"the arguments are not a JSON object: {exc}",
                f"$.messages[{index}].tool_calls[{number}].function.arguments",
            ) from exc
        calls.append(ToolCall(call.id, call.function.name, arguments))
    return tuple(calls)


def to_messages(request: ChatCompletionRequest, max_message_chars: int) -> list[Message]:
    """The client's messages as the provider takes them (text only, OpenAI-only roles renamed, tool results
    named by their call's function too); 422 for a message over the length limit."""
    messages = []
    names = CallNames()
    for index, message in enumerate(request.messages):
        text = _text_of(message, index)
        if len(text) > max_message_chars:
            raise ValidationFailed.over_limit(
                "the message", len(text), max_message_chars, f"$.messages[{index}].content", " characters"
            )
        if message.tool_calls:
            calls = _calls_of(message, index)
            names.called(list(calls))
            messages.append(Message(message.role, text, calls))
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            messages.append(Message("tool", text, tool_call_id=call_id, tool_name=names.name_of(call_id)))
        else:
            messages.append(Message(_ROLES.get(message.role, message.role), text))
    return messages


def to_tools(request: ChatCompletionRequest, settings: Settings) -> Tools | None:
    """The tools the client offers, bounded (PIAGENT_MAX_TOOLS, PIAGENT_MAX_SCHEMA_DEPTH), with its
    `tool_choice`; None when it offers none."""
    if not request.tools:
        return None
    specs = offered_specs(request.tools, settings.max_tools, settings.max_schema_depth)
    choice = request.tool_choice
    if choice is None or isinstance(choice, str):
        return Tools(specs, choice or "auto", "", request.parallel_tool_calls)
    name = choice.function.name
    if name not in {spec.name for spec in specs}:
        raise ValidationFailed(f"tool_choice names {clip(name)}, which is not in tools", "$.tool_choice.function.name")
    return Tools(specs, "function", name, request.parallel_tool_calls)


def to_output(request: ChatCompletionRequest, max_depth: int) -> OutputFormat | None:
    """`response_format` as piagent passes it on: None for text, any JSON object, or JSON matching a schema."""
    wanted = request.response_format
    if isinstance(wanted, JSONObjectFormat):
        return OutputFormat()
    if isinstance(wanted, JSONSchemaFormat):
        spec = wanted.json_schema
        if spec.schema is not None:
            check_depth(spec.schema, max_depth, "$.response_format.json_schema.schema")
        return OutputFormat(spec.schema, spec.name, spec.strict)
    return None


def to_options(request: ChatCompletionRequest, max_tokens: int) -> ChatOptions:
    """The sampling options piagent passes on; unset ones keep the agent's. A reply length over
    `max_tokens` (PIAGENT_MAX_TOKENS) is a 422 naming the field, as on `/chat`."""
    for field in ("max_completion_tokens", "max_tokens"):
        asked = getattr(request, field)
        if asked is not None and asked > max_tokens:
            raise ValidationFailed.over_limit(field, asked, max_tokens, f"$.{field}")
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    return ChatOptions(
        temperature=request.temperature,
        max_tokens=request.max_completion_tokens or request.max_tokens,
        top_p=request.top_p,
        seed=request.seed,
        stop=stop,
    )


def _finish_reason(reply: ChatResponse) -> str | None:
    """`tool_calls` when the model called tools, as OpenAI says (Ollama says `stop`); else the upstream's."""
    return "tool_calls" if reply.tool_calls else reply.done_reason


def _message(reply: ChatResponse) -> AssistantMessage:
    if not reply.tool_calls:
        return AssistantMessage("assistant", reply.reply)
    calls = [
        MessageToolCall(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))
        for call in reply.tool_calls
    ]
    return AssistantMessage("assistant", reply.reply or None, calls)


def _usage(reply: ChatResponse) -> CompletionUsage:
    usage = reply.usage
    return CompletionUsage(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens + usage.completion_tokens)


def _stream_format(completion_id: str, created: int, model: str, include_usage: bool) -> StreamFormat:
    """The SSE chunks of one completion. Every token chunk is the same JSON around the token's text, so
    it is built once and the token's msgspec-escaped text is put in between: no object per token."""

    def chunk(choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> bytes:
        event = ChatCompletionChunk(completion_id, "chat.completion.chunk", created, model, choices, usage)
        return b"data: " + ENCODER.encode(event) + b"\n\n"

    token = token_template(chunk([ChunkChoice(0, ChunkDelta(content=""), None)]))

    calls = 0

    def tool_call(call: ToolCall) -> bytes:
        # As OpenAI streams a call: its id, type and name with empty arguments, then the arguments.
        nonlocal calls
        opening = ToolCallPiece(calls, FunctionPiece("", call.name), call.id, "function")
        arguments = ToolCallPiece(calls, FunctionPiece(call.arguments))
        calls += 1
        return chunk([ChunkChoice(0, ChunkDelta(tool_calls=[opening]), None)]) + chunk(
            [ChunkChoice(0, ChunkDelta(tool_calls=[arguments]), None)]
        )

    def done(reply: ChatResponse) -> bytes:
        last = chunk([ChunkChoice(0, ChunkDelta(), _finish_reason(reply))])
        if include_usage:
            last += chunk([], _usage(reply))
        return last + _DONE

    def error(exc: PiagentError, request_id: str | None) -> bytes:
        # As OpenAI does: an error event, and no [DONE], so clients do not take the reply as whole.
        return b"data: " + ENCODER.encode(openai_error(exc, request_id)) + b"\n\n"

    start = chunk([ChunkChoice(0, ChunkDelta(role="assistant", content=""), None)])
    return StreamFormat("text/event-stream; charset=utf-8", token, done, error, start, tool_call)


async def chat_completions(request: Request) -> Response | ReplyStream:
    """`POST /v1/chat/completions`: the agent named by `model` answers the client's messages."""
    runtime = get_runtime(request)
    settings = runtime.settings
    body = await read_json_body(request, settings.max_body_bytes)
    completion = decode_request(body)
    messages = to_messages(completion, settings.max_message_chars)
    options = to_options(completion, settings.max_tokens)
    tools = to_tools(completion, settings)
    output = to_output(completion, settings.max_schema_depth)
    prepared = runtime.chat.prepare_stateless(completion.model, messages, options, owner_of(request), tools, output)
    completion_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())
    model = prepared.agent.name

    def whole(answer: ChatResponse) -> Response:
        choice = CompletionChoice(0, _message(answer), _finish_reason(answer))
        return JSONResponse(ChatCompletion(completion_id, "chat.completion", created, model, [choice], _usage(answer)))

    include_usage = completion.stream_options is not None and completion.stream_options.include_usage
    return await reply(
        request,
        runtime.chat,
        prepared,
        stream=completion.stream,
        whole=whole,
        stream_format=lambda: _stream_format(completion_id, created, model, include_usage),
    )


async def list_models(request: Request) -> Response:
    """`GET /v1/models`: every agent, as a model."""
    runtime = get_runtime(request)
    created = int(runtime.started_at)
    return JSONResponse(ModelList("list", [Model(name, "model", created, "piagent") for name in runtime.agents]))


async def get_model(request: Request) -> Response:
    """`GET /v1/models/{model}`: one agent, as a model; 404 `model_not_found` for an unknown one."""
    runtime = get_runtime(request)
    agent = runtime.agents.resolve(request.path_params["model"])
    return JSONResponse(Model(agent.name, "model", int(runtime.started_at), "piagent"))


def routes() -> list[Route]:
    """The OpenAI-compatible endpoints."""
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model}", get_model, methods=["GET"]),
    ]


# What /openapi.json says about this door's routes.
API: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/v1/chat/completions",
        "OpenAI-compatible chat: model is an agent, whose system prompt goes before the messages; stateless",
        request=ChatCompletionRequest,
        ok=(
            Body(JSON, ChatCompletion, "stream false"),
            Body(SSE, ChatCompletionChunk, "stream true: data: chunks, then data: [DONE]"),
        ),
        errors=(*BODY_ERRORS, 404, *UPSTREAM_ERRORS),
    ),
    Endpoint("GET", "/v1/models", "OpenAI-compatible model list: every agent", ok=(Body(JSON, ModelList),)),
    Endpoint(
        "GET",
        "/v1/models/{model}",
        "OpenAI-compatible model: one agent",
        path_params=(Param("model", "the agent's name"),),
        ok=(Body(JSON, Model),),
        errors=(404,),
    ),
)
