"""Relaying a reply to the client: the three stream formats, and watching for the client leaving."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import TypeVar, cast

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from piagent.chat import ChatItem, ChatService, PreparedChat
from piagent.exceptions import PiagentError, ShuttingDown
from piagent.generations import GenerationLimiter
from piagent.http.formats import StreamFormat
from piagent.http.requests import ARRIVED_KEY, REQUEST_ID_KEY, SERVER_SEND_KEY, get_runtime
from piagent.ready import WAITING, ReadySource
from piagent.schemas import ChatResponse, QueuedEvent, ToolCall, ToolCallEvent, ToolResultEvent

logger = logging.getLogger("piagent.http.streaming")
T = TypeVar("T")

# A burst gathered into one write is cut at this size, so a long one still leaves in pieces as it is read.
MAX_WRITE_BYTES = 64 * 1024


class ClientDisconnected(PiagentError):
    """The client went away before its answer was ready; nobody will read this response."""

    code = "client_disconnected"
    status_code = 499


async def _flush(send: Send, parts: list[bytes]) -> None:
    """Send what `parts` gathered as one body write, and empty it (no write for nothing)."""
    body = b"".join(parts)
    parts.clear()
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _watch(receive: Receive, scope: anyio.CancelScope) -> asyncio.Task[None]:
    """A task that cancels `scope` when the client disconnects; cancel it when the work is over.

    A plain asyncio task rather than an anyio task group: a group cost ~110 us of CPU per use against ~25 us
    (uvloop, measured), twice per streamed reply. `scope` is still anyio's, so shields inside it (the store
    writes) hold. The task is cancelled, not awaited: it waits in `receive` and reads no message once cancelled.
    """
    return asyncio.get_running_loop().create_task(_cancel_on_disconnect(receive, scope))


def _halted_error() -> ShuttingDown:
    return ShuttingDown("piagent is shutting down; the reply was ended after the grace period")


async def until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]], limiter: GenerationLimiter | None = None
) -> T:
    """Await `work()` unless the client disconnects first: then cancel it and raise ClientDisconnected.

    With a `limiter`, a shutdown that halts generations cancels the work too, raising ShuttingDown.
    Only for after the request body has been read: the watcher consumes `receive`.
    """
    scope = anyio.CancelScope()
    watcher = _watch(receive, scope)
    try:
        with scope:
            if limiter is not None:
                limiter.watch(scope)
            try:
                return await work()
            finally:
                if limiter is not None:
                    limiter.unwatch(scope)
    finally:
        watcher.cancel()
    # Only a cancelled scope gets here: the client left, or a shutdown halted the work.
    if limiter is not None and limiter.halted:
        raise _halted_error()
    raise ClientDisconnected("the client disconnected")


async def reply(
    request: Request,
    chat: ChatService,
    prepared: PreparedChat,
    *,
    stream: bool,
    whole: Callable[[ChatResponse], Response],
    stream_format: Callable[[], StreamFormat],
    conversation_id: str = "",
) -> Response | ReplyStream:
    """A chat door's answer: `whole(reply)` as one response, or the reply streamed in `stream_format()`.

    A streamed reply's first item is awaited before any byte is sent, so a failure up to the first
    token (a full queue included) still gets its real status code instead of a 200 with an error inside.
    In a format with a `queued` event, a request that must wait for a slot commits its 200 with that
    event (it was admitted to the queue); a failure after it is an in-band `error` event.
    """
    limiter = chat.limiter
    observer = get_runtime(request).metrics
    started: float = request.scope.get(ARRIVED_KEY) or time.perf_counter()  # timed from the request's arrival
    if not stream:
        if observer is None:
            return whole(await until_disconnect(request.receive, partial(chat.complete, prepared), limiter))
        first_at: list[float] = []  # when the model's first token arrived, as the chat service saw it
        work = partial(chat.complete, prepared, lambda: first_at.append(time.perf_counter()))
        response = await until_disconnect(request.receive, work, limiter)
        first_token = first_at[0] - started if first_at else None
        observer.generation(
            prepared.agent.name, prepared.owner, first_token, time.perf_counter() - started, response.usage
        )
        return whole(response)
    fmt = stream_format()
    replies = chat.stream(prepared, queued=fmt.queued is not None)
    first = await until_disconnect(request.receive, replies.__anext__, limiter)
    on_end = None
    if observer is not None:
        # The first item is the first token unless it is the queue's news: then the stream times the first
        # real item when it leaves, and hands that time to `on_end`.
        first_token = None if type(first) is QueuedEvent else time.perf_counter() - started
        agent, owner = prepared.agent.name, prepared.owner

        def on_end(final: ChatResponse | None, first_sent: float | None) -> None:
            usage = final.usage if final is not None else None
            waited = first_token if first_sent is None else first_sent - started
            observer.generation(agent, owner, waited, time.perf_counter() - started, usage)

    return ReplyStream(first, replies, fmt, conversation_id, limiter, on_end)


class ReplyStream:
    """An ASGI response relaying a reply whose first item was already read (so the status is honest).

    It watches for the client leaving and then closes the reply at once, which closes the upstream
    request, stores the partial reply and frees the generation slot; it closes the reply itself in
    every case rather than trusting garbage collection to finalize the generator. A shutdown that
    halts generations (the `limiter`'s) ends the stream with an `error` event where the format has one.
    """

    def __init__(
        self,
        first: ChatItem,
        replies: AsyncGenerator[ChatItem, None],
        stream_format: StreamFormat,
        conversation_id: str,
        limiter: GenerationLimiter | None = None,
        on_end: Callable[[ChatResponse | None, float | None], None] | None = None,
    ) -> None:
        self._first = first
        # Told the reply (None when it did not end whole) once the stream is over, and when the first item
        # after the queue's news left (None when the reply did not wait, or ended before one).
        self._on_end = on_end
        self._final: ChatResponse | None = None
        self._first_sent: float | None = None
        self._first_out = False  # the first item (a token) went out with the start, before the relay began
        self._replies = replies
        self._format = stream_format
        self._label = f"conversation {conversation_id}" if conversation_id else "a stateless chat"
        self._limiter = limiter
        self._request_id: str | None = None  # for an in-band error event, from the request's scope
        self._headers = [
            (b"content-type", stream_format.media_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        if conversation_id:  # the stateless front doors have none
            self._headers.append((b"x-conversation-id", conversation_id.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self._limiter
        self._request_id = scope.get(REQUEST_ID_KEY)
        complete = relayed = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            # The start went through every middleware; the body goes to the server's own send (they act on
            # the start only), which saves a coroutine per middleware on every write of a trickle.
            send = scope.get(SERVER_SEND_KEY, send)
            if type(self._first) is str:  # the first token leaves now, before the watch below is set up
                body = self._format.start + self._format.token(self._first)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                self._first_out = True
            cancel = anyio.CancelScope()
            watcher = _watch(receive, cancel)
            try:
                with cancel:
                    if limiter is not None:
                        limiter.watch(cancel)  # cancels at once if the halt came before this
                    try:
                        complete = await self._relay(send)
                        relayed = True
                    finally:
                        if limiter is not None:
                            limiter.unwatch(cancel)
            finally:
                watcher.cancel()
        finally:
            # Closing the reply closes the upstream request, stores the partial reply and frees the slot; a reply
            # read to its end (the relay reads past the ChatResponse) has nothing left to close or to shield.
            if getattr(self._replies, "ag_frame", True) is not None:
                with anyio.CancelScope(shield=True):
                    await self._replies.aclose()
        if not relayed and limiter is not None and limiter.halted:
            logger.warning("reply in %s ended by the shutdown", self._label)
            complete = await self._send_error(_halted_error(), send)
        if complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self._on_end is not None:
            self._on_end(self._final, self._first_sent)

    async def _relay(self, send: Send) -> bool:
        """Send every event; False when the transfer must be left incomplete to signal an error.

        The first item leaves at once; after it, whatever the reply has ready (a burst of tokens from one
        upstream read) leaves in one write, and nothing is held back to wait for more.
        """
        fmt = self._format
        token = fmt.token
        item = self._first
        start = fmt.start  # goes out with the first event
        parts: list[bytes] = []
        source = ReadySource(self._replies)
        try:
            if type(item) is QueuedEvent:
                item = await self._wait_in_queue(send, source, item)
                start = b""
            if type(item) is not ChatResponse:
                if not self._first_out:
                    parts.append(start + (token(item) if type(item) is str else self._other(item)))
                    await _flush(send, parts)
                start = b""
                if self._on_end is not None and type(self._first) is QueuedEvent:
                    self._first_sent = time.perf_counter()
                size = 0
                while True:
                    ready = source.ready()
                    if ready is WAITING:
                        if parts:
                            try:
                                await _flush(send, parts)
                            except BaseException as exc:  # the step left waiting must end before the reply closes
                                await source.abandon(exc)
                                raise
                            size = 0
                        item = await source.wait()
                    else:
                        item = cast(ChatItem, ready)
                    if type(item) is ChatResponse:
                        break
                    body = token(item) if type(item) is str else self._other(item)
                    parts.append(body)
                    size += len(body)
                    if size >= MAX_WRITE_BYTES:
                        await _flush(send, parts)
                        size = 0
            if type(item) is ChatResponse:
                self._final = item
                await self._read_end(source)
            if fmt.done is not None:
                # The format's start goes with the first event, which is this one for a reply with no text.
                parts.append(start + fmt.done(item))
            await _flush(send, parts)
            return True
        except StopAsyncIteration:
            await _flush(send, parts)
            return True
        except PiagentError as exc:
            logger.warning("reply in %s ended early: %s", self._label, exc.message)
            await _flush(send, parts)
            return await self._send_error(exc, send)
        except Exception:
            logger.exception("reply in %s failed", self._label)
            await _flush(send, parts)
            return await self._send_error(PiagentError("piagent failed while relaying the reply"), send)

    async def _wait_in_queue(self, send: Send, source: ReadySource[ChatItem], item: ChatItem) -> ChatItem:
        """Send the queue's news as it comes (each at once: the client shows it) until the reply's first item,
        returned unsent. Apart from the relay's loop, so its per-token path is the same for every reply."""
        parts = [self._format.start + self._other(item)]
        while type(item) is QueuedEvent:
            await _flush(send, parts)
            ready = source.ready()
            item = cast(ChatItem, ready) if ready is not WAITING else await source.wait()
            if type(item) is QueuedEvent:
                parts.append(self._other(item))
        return item

    @staticmethod
    async def _read_end(source: ReadySource[ChatItem]) -> None:
        """Read the reply past its ChatResponse to its end: what is left there (freeing the slot) runs now, under
        the relay's watch like every other step, and the finished generator then needs no closing."""
        try:
            rest = source.ready()
            if rest is WAITING:
                rest = await source.wait()
        except StopAsyncIteration:
            return
        raise AssertionError(f"the reply went on after its ChatResponse with a {type(rest).__name__}")

    def _other(self, item: ChatItem) -> bytes:
        """A client's tool call, a step of the agent's tool loop or the queue's news, in the format (or nothing)."""
        fmt = self._format
        if type(item) is ToolCall:
            return fmt.tool_call(item) if fmt.tool_call is not None else b""
        if type(item) is QueuedEvent:
            return fmt.queued(item) if fmt.queued is not None else b""
        assert type(item) is ToolCallEvent or type(item) is ToolResultEvent
        return fmt.step(item) if fmt.step is not None else b""

    async def _send_error(self, exc: PiagentError, send: Send) -> bool:
        if self._format.error is None:
            return False  # plain text has no error event: an unfinished transfer tells the client
        await send({"type": "http.response.body", "body": self._format.error(exc, self._request_id), "more_body": True})
        return True
