"""Soak piagent: minutes of mixed load with random client disconnects, hostile input and upstream faults.

    python bench/soak.py                 # 10 minutes, the figures go in bench/SOAK.md
    python bench/soak.py --duration 60   # a quick look

It serves piagent for real (`python -m piagent`, uvicorn with httptools and uvloop) in front of the
fake model server (bench/fakemodel, a loopback server in this process, playing Ollama), whose agents are
scripted to misbehave: errors before and during the reply, resets, stalls (first-token and idle
timeouts), invalid JSON, lines over the cap, bytes that are not UTF-8. Clients stream in every
format, continue conversations, leave early, send wrong keys and broken bodies, and overflow the
generation queue. It reports requests, outcomes by kind, the server's RSS at start, after warm-up
and at the end, and the upstream connections left open, and checks the targets: no 500, RSS growth
under 5% after warm-up, every upstream connection closed once piagent has shut down.

Then, unless `--no-hostile`, the hostile phase (bench/soak_hostile.py): header floods, half-sent heads past
the connection cap, silent bodies, foreign Origin and Host, deeply nested JSON, and agents whose model sends a
huge error body, a reply far past the reply cap, a gzip body, a huge or crowded response head, or leaves its
body open after the done line. Per case: outcomes, /health's statuses and worst latency, and the server's peak
RSS over its idle RSS at start, within +16 MiB for client cases and +32 MiB for upstream cases.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fakemodel import FakeModel, Script
from soak_hostile import HEAD_TIMEOUT, MAX_OPEN_CONNECTIONS, UPSTREAM_SCRIPTS, Case, hostile_phase

KEYS = ("soak-key-one-0123456789abcdef", "soak-key-two-0123456789abcdef")
LINE_CAP = 4096
WORDS = [" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".", "\u2028", " é", " 🥧"]


def _line(text: str) -> bytes:
    return json.dumps({"model": "m", "message": {"role": "assistant", "content": text}, "done": False}).encode() + b"\n"


def _tokens(n: int) -> list[str]:
    return [WORDS[i % len(WORDS)] for i in range(n)]


# Agent name -> (weight, script of its model). The weights make about 60% of generations healthy.
SCRIPTS: dict[str, tuple[int, Script]] = {
    "ok": (45, Script(tokens=_tokens(24), delay=0.002)),
    "slow": (15, Script(tokens=_tokens(40), delay=0.01, first_delay=0.1)),
    "error-mid": (5, Script(tokens=_tokens(12), delay=0.004, error_after=6, error="CUDA out of memory at /srv/x")),
    "reset-mid": (5, Script(tokens=_tokens(12), delay=0.01, reset_after=6)),
    "stall-mid": (3, Script(tokens=_tokens(12), delay=0.004, stall_after=4)),
    "stall-head": (1, Script(stall_before_headers=True)),
    "status-500": (4, Script(status=500, error="model requires more system memory")),
    "status-503": (3, Script(status=503, error="server busy")),
    "status-404": (3, Script(status=404, error="model not found, try pulling it first")),
    "bad-json": (4, Script(raw_body=[_line("a"), _line("b"), b"{nope\n"])),
    "not-utf8": (3, Script(raw_body=[_line("a"), b'{"message":{"content":"\xff\xfe"},"done":false}\n'])),
    "over-cap": (3, Script(raw_body=[_line("a"), b'{"message":{"content":"' + b"x" * (LINE_CAP * 2) + b'"}}\n'])),
    "reset-head": (2, Script(reset_after=-1)),
}
ACCEPTS = ["text/plain", "text/event-stream", "application/x-ndjson"]
HOSTILE: list[tuple[str, bytes, dict[str, str]]] = [
    ("invalid-json", b"{nope", {"Content-Type": "application/json"}),
    ("not-utf8", b'{"message": "\xff"}', {"Content-Type": "application/json"}),
    ("too-large", b'{"message": "' + b"x" * 70_000 + b'"}', {"Content-Type": "application/json"}),
    ("wrong-type", b'{"message": "hi"}', {"Content-Type": "text/plain"}),
    ("unknown-field", b'{"message": "hi", "mood": 1}', {"Content-Type": "application/json"}),
    ("too-many-tokens", b'{"message": "hi", "options": {"max_tokens": 999999}}', {"Content-Type": "application/json"}),
    ("bad-agent", b'{"message": "hi", "agent": "../etc"}', {"Content-Type": "application/json"}),
]


def rss_kib(pid: int) -> int:
    """The resident set size of `pid` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Tally:
    """Outcomes by kind."""

    def __init__(self) -> None:
        self.requests = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()

    def add(self, kind: str, status: int | None = None) -> None:
        self.kinds[kind] += 1
        if status is not None:
            self.statuses[status] += 1


