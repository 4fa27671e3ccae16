"""The soak's hostile phase: attacks from clients and from the model server, each case watched for RSS and /health.

Client cases speak raw HTTP/1.1 over loopback sockets (header floods, half-sent heads past the connection cap,
silent bodies) or httpx (foreign Origin and Host, deeply nested JSON). Upstream cases are agents whose fake model
misbehaves (a huge error body, a reply far past the reply cap, a gzip body, a huge or crowded response head, a
body left open after its done line), asked through /chat (JSON and SSE), the Ollama door and the OpenAI door.
Before each case the server's peak RSS is reset (`echo 5 > /proc/PID/clear_refs`); after it, VmHWM is its peak,
checked with the VmRSS samples against a budget over the idle RSS. A prober asks /health on a fresh connection
every 0.1 s throughout and keeps its statuses and worst latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fakemodel import Script

CLIENT_BUDGET_KIB = 16 * 1024
UPSTREAM_BUDGET_KIB = 32 * 1024
MAX_OPEN_CONNECTIONS = 64  # the soak's PIAGENT_MAX_OPEN_CONNECTIONS: the half-sent heads go past it
HEAD_TIMEOUT = 2.0  # PIAGENT_HEADER_TIMEOUT and PIAGENT_BODY_TIMEOUT in the soak
HOST = b"Host: 127.0.0.1\r\n"
_BLOCK = 64 * 1024

# Agent name -> its hostile model. Sizes are what the fake writes (it builds them in this process, not piagent's).
UPSTREAM_SCRIPTS: dict[str, Script] = {
    "h-error-body": Script(status=500, error="x" * (8 << 20)),  # an 8 MiB error body; piagent keeps 64 KiB
    "h-endless": Script(tokens=["y" * 3000] * 3000),  # a 9 MB reply; the reply cap is 256 KiB
    "h-gzip": Script(tokens=["z" * 3000] * 1000, gzip=True),  # 3 MB of lines as a ~15 KB gzip body
    "h-huge-head": Script(headers={"X-Padding": "p" * (4 << 20)}),  # a 4 MiB response head; the cap is 64 KiB
    "h-many-headers": Script(headers={f"X-H{i}": "v" for i in range(5000)}),  # 5,000 fields; the cap is 100
    "h-done-hang": Script(hang_after_done=True),  # the done line, then the body stays open
}


@dataclasses.dataclass
class Case:
    """What one hostile case did and cost."""

    name: str
    side: str  # "client" or "upstream"
    requests: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    health: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    health_worst_ms: float = 0.0
    health_recovered_s: float | None = None  # the first 200 after a refused probe, from the case's start
    slowest_s: float = 0.0  # the slowest request of the case, answer or close
    largest_sent_kib: int = 0  # floods: the most one connection wrote before the server answered or reset it
    start_kib: int = 0  # VmRSS when the case began (its VmHWM starts there)
    hwm_kib: int = 0
    sampled_peak_kib: int = 0
    seconds: float = 0.0

    def add(self, outcome: str, seconds: float) -> None:
        self.requests += 1
        self.outcomes[outcome] += 1
        self.slowest_s = max(self.slowest_s, seconds)

    def figures(self, idle_kib: int) -> dict[str, Any]:
        peak = max(self.hwm_kib, self.sampled_peak_kib)
        budget = CLIENT_BUDGET_KIB if self.side == "client" else UPSTREAM_BUDGET_KIB
        return {
            "side": self.side,
            "requests": self.requests,
            "outcomes": dict(sorted(self.outcomes.items())),
            "slowest_s": round(self.slowest_s, 2),
            **({"largest_sent_kib": self.largest_sent_kib} if self.largest_sent_kib else {}),
            "health": dict(sorted(self.health.items())),
            "health_worst_ms": round(self.health_worst_ms, 1),
            "health_recovered_s": None if self.health_recovered_s is None else round(self.health_recovered_s, 2),
            "vmrss_at_start_kib": self.start_kib,
            "vmhwm_kib": self.hwm_kib,
            "case_rise_kib": peak - self.start_kib,
            "vmrss_sampled_peak_kib": self.sampled_peak_kib,
            "peak_over_idle_kib": peak - idle_kib,
            "budget_kib": budget,
            "within_budget": peak - idle_kib <= budget,
            "has_500": any(re.search(r"(?:^|\s)500(?:\s|$)", outcome) for outcome in self.outcomes),
            "seconds": round(self.seconds, 1),
        }


def proc_status(pid: int, field: str) -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def reset_peak(pid: int) -> None:
    """Reset VmHWM of `pid` to its current RSS (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def _answer(reader: asyncio.StreamReader, wait: float) -> str:
    """`status code` of the response on `reader`, or how the connection ended without one."""
    try:
        data = await asyncio.wait_for(reader.read(_BLOCK), wait)
        while data and b"\r\n\r\n" not in data and len(data) < _BLOCK:
            more = await asyncio.wait_for(reader.read(_BLOCK), wait)
            if not more:
                break
            data += more
        if b"\r\n\r\n" in data and b'"code"' not in data:
            with contextlib.suppress(TimeoutError, ConnectionError):
                data += await asyncio.wait_for(reader.read(_BLOCK), 1.0)
    except TimeoutError:
        return "no answer"
    except ConnectionError:
        return "reset by the server"
    if not data:
        return "closed, no answer"
    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "garbage"
    code = re.search(rb'"code":\s*"(\w+)"', data)
    return f"{status} {code.group(1).decode() if code else ''}".strip()


async def _flood(port: int, start: bytes, block: bytes, total: int) -> tuple[str, int]:
    """Send `start`, then `block` until `total` bytes or the server answers; the answer and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(start)
        while sent < total and not writer.transport.is_closing():
            writer.write(block)
            await writer.drain()
            sent += len(block)

    sender = asyncio.create_task(send())
    try:
        return await _answer(reader, 30.0), sent
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def _hold(port: int, data: bytes, wait: float) -> str:
    """Send `data` (a head or body left unfinished) and wait for what the server does about it."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"connect failed {type(exc).__name__}"
    try:
        writer.write(data)
        return await _answer(reader, wait)
    finally:
        writer.close()


async def _timed(case: Case, work: Awaitable[str]) -> None:
    started = time.monotonic()
    try:
        outcome = await work
    except httpx.HTTPError as exc:
        outcome = f"client error {type(exc).__name__}"
    case.add(outcome, time.monotonic() - started)


async def header_floods(case: Case, port: int, key: str, huge: bool) -> None:
    """One huge header streamed (16 MiB offered) or 100,000 small ones, 8 connections at once, twice."""
    start = b"POST /chat HTTP/1.1\r\n" + HOST + f"Authorization: Bearer {key}\r\n".encode()
    if huge:
        start, block, total = start + b"X-Huge: ", b"a" * _BLOCK, 16 << 20
    else:
        block = b"X-Many: v\r\n" * 4096
        total = len(block) * 25  # 102,400 fields

    async def one() -> str:
        answer, sent = await _flood(port, start, block, total)
        case.largest_sent_kib = max(case.largest_sent_kib, sent // 1024)  # the kernel's buffers take some
        return answer

    for _ in range(2):
        await asyncio.gather(*(_timed(case, one()) for _ in range(8)))


async def half_sent_heads(case: Case, port: int) -> None:
    """Heads left unfinished on half again as many connections as the cap; each waits to be answered or closed."""
    head = b"GET /health HTTP/1.1\r\n" + HOST + b"X-Never: end"
    count = MAX_OPEN_CONNECTIONS + MAX_OPEN_CONNECTIONS // 2
    await asyncio.gather(*(_timed(case, _hold(port, head, HEAD_TIMEOUT + 10)) for _ in range(count)))


async def silent_bodies(case: Case, port: int, key: str) -> None:
    """Requests whose body stops after its first bytes, 16 at once."""
    head = (
        b"POST /chat HTTP/1.1\r\n"
        + HOST
        + f"Authorization: Bearer {key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
        + b'{"message": "'
    )
    await asyncio.gather(*(_timed(case, _hold(port, head, HEAD_TIMEOUT + 10)) for _ in range(16)))


async def _status(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> str:
    response = await client.request(method, path, **kwargs)
    return f"{path} {response.status_code} {_code(response)}".strip()


def _code(response: httpx.Response) -> str:
    """The error's code; the Ollama door's error is a sentence: its first words."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return ""
    body = response.json()
    if response.status_code == 200:
        return str(body.get("done_reason", "")) if isinstance(body, dict) else ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return repr(" ".join(error.split()[:4]))
    return str(error.get("code", error.get("type", ""))) if isinstance(error, dict) else ""


_DOOR_BODIES = {
    "/chat": {"message": "hi", "agent": "ok", "stream": False},
    "/api/chat": {"model": "ok", "messages": [{"role": "user", "content": "hi"}], "stream": False},
    "/v1/chat/completions": {"model": "ok", "messages": [{"role": "user", "content": "hi"}]},
}


async def foreign_pages(case: Case, client: httpx.AsyncClient, key: str) -> None:
    """Another site's Origin, a cross-site fetch without one, and a rebinding Host, on every door, 10 each."""
    kinds = [
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
        {"Host": "evil.example"},
    ]
    work = [
        _timed(case, _status(client, "POST", path, json=body, headers={"Authorization": f"Bearer {key}", **extra}))
        for path, body in _DOOR_BODIES.items()
        for extra in kinds
        for _ in range(10)
    ]
    for at in range(0, len(work), 6):
        await asyncio.gather(*work[at : at + 6])


async def deep_json(case: Case, client: httpx.AsyncClient, key: str) -> None:
    """Bodies nested 30,000 deep (under the body limit) where each door takes free-form JSON, 10 each."""
    deep = "[" * 30_000 + "]" * 30_000
    bodies = [
        ("/chat", '{"message": "hi", "agent": "ok", "options": ' + deep + "}"),
        ("/api/chat", '{"model": "ok", "messages": [], "options": ' + deep + "}"),
        ("/api/chat", '{"model": "ok", "messages": [], "format": ' + deep + "}"),
        ("/v1/chat/completions", '{"model": "ok", "messages": [], "response_format": ' + deep + "}"),
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for _ in range(10):
        await asyncio.gather(
            *(_timed(case, _status(client, "POST", path, content=body, headers=headers)) for path, body in bodies)
        )


async def _upstream_one(client: httpx.AsyncClient, door: str, agent: str, key: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    messages = [{"role": "user", "content": "hi"}]
    if door == "/chat json":
        return await _status(
            client, "POST", "/chat", json={"message": "hi", "agent": agent, "stream": False}, headers=headers
        )
    if door == "/chat sse":
        path, body = "/chat", {"message": "hi", "agent": agent, "stream": True}
        headers["Accept"] = "text/event-stream"
    elif door == "/api/chat":
        path, body = "/api/chat", {"model": agent, "messages": messages, "stream": True}
    else:
        path, body = "/v1/chat/completions", {"model": agent, "messages": messages, "stream": True}
    async with client.stream("POST", path, json=body, headers=headers) as response:
        text = (await response.aread()).decode("utf-8", "replace")
    if response.status_code != 200:
        code = re.search(r'"code":\s*"(\w+)"', text) or re.search(r'"type":\s*"(\w+)"', text)
        return f"{door} {response.status_code} {code.group(1) if code else ''}".strip()
    ending = re.findall(r'"(?:done_reason|finish_reason|reason)":\s*"(\w+)"', text)
    error = re.search(r'"event":\s*"error".*?"code":\s*"(\w+)"', text) or re.search(
        r'"error":\s*\{.*?"code":\s*"(\w+)"', text
    )
    if error:
        return f"{door} 200 error event {error.group(1)}"
    return f"{door} 200 {ending[-1] if ending else 'no ending'}"


async def upstream_case(case: Case, client: httpx.AsyncClient, agent: str, key: str) -> None:
    """24 requests to one hostile agent, 4 at once, across /chat (JSON, SSE) and the two doors."""
    doors = ["/chat json", "/chat sse", "/api/chat", "/v1/chat/completions"]
    for at in range(0, 24, 4):
        await asyncio.gather(
            *(_timed(case, _upstream_one(client, doors[n % 4], agent, key)) for n in range(at, at + 4))
        )


async def _watch(case: Case, url: str, pid: int, started: float) -> None:
    """Probe /health on fresh connections every 0.1 s and sample VmRSS every 0.02 s, until cancelled."""
    limits = httpx.Limits(max_keepalive_connections=0)

    async def probe() -> None:
        refused = False
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            while True:
                began = time.monotonic()
                try:
                    status = str((await client.get("/health")).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                case.health[status] += 1
                case.health_worst_ms = max(case.health_worst_ms, (time.monotonic() - began) * 1000)
                if status != "200":
                    refused = True
                elif refused and case.health_recovered_s is None:
                    case.health_recovered_s = time.monotonic() - started
                await asyncio.sleep(0.1)

    async def sample() -> None:
        while True:
            case.sampled_peak_kib = max(case.sampled_peak_kib, proc_status(pid, "VmRSS"))
            await asyncio.sleep(0.02)

    await asyncio.gather(probe(), sample())


async def run_case(case: Case, url: str, pid: int, work: Callable[[], Awaitable[None]]) -> None:
    """Reset the server's peak RSS, run `work` under watch, then read the peak."""
    reset_peak(pid)
    case.start_kib = proc_status(pid, "VmRSS")
    started = time.monotonic()
    watcher = asyncio.create_task(_watch(case, url, pid, started))
    try:
        await work()
        await asyncio.sleep(0.3)  # a last probe and sample after the case's end
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    case.seconds = time.monotonic() - started
    case.hwm_kib = proc_status(pid, "VmHWM")


def _not_the_fakes_writes(record: logging.LogRecord) -> bool:
    return record.getMessage() != "socket.send() raised exception."


async def hostile_phase(url: str, pid: int, key: str) -> list[Case]:
    """Every hostile case in turn, one at a time (so each peak is its own)."""
    # The fake (in this process) keeps writing a reply piagent stopped reading, which is the point of those cases;
    # asyncio would log each write after the close.
    logging.getLogger("asyncio").addFilter(_not_the_fakes_writes)
    port = int(url.rsplit(":", 1)[1])
    cases: list[Case] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        plan: list[tuple[str, str, Callable[[Case], Awaitable[None]]]] = [
            ("idle, the baseline beside the cases", "client", lambda c: asyncio.sleep(3.0)),
            ("one huge header", "client", lambda c: header_floods(c, port, key, huge=True)),
            ("100,000 headers", "client", lambda c: header_floods(c, port, key, huge=False)),
            ("half-sent heads past the cap", "client", lambda c: half_sent_heads(c, port)),
            ("silent bodies", "client", lambda c: silent_bodies(c, port, key)),
            ("foreign Origin / Host", "client", lambda c: foreign_pages(c, client, key)),
            ("JSON nested 30,000 deep", "client", lambda c: deep_json(c, client, key)),
        ]
        plan += [
            (agent, "upstream", lambda c, agent=agent: upstream_case(c, client, agent, key))  # type: ignore[misc]
            for agent in UPSTREAM_SCRIPTS
        ]
        for name, side, work in plan:
            case = Case(name, side)
            await run_case(case, url, pid, lambda work=work, case=case: work(case))  # type: ignore[misc]
            cases.append(case)
            print(
                f"  hostile: {name}: {case.requests} requests, {case.seconds:.1f} s, VmHWM {case.hwm_kib} KiB",
                flush=True,
            )
    return cases
