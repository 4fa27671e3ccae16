"""The Streamable HTTP transport: each message POSTed to one URL, answered with JSON or an event stream."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx

from piagent.mcp.messages import (
    TOOLS_CHANGED,
    Incoming,
    McpError,
    McpProtocolError,
    McpTimeout,
    McpUnavailable,
    decode_incoming,
    encode_notification,
    encode_request,
    preview,
    reply_to,
    result_of,
)

_CLOSE_TIMEOUT = 2.0  # for the DELETE that ends the session: shutdown must not wait on a slow server


class SessionExpired(McpUnavailable):
    """The server no longer knows this session (404 to a request carrying its id): initialize again."""


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise McpProtocolError(f"sent a response over {limit} bytes (PIAGENT_MCP_MAX_MESSAGE_BYTES)")
    return bytes(body)


async def _events(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The `data` of each server-sent event, lines split on b"\\n" only, each event at most `limit` bytes."""
    buffer = bytearray()
    data = bytearray()
    has_data = False
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if not line:
                if has_data:
                    yield bytes(data)
                data.clear()
                has_data = False
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                if has_data:
                    data += b"\n"
                data += value[1:] if value.startswith(b" ") else value
                has_data = True
            # `event`, `id`, `retry` and comments carry nothing piagent uses.
        if len(buffer) > limit or len(data) > limit:
            raise McpProtocolError(f"sent an event over {limit} bytes (PIAGENT_MCP_MAX_MESSAGE_BYTES)")
    if has_data:
        yield bytes(data)


class HttpChannel:
    """A session with an MCP server at one URL, over the shared httpx client."""

    def __init__(self, url: str, client: httpx.AsyncClient, max_message_bytes: int) -> None:
        self._url = url
        self._client = client
        self._limit = max_message_bytes
        self._ids = itertools.count(1)
        self._session_id: str | None = None
        self._version: str | None = None
        self._broken: str | None = None
        self.tools_changed = False  # the server said its tool list changed: list it again before use

    @property
    def broken(self) -> str | None:
        """Why this channel can no longer be used, or None while it can."""
        return self._broken

    def negotiated(self, version: str) -> None:
        """Remember the protocol version, sent as `MCP-Protocol-Version` on every later request."""
        self._version = version

    async def start(self) -> None:
        """Nothing to open: the first POST (initialize) starts the session."""

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if self._session_id is not None:
            headers["Mcp-Session-Id"] = self._session_id
        if self._version is not None:
            headers["MCP-Protocol-Version"] = self._version
        return headers

    async def request(self, method: str, params: dict[str, Any] | None, seconds: float) -> bytes:
        """POST a request and wait at most `seconds` for its result, from JSON or an event stream."""
        if self._broken is not None:
            raise McpUnavailable(self._broken)
        request_id = next(self._ids)
        try:
            async with asyncio.timeout(seconds):
                return await self._post(request_id, method, encode_request(request_id, method, params), seconds)
        except TimeoutError as exc:
            raise McpTimeout(f"did not answer {method} within {seconds:g} s") from exc

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """POST a notification (the server answers 202 with no body)."""
        try:
            async with self._client.stream(
                "POST", self._url, content=encode_notification(method, params), headers=self._headers()
            ) as response:
                await _read_bounded(response, self._limit)
        except httpx.TransportError as exc:
            raise McpUnavailable(f"cannot be reached at {self._url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise McpError(f"answered {method} with HTTP {response.status_code}")

    async def _post(self, request_id: int, method: str, body: bytes, seconds: float) -> bytes:
        try:
            async with self._client.stream(
                "POST", self._url, content=body, headers=self._headers(), timeout=seconds
            ) as response:
                return await self._answer(request_id, method, response)
        except httpx.TimeoutException as exc:
            raise McpTimeout(f"did not answer {method} within {seconds:g} s") from exc
        except httpx.TransportError as exc:
            raise McpUnavailable(f"cannot be reached at {self._url}: {exc!r}") from exc

    async def _answer(self, request_id: int, method: str, response: httpx.Response) -> bytes:
        status = response.status_code
        if status == 404 and self._session_id is not None:
            self._session_id = None  # nothing left to DELETE
            self._broken = "ended the session (HTTP 404)"
            raise SessionExpired(self._broken)
        if method == "initialize" and (session_id := response.headers.get("mcp-session-id")):
            self._session_id = session_id
        content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if status >= 300:
            body = await _read_bounded(response, self._limit)
            with contextlib.suppress(McpProtocolError):
                message = decode_incoming(body)
                if message.error is not None:
                    result_of(message, method)  # raises McpRemoteError with the server's own words
            raise McpError(f"answered {method} with HTTP {status}: {preview(body)}")
        if content_type == "application/json":
            message = decode_incoming(await _read_bounded(response, self._limit))
            return self._result(request_id, method, message)
        if content_type == "text/event-stream":
            async for data in _events(response, self._limit):
                message = decode_incoming(data)
                if message.method is not None:
                    if message.id is not None:
                        await self._reply(reply_to(message))
                    elif message.method == TOOLS_CHANGED:
                        self.tools_changed = True
                    continue
                return self._result(request_id, method, message)
            raise McpProtocolError(f"ended the event stream without answering {method}")
        raise McpProtocolError(f"answered {method} with HTTP {status} and content type {content_type!r}")

    def _result(self, request_id: int, method: str, message: Incoming) -> bytes:
        if message.id != request_id:
            raise McpProtocolError(f"answered request id {message.id!r} to request id {request_id}")
        return result_of(message, method)

    async def _reply(self, body: bytes) -> None:
        async with self._client.stream("POST", self._url, content=body, headers=self._headers()) as response:
            await _read_bounded(response, self._limit)

    async def aclose(self) -> None:
        """End the session with a DELETE (a server that does not allow it answers 405: fine)."""
        self._broken = "was shut down"
        if self._session_id is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            await self._client.delete(self._url, headers=self._headers(), timeout=_CLOSE_TIMEOUT)
        self._session_id = None
