"""The stdio transport: an MCP server piagent starts as a child process, one JSON message per line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from piagent.mcp.messages import (
    TOOLS_CHANGED,
    Incoming,
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

logger = logging.getLogger("piagent.mcp")

_STDERR_LINES = 20  # kept to explain a death
_STDERR_LINE_CHARS = 500
_ABANDONED_IDS = 256  # late answers to requests given up on, ignored rather than taken for a wrong id
# How long the end of a server may straggle: its exit, its closed output and its last stderr lines
# usually arrive together; a grandchild holding a pipe must not keep the calls waiting.
_END_GRACE = 0.5
# Shutdown as the MCP spec asks: close stdin, wait, SIGTERM, wait, SIGKILL.
_EOF_GRACE = 2.0
_TERM_GRACE = 2.0


def _signal_group(pgid: int, signum: int) -> None:
    # The server ran in its own session, so its process group holds whatever it started, too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class StdioChannel(asyncio.SubprocessProtocol):
    """A started MCP server process: requests multiplexed by id over its stdin and stdout.

    It is the process's asyncio protocol, so bytes are handled as they arrive, without reader tasks,
    and the transport is closed by this object, never left to the garbage collector.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        max_message_bytes: int,
        on_exit: Callable[[str], None] | None = None,
    ) -> None:
        self._command = tuple(command)
        self._env = dict(env)
        self._cwd = cwd
        self._limit = max_message_bytes
        self._on_exit = on_exit
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._exit: asyncio.Future[None] | None = None
        self._stdout = bytearray()
        self._stderr_partial = b""
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._pending: dict[int, asyncio.Future[Incoming]] = {}
        self._abandoned: deque[int] = deque(maxlen=_ABANDONED_IDS)
        self._ids = itertools.count(1)
        self._broken: str | None = None
        self.tools_changed = False  # the server said its tool list changed: list it again before use
        self._closing = False
        self._ending: asyncio.TimerHandle | None = None
        self._stopping: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The server process's id (also its process group's), once started."""
        return None if self._transport is None else self._transport.get_pid()

    @property
    def broken(self) -> str | None:
        """Why this channel can no longer be used, or None while it can."""
        return self._broken

    def negotiated(self, version: str) -> None:
        """Nothing to remember: stdio carries no per-request protocol header."""

    async def start(self) -> None:
        """Start the process: no shell, its own session (so its process group can be ended whole)."""
        loop = asyncio.get_running_loop()
        self._exit = loop.create_future()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: self,
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        except OSError as exc:
            self._broken = f"could not start {self._command[0]!r}: {exc.strerror or exc}"
            raise McpUnavailable(self._broken) from exc
        self._transport = transport
        # uvloop's pipe transports are its own classes, alike in what is used here (write, close, buffer size).
        self._stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))

    async def request(self, method: str, params: dict[str, Any] | None, seconds: float) -> bytes:
        """Send a request and wait at most `seconds` for its response's result."""
        request_id = next(self._ids)
        future: asyncio.Future[Incoming] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        answered = False
        try:
            self._write(encode_request(request_id, method, params))
            async with asyncio.timeout(seconds):
                message = await future
            answered = True
        except TimeoutError as exc:
            raise McpTimeout(f"did not answer {method} within {seconds:g} s") from exc
        finally:
            del self._pending[request_id]
            if not answered:
                # Tell the server, and take its late answer for what it is rather than for a wrong id.
                self._abandoned.append(request_id)
                with contextlib.suppress(McpUnavailable):
                    params = {"requestId": request_id, "reason": "piagent stopped waiting"}
                    self._write(encode_notification("notifications/cancelled", params))
        return result_of(message, method)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification."""
        self._write(encode_notification(method, params))

    def _write(self, line: bytes) -> None:
        if self._broken is not None:
            raise McpUnavailable(self._broken)
        assert self._stdin is not None, "start() first"
        if self._stdin.get_write_buffer_size() > self._limit:
            self._fail(f"stopped reading its input (over {self._limit} bytes waiting)")
            raise McpUnavailable(self._broken or "stopped reading its input")
        self._stdin.write(line + b"\n")

    # asyncio calls these as the process's bytes and events arrive.

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Stdout: messages, split on b"\\n" only and bounded; stderr: the server's log, kept short."""
        if fd == 2:
            self._log(data)
            return
        if self._broken is not None:
            return
        self._stdout += data
        try:
            while (end := self._stdout.find(b"\n")) >= 0:
                if end > self._limit:
                    break
                line = bytes(self._stdout[:end])
                del self._stdout[: end + 1]
                if line.strip():
                    self._dispatch(decode_incoming(line))
            if len(self._stdout) > self._limit:
                raise McpProtocolError(f"sent a message over {self._limit} bytes (PIAGENT_MCP_MAX_MESSAGE_BYTES)")
        except McpProtocolError as exc:
            self._fail(f"broke the protocol: {exc.message}")
        except McpUnavailable:
            pass  # a reply to the server's own request could not be written: it is ending anyway

    def _dispatch(self, message: Incoming) -> None:
        if message.method is not None:
            if message.id is not None:
                self._write(reply_to(message))
            elif message.method == TOOLS_CHANGED:
                self.tools_changed = True
            return  # any other notification (log, progress): nothing piagent acts on
        future = self._pending.get(message.id) if isinstance(message.id, int) else None
        if future is None:
            if message.id in self._abandoned:
                return
            raise McpProtocolError(f"answered request id {message.id!r}, which piagent never sent")
        if not future.done():
            future.set_result(message)

    def _log(self, data: bytes) -> None:
        lines = (self._stderr_partial + data).split(b"\n")
        self._stderr_partial = lines.pop()[:_STDERR_LINE_CHARS]
        for raw in lines:
            text = raw[:_STDERR_LINE_CHARS].decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)
                logger.debug("mcp server %s: %s", self._command[0], text)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """Stdout closed: the server is ending (or broken); give it a moment to exit."""
        if fd == 1:
            self._end_soon()

    def process_exited(self) -> None:
        """The process ended; its last output may still be on its way."""
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(None)
        self._end_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        """The process exited and every pipe is closed: nothing more can come."""
        self._end()

    def _end_soon(self) -> None:
        if self._ending is None and self._broken is None:
            self._ending = asyncio.get_running_loop().call_later(_END_GRACE, self._end)

    def _end(self) -> None:
        if self._ending is not None:
            self._ending.cancel()
        code = None if self._transport is None else self._transport.get_returncode()
        reason = "closed its output" if code is None else f"exited with status {code}"
        if self._stderr:
            reason += f"; its last stderr line: {preview(self._stderr[-1], 200)}"
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self._broken is not None:
            return
        self._broken = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(McpUnavailable(reason))
        # A server that broke the protocol cannot be trusted to be in step again: it is ended too.
        self._stop_once()
        if not self._closing:
            logger.warning("mcp server %s %s", self._command[0], reason)
            if self._on_exit is not None:
                self._on_exit(reason)

    def _stop_once(self) -> asyncio.Task[None]:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        return self._stopping

    async def aclose(self) -> None:
        """End the server: stdin closed, then SIGTERM, then SIGKILL to its whole process group."""
        self._closing = True
        self._fail("was shut down")
        await self._stop_once()

    async def _stop(self) -> None:
        transport, exited = self._transport, self._exit
        if transport is None or exited is None:
            return
        if self._stdin is not None:
            self._stdin.close()
        pgid = transport.get_pid()
        for signum, grace in ((None, _EOF_GRACE), (signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, None)):
            if signum is not None:
                _signal_group(pgid, signum)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(exited)
                break
        # Anything the server left behind in its group goes with it.
        _signal_group(pgid, signal.SIGKILL)
        transport.close()
