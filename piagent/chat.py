"""The chat service: agent, memory and prompt around one provider call; knows nothing of HTTP."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any

import anyio

from piagent.agents import Agent, Agents
from piagent.exceptions import StoreUnavailable, ValidationFailed
from piagent.generations import GenerationLimiter
from piagent.providers.base import Completion, Message, OutputFormat, Provider, ToolCall, Tools
from piagent.providers.pool import Upstream
from piagent.schemas import ChatOptions, ChatRequest, ChatResponse, UpstreamHealth, Usage
from piagent.stores.base import ASSISTANT, USER, MemoryStore, Turn

logger = logging.getLogger("piagent.chat")


def new_conversation_id() -> str:
    """A random, unguessable conversation id (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


class PreparedChat:
    """Everything one provider call needs, resolved before any byte goes upstream."""

    __slots__ = (
        "agent",
        "conversation_id",
        "message",
        "messages",
        "options",
        "output",
        "owner",
        "provider",
        "remember",
        "tools",
    )

    def __init__(
        self,
        agent: Agent,
        conversation_id: str,
        owner: str,
        message: str,
        messages: list[Message],
        options: dict[str, Any],
        provider: Provider,
        remember: bool = True,
        tools: Tools | None = None,
        output: OutputFormat | None = None,
    ) -> None:
        self.agent = agent
        self.conversation_id = conversation_id
        self.owner = owner
        self.message = message
        self.messages = messages
        self.options = options
        self.provider = provider
        # False for the stateless front doors (OpenAI, Ollama): the client keeps the history.
        self.remember = remember
        # What the client offers the model (the front doors): its tools, and the shape of a structured reply.
        self.tools = tools
        self.output = output


class ChatService:
    """Runs chats: builds the message list from the agent and history, relays the reply, remembers it.

    Every generation, whichever front door asked for it, holds a slot of the `limiter` from before
    its first byte goes upstream until its reply is remembered. `max_tokens` is sent as the reply's
    length cap when neither the request nor the agent sets one, so no reply can run on unbounded.
    """

    def __init__(
        self,
        agents: Agents,
        providers: Provider | Mapping[str, Provider],
        store: MemoryStore | None,
        *,
        limiter: GenerationLimiter | None = None,
        max_tokens: int | None = None,
        log_content: bool = False,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_conversation_id,
    ) -> None:
        """`providers` maps each agent's name to its provider; a single provider serves every agent."""
        self.agents = agents
        if isinstance(providers, Mapping):
            missing = sorted(set(agents) - set(providers))
            if missing:
                raise ValueError(f"no provider for agents {', '.join(missing)}")
            self.providers: dict[str, Provider] = dict(providers)
        else:
            self.providers = dict.fromkeys(agents, providers)
        self.store = store
        self.limiter = limiter
        self._max_tokens = max_tokens
        self._log_content = log_content
        self._clock = clock
        self._new_id = new_id

    async def prepare(self, request: ChatRequest, owner: str = "") -> PreparedChat:
        """Resolve the agent, load the history and build the messages; raises before anything is sent."""
        agent = self.agents.resolve(request.agent)
        conversation_id = request.conversation_id or self._new_id()
        history: list[Turn] = []
        if self.store is not None:
            # Read even for a new conversation: a store that is down then fails here, with a 503,
            # before the model spends seconds on a reply that could not be remembered.
            history = await self.store.history(conversation_id, owner, agent.max_turns)
        messages = self._system(agent)
        messages.extend(Message(turn.role, turn.text) for turn in history)
        messages.append(Message(USER, request.message))
        options = self._options(agent, request.options)
        if self._log_content:
            logger.debug("conversation %s: user: %s", conversation_id, request.message)
        provider = self.providers[agent.name]
        return PreparedChat(agent, conversation_id, owner, request.message, messages, options, provider)

    def prepare_stateless(
        self,
        agent_name: str,
        messages: Iterable[Message],
        options: ChatOptions | None = None,
        owner: str = "",
        tools: Tools | None = None,
        output: OutputFormat | None = None,
    ) -> PreparedChat:
        """A chat whose history the client sends (the OpenAI and Ollama front doors): the agent's system
        prompt, then the client's messages as given; nothing is loaded or remembered. A `tool_choice`
        the agent's upstream cannot honour is a 422 naming the field, never silently dropped."""
        agent = self.agents.resolve(agent_name)
        provider = self.providers[agent.name]
        if tools is not None and tools.choice not in provider.tool_choices:
            asked = f"function {tools.function!r}" if tools.choice == "function" else repr(tools.choice)
            raise ValidationFailed(
                f"tool_choice {asked} cannot be honoured by the {provider.name} server behind {agent.name!r},"
                " which has no tool_choice; use 'auto' or 'none'",
                "$.tool_choice",
            )
        prepared = self._system(agent)
        prepared.extend(messages)
        if self._log_content:
            logger.debug("stateless chat with %s: %d messages", agent.name, len(prepared))
        chosen = self._options(agent, options)
        return PreparedChat(agent, "", owner, "", prepared, chosen, provider, False, tools, output)

    @staticmethod
    def _system(agent: Agent) -> list[Message]:
        return [Message("system", agent.system_prompt)] if agent.system_prompt else []

    def _options(self, agent: Agent, overrides: ChatOptions | None) -> dict[str, Any]:
        options: dict[str, Any] = dict(agent.options)
        if overrides is not None:
            for field in overrides.__struct_fields__:
                value = getattr(overrides, field)
                if value is not None:
                    options[field] = value
        if self._max_tokens is not None and "max_tokens" not in options and "num_predict" not in options:
            options["max_tokens"] = self._max_tokens
        return options

    async def check_upstreams(self) -> list[UpstreamHealth]:
        """Ask every upstream server of every provider in use, concurrently, each once (no generation)."""
        seen: dict[int, tuple[Provider, Upstream]] = {}
        for provider in self.providers.values():
            for upstream in provider.upstreams:
                seen.setdefault(id(upstream), (provider, upstream))
        pairs = list(seen.values())
        results: list[UpstreamHealth | None] = [None] * len(pairs)

        async def check(index: int, provider: Provider, upstream: Upstream) -> None:
            results[index] = await provider.check(upstream)

        async with anyio.create_task_group() as group:
            for index, (provider, upstream) in enumerate(pairs):
                group.start_soon(check, index, provider, upstream)
        return [result for result in results if result is not None]

    async def stream(self, chat: PreparedChat) -> AsyncGenerator[str | ToolCall | ChatResponse, None]:
        """Yield the reply's text pieces and tool calls as they come, then the whole `ChatResponse`.

        The exchange is remembered when generation produced anything: in full when it completed, as
        a partial reply marked interrupted when the client left or the upstream failed midway. A
        failure before the first piece leaves the conversation as it was. A store that is down when
        the complete reply is to be stored raises `StoreUnavailable` in place of the `ChatResponse`.
        The wait for a generation slot happens inside the first item, so a caller that stops waiting
        also leaves the queue.
        """
        limiter = self.limiter
        started = await limiter.acquire() if limiter is not None else 0.0
        parts: list[str] = []
        calls: list[ToolCall] = []
        completion: Completion | None = None
        try:
            # Closed explicitly rather than by garbage collection: when this generator is closed (the
            # client left), the upstream request must end now, not whenever a cycle collection runs.
            upstream = chat.provider.stream_chat(chat.agent.model, chat.messages, chat.options, chat.tools, chat.output)
            async with aclosing(upstream) as items:
                async for item in items:
                    if type(item) is str:
                        parts.append(item)
                        yield item
                    elif type(item) is ToolCall:
                        calls.append(item)
                        yield item
                    else:
                        assert isinstance(item, Completion)
                        completion = item
            reply = "".join(parts)
            assert completion is not None
            await self._remember(chat, reply, interrupted=False)
            usage = Usage(completion.prompt_tokens, completion.completion_tokens)
            yield ChatResponse(
                chat.conversation_id,
                chat.agent.name,
                chat.agent.model,
                reply,
                completion.done_reason,
                usage,
                calls or None,
                completion.timings,
            )
        finally:
            try:
                if completion is None and parts:
                    try:
                        await self._remember(chat, "".join(parts), interrupted=True)
                    except StoreUnavailable as exc:
                        # The stream is already ending on its own error (or the client left): that error
                        # is the one to report; this one goes to the log.
                        logger.warning(
                            "partial reply in conversation %s not stored: %s", chat.conversation_id, exc.message
                        )
            finally:
                if limiter is not None:
                    limiter.release(started)

    async def complete(self, chat: PreparedChat) -> ChatResponse:
        """The whole reply at once (streamed from upstream all the same, so one code path serves both)."""
        replies = self.stream(chat)
        try:
            async for item in replies:
                if type(item) is ChatResponse:
                    return item
        finally:
            await replies.aclose()
        raise AssertionError("the reply stream ended without its ChatResponse")

    async def _remember(self, chat: PreparedChat, reply: str, interrupted: bool) -> None:
        if not chat.remember:
            return
        if self._log_content:
            logger.debug(
                "conversation %s: %s%s: %s", chat.conversation_id, ASSISTANT, " (interrupted)" * interrupted, reply
            )
        if self.store is None:
            return
        now = self._clock()
        turns = (Turn(USER, chat.message, now, False), Turn(ASSISTANT, reply, now, interrupted))
        # Shielded: this also runs while the request is being cancelled (the client left), and a
        # cancelled await here would lose the exchange.
        with anyio.CancelScope(shield=True):
            await self.store.append(chat.conversation_id, chat.owner, turns, chat.agent.max_turns, chat.agent.name)