async def one_chat(
    client: httpx.AsyncClient, rng: random.Random, tally: Tally, conversations: list[str], key: str
) -> None:
    names = list(SCRIPTS)
    agent = rng.choices(names, weights=[SCRIPTS[n][0] for n in names])[0]
    stream = rng.random() < 0.75
    accept = rng.choice(ACCEPTS) if stream else "application/json"
    body: dict[str, Any] = {
        "message": rng.choice(["hi", "tell me more", "é🥧\u2028"]),
        "agent": agent,
        "stream": stream,
    }
    if conversations and rng.random() < 0.5:
        body["conversation_id"] = rng.choice(conversations)
    roll = rng.random()
    headers = {"Accept": accept, "Authorization": f"Bearer {key}"}
    if roll < 0.03:
        headers["Authorization"] = "Bearer not-a-real-key-0123456789"
    elif roll < 0.05:
        del headers["Authorization"]
    elif roll < 0.07 and "conversation_id" in body:  # another key's conversation: 404
        headers["Authorization"] = f"Bearer {KEYS[1 - KEYS.index(key)]}"
    leave_after = rng.choice([0, 1, 3]) if rng.random() < 0.15 else None  # chunks read before leaving
    tally.requests += 1
    try:
        if not stream:
            timeout = rng.uniform(0.02, 0.3) if leave_after is not None else 30.0
            response = await client.post("/chat", json=body, headers=headers, timeout=timeout)
            code = response.json().get("error", {}).get("code", "ok") if response.status_code != 200 else "ok"
            tally.add(f"json {response.status_code} {code}", response.status_code)
            if code == "busy":
                await asyncio.sleep(rng.uniform(0.1, 0.5))  # a polite client backs off (Retry-After is >= 1 s)
            if response.status_code == 200 and len(conversations) < 500:
                conversations.append(response.json()["conversation_id"])
            return
        async with client.stream("POST", "/chat", json=body, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                code = response.json()["error"]["code"]
                tally.add(f"stream {response.status_code} {code}", response.status_code)
                if code == "busy":
                    await asyncio.sleep(rng.uniform(0.1, 0.5))
                return
            chunks = []
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                if leave_after is not None and len(chunks) > leave_after:
                    tally.add("client left mid-stream", 200)
                    return
            text = b"".join(chunks).decode("utf-8", "replace")
            tally.add(f"{accept} 200 {_last_event(text, accept)}", 200)
            if "x-conversation-id" in response.headers and len(conversations) < 500:
                conversations.append(response.headers["x-conversation-id"])
    except httpx.RemoteProtocolError:
        tally.add(f"{accept} 200 incomplete (mid-stream failure)", 200)
    except httpx.TimeoutException:
        tally.add("client left before the answer")


def _last_event(text: str, accept: str) -> str:
    if accept == "text/plain":
        return "complete"
    last = text.strip().rsplit("\n", 1)[-1]
    data = last.split("data: ", 1)[1] if last.startswith("data: ") else last
    event = json.loads(data)
    return event["event"] if event["event"] != "error" else f"error event {event['code']}"


async def one_other(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    tally.requests += 1
    key = {"Authorization": f"Bearer {KEYS[0]}"}
    if rng.random() < 0.5:
        name, content, headers = rng.choice(HOSTILE)
        response = await client.post("/chat", content=content, headers={**key, **headers})
        tally.add(f"hostile {name} {response.status_code} {response.json()['error']['code']}", response.status_code)
    else:
        path = rng.choice(["/health", "/agents", "/health?deep=1", "/nowhere"])
        response = await client.get(path, headers=key)
        tally.add(f"GET {path.split('?')[0]} {response.status_code}", response.status_code)


async def client_loop(url: str, seed: int, stop_at: float, tally: Tally) -> None:
    rng = random.Random(seed)
    key = KEYS[seed % 2]
    conversations: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < stop_at:
            try:
                if rng.random() < 0.1:
                    await one_other(client, rng, tally)
                else:
                    await one_chat(client, rng, tally, conversations, key)
            except httpx.HTTPError as exc:
                tally.add(f"client error {type(exc).__name__}")


async def load(url: str, clients: int, seconds: float, tally: Tally, seed: int) -> None:
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(url, seed + n, stop_at, tally) for n in range(clients)))


