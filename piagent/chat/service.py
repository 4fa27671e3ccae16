"""The chat service: agent, memory and prompt around the provider calls of a reply; knows nothing of HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any

import anyio

from piagent.agents import Agent, Agents
from piagent.chat.history import messages_of, record_result, turn_of
from piagent.chat.prepared import ChatItem, PreparedChat, new_conversation_id
from piagent.exceptions import StoreUnavailable, ValidationFailed, clip
from piagent.generations import GenerationLimiter
from piagent.loop import AgentTools, LoopDone, ToolObserver, run_loop
from piagent.providers.base import Completion, Message, OutputFormat, Provider, ToolCall, Tools
from piagent.providers.pool import Upstream
from piagent.schemas import (
    ChatOptions,
    ChatRequest,
    ChatResponse,
    QueuedEvent,
    ToolCallEvent,
    ToolResultEvent,
    ToolStep,
    UpstreamHealth,
    Usage,
)
from piagent.stores.base import ASSISTANT, USER, MemoryStore, Turn
from piagent.tools.base import Tool, ToolError

logger = logging.getLogger("piagent.chat")


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
        acting: Mapping[str, AgentTools] | None = None,
        mcp_tools: Callable[[Sequence[str]], Awaitable[Sequence[Tool]]] | None = None,
        max_delegation_depth: int = 2,
        on_tool: ToolObserver | None = None,
    ) -> None:
        """`providers` maps each agent's name to its provider; a single provider serves every agent.

        `acting` holds the tools of the agents that have some; `mcp_tools` gives the tools of the named
        MCP servers (started on first use); an agent asks another (`ask_agent`) at most
        `max_delegation_depth` deep, and never one already answering in the chain. `on_tool(tool, outcome)`
        is told how each call of the agents' tools went (the metrics, when they are on).
        """
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
        self._mcp_tools = mcp_tools
        self._max_depth = max_delegation_depth
        self._on_tool = on_tool
        # The agents answering in this request, outermost first (task groups copy it into tool tasks).
        self._chain: ContextVar[tuple[str, ...]] = ContextVar("piagent_delegation_chain", default=())
        self.acting: dict[str, AgentTools] = {}
        for name, acting_tools in (acting or {}).items():
            agent = agents[name]
            tools = dict(acting_tools.tools)
            if agent.delegates:
                from piagent.tools.delegate import AskAgent  # only for agents that ask agents

                timeout = acting_tools.limits.reply_timeout

                async def ask(target: str, question: str, caller: str = name) -> str:
                    return await self._ask(caller, target, question)

                tools[AskAgent.name] = AskAgent(agent.delegates, ask, timeout, lambda n: agents[n].description)
            self.acting[name] = AgentTools(tools, acting_tools.limits, acting_tools.mcp)

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
        messages.extend(messages_of(history))
        messages.append(Message(USER, request.message))
        options = self._options(agent, request.options)
        if self._log_content:
            logger.debug("conversation %s: user: %s", conversation_id, request.message)
        provider = self.providers[agent.name]
        acting = self.acting.get(agent.name)
        return PreparedChat(agent, conversation_id, owner, request.message, messages, options, provider, acting=acting)

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
            asked = f"function {clip(tools.function or '')}" if tools.choice == "function" else clip(tools.choice)
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
        # The client's own tools win: it runs them itself; without any, the agent's run here.
        acting = self.acting.get(agent.name) if tools is None else None
        return PreparedChat(agent, "", owner, "", prepared, chosen, provider, False, tools, output, acting)

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

    async def stream(self, chat: PreparedChat, queued: bool = False) -> AsyncGenerator[ChatItem, None]:
        """Yield the reply's text pieces, tool calls and tool steps as they come, then the whole `ChatResponse`.

        The exchange is remembered when generation produced anything: in full when it completed, as
        a partial reply marked interrupted when the client left or the upstream failed midway (with the
        tool steps finished by then). A failure before the first piece leaves the conversation as it
        was. A store that is down when the complete reply is to be stored raises `StoreUnavailable` in
        place of the `ChatResponse`. The wait for a generation slot happens inside the first item, so a
        caller that stops waiting also leaves the queue; the slot is held through every step of a tool loop.
        With `queued`, a request that has to wait first yields a `QueuedEvent`, and another each time it
        moves up (a full queue still raises `Busy` before anything is yielded).
        """
        limiter = self.limiter
        if limiter is None:
            started = 0.0
        elif not queued:
            started = await limiter.acquire()
        else:
            ticket = limiter.enter()
            try:
                ahead = None if ticket.granted else limiter.ahead(ticket)
                while ahead is not None:
                    yield QueuedEvent(ahead + 1, ahead)
                    ahead = await limiter.wait(ticket, moves=True)
            except BaseException:  # the client left (closed or cancelled here), or the queue was refused
                limiter.leave(ticket)
                raise
            started = limiter.now()
        parts: list[str] = []
        calls: list[ToolCall] = []
        steps: list[Message] = []
        shown: list[ToolStep] = []
        completion: Completion | None = None
        final: str | None = None
        try:
            # Closed explicitly rather than by garbage collection: when this generator is closed (the
            # client left), the upstream request must end now, not whenever a cycle collection runs.
            async with aclosing(await self._source(chat, steps)) as items:
                async for item in items:
                    if type(item) is str:
                        parts.append(item)
                    elif type(item) is ToolCall:
                        calls.append(item)
                    elif type(item) is ToolCallEvent:
                        shown.append(ToolStep(item.id, item.name, item.arguments))
                    elif type(item) is ToolResultEvent:
                        record_result(shown, item)
                    elif type(item) is LoopDone:
                        completion, final = item.completion, item.text
                        continue
                    else:
                        assert isinstance(item, Completion)
                        completion = item
                        continue
                    yield item
            reply = "".join(parts) if final is None else final
            assert completion is not None
            await self._remember(chat, reply, steps, interrupted=False)
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
                shown or None,
            )
        finally:
            try:
                if completion is None and (parts or steps):
                    try:
                        await self._remember(chat, "".join(parts), steps, interrupted=True)
                    except StoreUnavailable as exc:
                        # The stream is already ending on its own error (or the client left): that error
                        # is the one to report; this one goes to the log.
                        logger.warning(
                            "partial reply in conversation %s not stored: %s", chat.conversation_id, exc.message
                        )
            finally:
                if limiter is not None:
                    limiter.release(started)

    async def _source(self, chat: PreparedChat, steps: list[Message]) -> AsyncGenerator[Any, None]:
        """Where the reply's items come from: the agent's tool loop, or one call passing the client's tools on."""
        model, messages, options = chat.agent.model, chat.messages, chat.options
        acting = chat.acting
        if acting is None:
            return chat.provider.stream_chat(model, messages, options, chat.tools, chat.output)
        tools: dict[str, Tool] = dict(acting.tools)
        if acting.mcp and self._mcp_tools is not None:
            tools.update((tool.name, tool) for tool in await self._mcp_tools(acting.mcp))
        return run_loop(chat.provider, model, messages, options, tools, acting.limits, steps, on_tool=self._on_tool)

    async def _ask(self, caller: str, name: str, question: str) -> str:
        """`ask_agent`: `name`'s answer to `question`, with its own prompt, model, tools and limits.

        It runs inside the caller's generation (no second slot, which would wait on itself), refused
        past the depth limit or when `name` is already answering in this chain.
        """
        chain = self._chain.get() or (caller,)
        if name in chain:
            raise ToolError(f"{name} is already answering in this chain ({' > '.join(chain)}); cycles are refused")
        if len(chain) > self._max_depth:
            raise ToolError(f"agents may ask agents at most {self._max_depth} deep ({' > '.join(chain)})")
        agent = self.agents[name]
        chat = self.prepare_stateless(name, [Message(USER, question)])
        token = self._chain.set((*chain, name))
        try:
            replies = await self._source(chat, [])
            async with aclosing(replies) as items:
                parts: list[str] = []
                async for item in items:
                    if type(item) is str:
                        parts.append(item)
                    elif type(item) is LoopDone:
                        return item.text
            logger.debug("%s asked %s (%s)", caller, agent.name, agent.model)
            return "".join(parts)
        finally:
            self._chain.reset(token)

    async def complete(self, chat: PreparedChat, on_first: Callable[[], object] | None = None) -> ChatResponse:
        """The whole reply at once (streamed from upstream all the same, so one code path serves both).

        `on_first()` is called when the reply's first item arrives (its first token, as a stream would send it).
        """
        replies = self.stream(chat)
        try:
            async for item in replies:
                if on_first is not None:
                    on_first()
                    on_first = None
                if type(item) is ChatResponse:
                    return item
        finally:
            await replies.aclose()
        raise AssertionError("the reply stream ended without its ChatResponse")

    async def _remember(self, chat: PreparedChat, reply: str, steps: Sequence[Message], interrupted: bool) -> None:
        if not chat.remember:
            return
        if self._log_content:
            logger.debug(
                "conversation %s: %s%s: %s", chat.conversation_id, ASSISTANT, " (interrupted)" * interrupted, reply
            )
        if self.store is None:
            return
        now = self._clock()
        turns = (
            Turn(USER, chat.message, now, False),
            *(turn_of(step, now) for step in steps),
            Turn(ASSISTANT, reply, now, interrupted),
        )
        store, args = self.store, (chat.conversation_id, chat.owner, turns, chat.agent.max_turns, chat.agent.name)
        if getattr(store, "never_waits", False) is True:  # it cannot be interrupted: nothing to shield
            await store.append(*args)
            return
        # Shielded: this also runs while the request is being cancelled (the client left), and a
        # cancelled await here would lose the exchange.
        with anyio.CancelScope(shield=True):
            await store.append(*args)
