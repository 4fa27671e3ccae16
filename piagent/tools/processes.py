"""Running one owner-declared command: no shell, a scrubbed environment, bounded output, nothing left behind.

The child starts in a session (and so a process group) of its own. On a timeout, or when the caller is
cancelled because the client went away, the whole group gets SIGTERM and, a short grace later, SIGKILL;
when the command exits by itself, whatever it left running in its group is killed. So neither the command
nor anything it started outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import cast

import msgspec

from piagent.tools.base import decode_prefix

# Time a command gets to exit on SIGTERM before SIGKILL: short, so a cancelled call (a client that went
# away) frees everything well within 200 ms.
KILL_GRACE = 0.1


class CommandOutcome(msgspec.Struct, frozen=True):
    """How a command ended: its exit status (None if it timed out), its output and whether that was cut."""

    returncode: int | None
    output: str
    truncated: bool


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class _Capture(asyncio.SubprocessProtocol):
    """The child's output kept up to a cap (the rest counted and dropped, so the child never blocks on a full
    pipe), and two moments: the child exited, and its output pipe closed."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = bytearray()
        self.dropped = 0
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self.transport: asyncio.SubprocessTransport | None = None
        self.abandoned_group: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A subprocess transport, though uvloop's does not inherit from asyncio's class.
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        room = max(self.cap - len(self.kept), 0)
        self.kept += data[:room]
        self.dropped += max(len(data) - room, 0)

    def process_exited(self) -> None:
        self.exited.set()
        if self.abandoned_group is not None:
            self.finish(self.abandoned_group)

    def abandon(self, pgid: int) -> None:
        """The caller is gone: SIGTERM now, and when the leader exits (or a grace later) SIGKILL and close."""
        self.abandoned_group = pgid
        _signal_group(pgid, signal.SIGTERM)
        if self.exited.is_set():
            self.finish(pgid)
        else:
            asyncio.get_running_loop().call_later(KILL_GRACE, self.finish, pgid)

    def finish(self, pgid: int) -> None:
        """Kill whatever is left of the group and close the pipes."""
        _signal_group(pgid, signal.SIGKILL)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def render(self) -> tuple[str, bool]:
        if not self.dropped:
            return self.kept.decode("utf-8", "replace"), False
        return f"{decode_prefix(bytes(self.kept))}\n[truncated: {self.dropped} bytes more]", True


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    time_limit: float,
    output_max_bytes: int,
) -> CommandOutcome:
    """Run `argv` (never through a shell) with stdout and stderr together, capped, within `time_limit` seconds."""
    loop = asyncio.get_running_loop()
    transport, capture = await loop.subprocess_exec(
        lambda: _Capture(output_max_bytes),
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
        close_fds=True,
    )
    pgid = transport.get_pid()  # a new session's leader leads its own process group
    try:
        async with asyncio.timeout(time_limit):
            await capture.exited.wait()
        # The output still in the pipe arrives at once, unless something the command left running holds it open.
        await _wait(capture.closed, KILL_GRACE)
    except TimeoutError:
        _signal_group(pgid, signal.SIGTERM)
        await _wait(capture.exited, KILL_GRACE)
        capture.finish(pgid)
        await _wait(capture.closed, KILL_GRACE)
        text, truncated = capture.render()
        return CommandOutcome(None, text, truncated)
    except BaseException:
        # Cancelled: the caller must be let go at once, so the rest happens in callbacks rather than here. The
        # event loop reaps the leader; init reaps any other member of the group.
        capture.abandon(pgid)
        raise
    # Anything the command left running in its group (a `&` child) goes with it.
    capture.finish(pgid)
    text, truncated = capture.render()
    return CommandOutcome(transport.get_returncode(), text, truncated)
