"""The Ollama-compatible door's model routes: `GET /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`.

Each agent is a model. What clients read of one (its upstream model, provider, options, capabilities) is
shown; its system prompt never is, as `/agents` does not show it either.
"""

from __future__ import annotations

import hashlib

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from piagent.agents import Agent
from piagent.http.ollama import agent_name, timestamp
from piagent.http.ollama_schemas import (
    OllamaModel,
    OllamaModelDetails,
    OllamaProcesses,
    OllamaRunning,
    OllamaShow,
    OllamaShowRequest,
    OllamaTags,
    OllamaVersion,
)
from piagent.http.openapi import JSON, OLLAMA_BODY_ERRORS, Body, Endpoint
from piagent.http.requests import decode_body, get_runtime, read_json_body
from piagent.http.responses import JSONResponse
from piagent.version import __version__

_SHOW = msgspec.json.Decoder(OllamaShowRequest)
# piagent passes every request's tools and format through to the upstream model, and generates text.
CAPABILITIES = ["completion", "tools"]
# `/api/ps` says when a model will be unloaded; piagent unloads nothing, and Ollama writes "never" so.
_NEVER = "2318-11-30T00:00:00Z"


def _details(agent: Agent) -> OllamaModelDetails:
    return OllamaModelDetails(agent.model, "", agent.provider, None, "", "")


def _definition(agent: Agent) -> bytes:
    return f"{agent.provider}\n{agent.model}\n{agent.system_prompt}".encode()


def _parameters(agent: Agent) -> str:
    """The agent's options as Ollama writes a model's parameters: one `name value` a line, lists repeated."""
    lines = []
    for name, value in agent.options.items():
        for item in value if isinstance(value, list) else [value]:
            # Strings quoted (a stop sequence may hold spaces or newlines), booleans as Go writes them.
            text = msgspec.json.encode(item).decode() if isinstance(item, str) else str(item).lower()
            lines.append(f"{name:<30} {text}")
    return "\n".join(lines)


async def tags(request: Request) -> Response:
    """`GET /api/tags`: every agent, as a model; the digest changes when the agent's definition does."""
    runtime = get_runtime(request)
    modified_at = timestamp(runtime.started_at)
    models = []
    for agent in runtime.agents.values():
        definition = _definition(agent)
        digest = hashlib.sha256(definition).hexdigest()
        models.append(OllamaModel(agent.name, agent.name, modified_at, len(definition), digest, _details(agent)))
    return JSONResponse(OllamaTags(models))


async def show(request: Request) -> Response:
    """`POST /api/show`: one agent as a model; 404 for an unknown one, as Ollama answers."""
    runtime = get_runtime(request)
    asked = decode_body(_SHOW, await read_json_body(request, runtime.settings.max_body_bytes, any_type=True))
    agent = runtime.agents.resolve(agent_name(asked.model or asked.name))
    parameters = _parameters(agent)
    about = " ".join(agent.description.split())
    modelfile = f"# piagent agent {agent.name}: {about}\nFROM {agent.model}\n"
    modelfile += "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
    body = OllamaShow(modelfile, parameters, "", _details(agent), {}, CAPABILITIES, timestamp(runtime.started_at))
    return JSONResponse(body)


async def processes(request: Request) -> Response:
    """`GET /api/ps`: every agent, as a model that is loaded (piagent itself loads nothing)."""
    runtime = get_runtime(request)
    models = []
    for agent in runtime.agents.values():
        definition = _definition(agent)
        digest = hashlib.sha256(definition).hexdigest()
        models.append(OllamaRunning(agent.name, agent.name, len(definition), digest, _details(agent), _NEVER, 0))
    return JSONResponse(OllamaProcesses(models))


async def version(request: Request) -> Response:
    """`GET /api/version`: piagent's version."""
    return JSONResponse(OllamaVersion(__version__))


def routes() -> list[Route]:
    """The Ollama-compatible model endpoints."""
    return [
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", processes, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
    ]


# What /openapi.json says about these routes.
API: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/tags", "Ollama-compatible model list: every agent", ok=(Body(JSON, OllamaTags),)),
    Endpoint(
        "POST",
        "/api/show",
        "Ollama-compatible model details: an agent's upstream model, options and capabilities (never its prompt)",
        request=OllamaShowRequest,
        ok=(Body(JSON, OllamaShow),),
        errors=(*OLLAMA_BODY_ERRORS, 404),
    ),
    Endpoint("GET", "/api/ps", "Ollama-compatible running models: every agent", ok=(Body(JSON, OllamaProcesses),)),
    Endpoint("GET", "/api/version", "Ollama-compatible version: piagent's", ok=(Body(JSON, OllamaVersion),)),
)