def write_prompts(folder: Path) -> None:
    for name in [*SCRIPTS, *UPSTREAM_SCRIPTS]:
        (folder / f"{name}.md").write_text(f"---\nmodel: {name}\n---\nYou are a soak test.\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (10%%, >= 20)")
    parser.add_argument("--clients", type=int, default=14, help="concurrent clients (default 14)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile phase after the load")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(20.0, args.duration * 0.1)

    fake = FakeModel().start()
    fake.scripts = {name: script for name, (_, script) in SCRIPTS.items()} | UPSTREAM_SCRIPTS
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts"
        prompts.mkdir()
        write_prompts(prompts)
        (prompts / "general.md").write_text("You are a soak test.\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
        env.update(
            PIAGENT_PORT=str(port),
            PIAGENT_OLLAMA_URL=fake.url,
            PIAGENT_PROMPTS_DIR=str(prompts),
            PIAGENT_API_KEYS=",".join(KEYS),
            PIAGENT_MAX_CONCURRENT="4",
            PIAGENT_MAX_QUEUE="8",
            PIAGENT_FIRST_TOKEN_TIMEOUT="2",
            PIAGENT_READ_TIMEOUT="1",
            PIAGENT_MAX_LINE_BYTES=str(LINE_CAP),
            PIAGENT_MEMORY_MAX_CONVERSATIONS="200",
            PIAGENT_RATE_LIMIT="1000000",
            PIAGENT_SHUTDOWN_GRACE="5",
            PIAGENT_HEADER_TIMEOUT=str(HEAD_TIMEOUT),
            PIAGENT_BODY_TIMEOUT=str(HEAD_TIMEOUT),
            PIAGENT_MAX_OPEN_CONNECTIONS=str(MAX_OPEN_CONNECTIONS),
            PIAGENT_ACCESS_LOG="false",
            PIAGENT_LOG_LEVEL="warning",
        )
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            server = subprocess.Popen([sys.executable, "-m", "piagent"], env=env, cwd=tmp, stdout=log, stderr=log)
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 20
                while True:
                    try:
                        if httpx.get(f"{url}/health").status_code == 200:
                            break
                    except httpx.ConnectError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        print(log_path.read_text(), file=sys.stderr)
                        raise SystemExit("piagent did not start")
                    time.sleep(0.1)
                rss = {"start": rss_kib(server.pid)}
                tally = Tally()
                started = time.monotonic()
                print(f"soak: {args.duration:g} s, {args.clients} clients, warm-up {warmup:g} s", flush=True)
                samples: list[tuple[float, int]] = []

                async def run() -> None:
                    async def sample() -> None:
                        while True:
                            await asyncio.sleep(min(30.0, args.duration / 10))
                            samples.append((time.monotonic() - started, rss_kib(server.pid)))
                            print(
                                f"  {samples[-1][0]:6.0f} s  {tally.requests:7d} requests  RSS {samples[-1][1]} KiB",
                                flush=True,
                            )

                    sampler = asyncio.create_task(sample())
                    await load(url, args.clients, warmup, tally, args.seed)
                    rss["after_warmup"] = rss_kib(server.pid)
                    await load(url, args.clients, args.duration - warmup, tally, args.seed + 1000)
                    sampler.cancel()

                asyncio.run(run())
                elapsed = time.monotonic() - started
                time.sleep(2.0)  # let the last aborted generations unwind
                rss["end"] = rss_kib(server.pid)
                cases: list[Case] = []
                if not args.no_hostile:
                    print("hostile phase", flush=True)
                    cases = asyncio.run(hostile_phase(url, server.pid, KEYS[0]))
                    time.sleep(2.0)
                open_during = fake.open_connections
                server.send_signal(signal.SIGTERM)
                code = server.wait(timeout=30)
                fake.wait_for_open_connections(0, timeout=5)
                open_after = fake.open_connections
            finally:
                if server.poll() is None:  # the soak itself failed: never leave piagent running
                    server.kill()
                    server.wait()
        server_log = log_path.read_text()
    fake.stop()

    fives = sum(n for status, n in tally.statuses.items() if status == 500)
    growth = (rss["end"] - rss["after_warmup"]) / rss["after_warmup"] * 100
    figures = {
        "duration_s": round(elapsed, 1),
        "clients": args.clients,
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / elapsed, 1),
        "upstream_requests": len(fake.chat_requests),
        "outcomes": dict(sorted(tally.kinds.items())),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "rss_kib": rss,
        "rss_samples_kib": [[round(t), kib] for t, kib in samples],
        "rss_growth_after_warmup_pct": round(growth, 2),
        "upstream_connections_open_at_end_of_load": open_during,
        "upstream_connections_open_after_shutdown": open_after,
        "server_exit": code,
        "server_log_tracebacks": server_log.count("Traceback"),
        "server_log_asgi_exceptions": server_log.count("Exception in ASGI application"),
        "hostile_health_worst_ms": round(max((case.health_worst_ms for case in cases), default=0.0), 1),
        "hostile": {case.name: case.figures(rss["start"]) for case in cases},
    }
    checks = {
        "no 500": fives == 0 and figures["server_log_asgi_exceptions"] == 0,
        "RSS growth after warm-up < 5%": growth < 5.0,
        "every upstream connection closed at the end": open_after == 0,
    }
    if cases:
        hostile = figures["hostile"].values()
        checks["hostile: no 500"] = not any(case["has_500"] for case in hostile)
        checks["hostile: /health answered throughout (every probe got a status)"] = all(
            all(status.isdigit() for status in case["health"]) for case in hostile
        )
        for side, budget in (("client", "+16 MiB"), ("upstream", "+32 MiB")):
            checks[f"hostile: {side} cases' peak RSS within {budget} of idle"] = all(
                case["within_budget"] for case in hostile if case["side"] == side
            )
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(json.dumps({**figures, "checks": checks}, indent=2, ensure_ascii=False) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
