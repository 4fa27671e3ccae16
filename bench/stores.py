"""What each memory store costs per request, in one run: memory vs sqlite vs redis, same fake, same load.

A keep-alive HTTP/1.1 load generator (raw asyncio streams) lives in this file; the upstream is the fake model
server (bench/fake_model.py, as Ollama, each reply whole in one write), so the figures depend on nothing but
piagent and the stores.

One run starts the fake, a redis-server (loopback, free port, no persistence), and three piagent
processes (`python -m piagent`), one per `PIAGENT_MEMORY_URL` (each one's idle RSS read once it serves),
pinned to CPU 1 when there are two or more (the load generator, the fake and redis-server stay on CPU 0).
Then, for each round, each backend in turn gets the same load: `--clients` keep-alive clients, each
holding conversations of `--exchanges` non-stream `/chat` requests (the first without `conversation_id`,
then follow-ups, so every request reads the history and appends an exchange), a warm-up, then `--requests` measured.
Per-request overhead = mean latency minus the memory store's, in the same round; the ratio is
mean latency over memory's. CPU per request is the server's utime + stime over the measured
requests (and redis-server's, apart): on a machine shared with other work it is the steadier
figure. The median over rounds is reported, with each process's RSS at the end (and the
redis-server's own, and the SQLite file's size). Last, the stores alone, in this process: one
history read and one append per request, one after another, `--requests` of them, wall and CPU
time each.

Run: `python bench/stores.py [--rounds 3] [--requests 2000] [--clients 8] [--json]`.
Needs redis-server on PATH and the `redis` package for the redis column (else it is left out, said so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 16


# -- the load: keep-alive clients, each running conversations of `exchanges` requests


async def _client(port: int, exchanges: int, budget: list[int], latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    conversation: str | None = None
    turn = 0
    try:
        while budget[0] > 0:
            budget[0] -= 1
            body: dict[str, Any] = {"message": f"question {turn}: how are you today?"}
            if conversation is not None:
                body["conversation_id"] = conversation
            payload = msgspec.json.encode(body)
            request = (
                b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (len(payload), payload)
            )
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode() + " " + answer[:200].decode(errors="replace"))
                conversation, turn = None, 0
                continue
            turn += 1
            conversation = None if turn >= exchanges else decode(answer)["conversation_id"]
            turn %= exchanges
    finally:
        writer.close()


async def _load(port: int, clients: int, requests: int, exchanges: int) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    budget = [requests]
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, exchanges, budget, latencies, errors) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - started


# -- the stores alone: one history read and one append per request, as /chat does, in this process


async def _store_calls(url: str, count: int, exchanges: int) -> dict[str, float]:
    """Wall and CPU time per request's worth of store calls (history + append), one after another."""
    sys.path.insert(0, str(ROOT))
    from piagent.settings import Settings
    from piagent.stores import store_factory
    from piagent.stores.base import ASSISTANT, USER, Turn

    factory = store_factory(Settings(memory_url=url, memory_max_conversations=100_000))
    assert factory is not None
    store = factory()
    try:
        await store.check()
        wall, cpu = time.perf_counter(), time.process_time()
        for n in range(count):
            conversation = f"bench-{n // exchanges}"
            await store.history(conversation, "", 20)
            now = time.time()
            reply = " ".join(f"w{i}" for i in range(TOKENS))
            turns = (Turn(USER, f"question {n}: how are you today?", now, False), Turn(ASSISTANT, reply, now, False))
            await store.append(conversation, "", turns, 20, "general")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await store.aclose()
    return {"wall_us": wall / count * 1e6, "cpu_us": cpu / count * 1e6}


# -- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pin(cpu: int) -> Any:
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_http(port: int, path: bytes, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start in 60 s")


@contextmanager
def _process(
    args: list[str], env: dict[str, str] | None, cpu: int, port: int, path: bytes, what: str, cwd: str
) -> Iterator[int]:
    process = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, preexec_fn=_pin(cpu))
    try:
        _wait_http(port, path, process, what)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _redis_server(folder: str) -> Iterator[tuple[int, int]]:
    port = _free_port()
    binary = shutil.which("redis-server")
    assert binary is not None
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, preexec_fn=_pin(0))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield port, process.pid
    finally:
        process.kill()
        process.wait()


def _piagent_env(fake_port: int, port: int, memory_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIAGENT_")}
    env.update(
        PIAGENT_PORT=str(port),
        PIAGENT_OLLAMA_URL=f"http://127.0.0.1:{fake_port}",
        PIAGENT_PROMPTS_DIR=str(ROOT / "prompts"),
        PIAGENT_TOOLS_FILE=str(ROOT / "prompts" / "tools.toml"),
        PIAGENT_MODEL="bench",
        PIAGENT_MEMORY_URL=memory_url,
        PIAGENT_MEMORY_MAX_CONVERSATIONS="100000",
        PIAGENT_ACCESS_LOG="false",
        PIAGENT_LOG_LEVEL="warning",
    )
    return env


def _redis_usable() -> str | None:
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install 'piagent[redis]')"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start everything, run the rounds, return the figures."""
    backends = ["memory", "sqlite", "redis"]
    notes: list[str] = []
    missing = _redis_usable()
    if missing:
        backends.remove("redis")
        notes.append(f"redis left out: {missing}")
    per_round: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
    rss: dict[str, int] = {}
    idle: dict[str, int] = {}
    extra: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="piagent-bench-stores-") as folder, ExitStack() as stack:
        fake_port = _free_port()
        # The fake model server as Ollama: every reply " w0 w1 ... w15", whole in one write.
        fake = [sys.executable, str(ROOT / "bench" / "fake_model.py"), "--port", str(fake_port)]
        fake += ["--force-tokens", str(TOKENS), "--content-length", *(f"--word= w{i}" for i in range(TOKENS))]
        stack.enter_context(_process(fake, None, 0, fake_port, b"/api/version", "the fake model server", folder))
        urls = {"memory": "memory://", "sqlite": f"sqlite:///{folder}/piagent.db"}
        redis_pid = 0
        if "redis" in backends:
            redis_port, redis_pid = stack.enter_context(_redis_server(folder))
            urls["redis"] = f"redis://127.0.0.1:{redis_port}/0"
        servers: dict[str, tuple[int, int]] = {}
        for backend in backends:
            port = _free_port()
            command = [sys.executable, "-m", "piagent"]
            env = _piagent_env(fake_port, port, urls[backend])
            pid = stack.enter_context(_process(command, env, 1, port, b"/health", f"piagent ({backend})", folder))
            servers[backend] = (port, pid)
            idle[backend] = _rss_kib(pid)  # serving, its store opened and checked, no conversation yet
        for number in range(args.rounds):
            # A different backend goes first each round, so none always meets the same moment of the machine.
            for backend in backends[number % len(backends) :] + backends[: number % len(backends)]:
                port, pid = servers[backend]
                asyncio.run(_load(port, args.clients, args.warmup, args.exchanges))
                # CPU time, unlike latency, barely moves when other work shares the machine.
                cpu_before = _cpu_seconds(pid), _cpu_seconds(redis_pid) if redis_pid else 0.0
                latencies, errors, seconds = asyncio.run(_load(port, args.clients, args.requests, args.exchanges))
                cpu_ms = (_cpu_seconds(pid) - cpu_before[0]) * 1000 / len(latencies)
                redis_cpu_ms = 0.0
                if backend == "redis":
                    redis_cpu_ms = (_cpu_seconds(redis_pid) - cpu_before[1]) * 1000 / len(latencies)
                if errors:
                    notes.append(f"round {number + 1} {backend}: {len(errors)} failed requests, e.g. {errors[0]}")
                per_round[backend].append(
                    {
                        "mean_ms": statistics.fmean(latencies) * 1000,
                        "p99_ms": sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000,
                        "rps": len(latencies) / seconds,
                        "p50_ms": sorted(latencies)[len(latencies) // 2] * 1000,
                        "cpu_ms": cpu_ms,
                        "redis_cpu_ms": redis_cpu_ms,
                    }
                )
        for backend in backends:
            rss[backend] = _rss_kib(servers[backend][1])
        calls: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
        call_urls = {**urls, "sqlite": f"sqlite:///{folder}/calls.db"}
        for _ in range(args.rounds):
            for backend in backends:
                calls[backend].append(asyncio.run(_store_calls(call_urls[backend], args.requests, args.exchanges)))
        if redis_pid:
            extra["redis_server_rss_kib"] = _rss_kib(redis_pid)
        database = Path(folder) / "piagent.db"
        extra["sqlite_file_kib"] = (
            sum(p.stat().st_size for p in database.parent.glob("piagent.db*") if p.is_file()) // 1024
        )
    results: dict[str, Any] = {}
    for backend in backends:
        rounds = per_round[backend]
        mean = statistics.median(r["mean_ms"] for r in rounds)
        results[backend] = {
            "mean_ms": mean,
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "rps": statistics.median(r["rps"] for r in rounds),
            "overhead_ms": statistics.median(
                r["mean_ms"] - m["mean_ms"] for r, m in zip(rounds, per_round["memory"], strict=True)
            ),
            "ratio": statistics.median(
                r["mean_ms"] / m["mean_ms"] for r, m in zip(rounds, per_round["memory"], strict=True)
            ),
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "cpu_ms": statistics.median(r["cpu_ms"] for r in rounds),
            "cpu_overhead_ms": statistics.median(
                r["cpu_ms"] - m["cpu_ms"] for r, m in zip(rounds, per_round["memory"], strict=True)
            ),
            "store_server_cpu_ms": statistics.median(r["redis_cpu_ms"] for r in rounds),
            "rss_mib": rss[backend] / 1024,
            "idle_rss_mib": idle[backend] / 1024,
            "idle_rss_vs_memory_mib": (idle[backend] - idle["memory"]) / 1024,
            "store_calls_wall_us": statistics.median(c["wall_us"] for c in calls[backend]),
            "store_calls_cpu_us": statistics.median(c["cpu_us"] for c in calls[backend]),
        }
    return {
        "settings": vars(args),
        "stored_conversations": (args.warmup + args.requests) * args.rounds // args.exchanges,
        "results": results,
        "extra": extra,
        "notes": notes,
    }


def _table(report: dict[str, Any]) -> str:
    rows = [
        "| store | mean latency (ms) | p50 (ms) | p99 (ms) | requests/s | latency vs memory (ms) | ratio "
        "| piagent CPU per request (ms) | vs memory (ms) | redis-server CPU per request (ms) | piagent RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, r in report["results"].items():
        rows.append(
            f"| {backend} | {r['mean_ms']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | "
            f"{r['overhead_ms']:+.2f} | {r['ratio']:.2f}x | {r['cpu_ms']:.2f} | {r['cpu_overhead_ms']:+.2f} "
            f"| {r['store_server_cpu_ms']:.2f} | {r['rss_mib']:.1f} |"
        )
    rows += [
        "",
        "| store | store calls per request, wall (µs) | CPU in piagent's process (µs) | idle RSS (MiB) | vs memory |",
        "|---|---|---|---|---|",
    ]
    for backend, r in report["results"].items():
        rows.append(
            f"| {backend} | {r['store_calls_wall_us']:.0f} | {r['store_calls_cpu_us']:.0f} "
            f"| {r['idle_rss_mib']:.1f} | {r['idle_rss_vs_memory_mib']:+.1f} |"
        )
    extra = report["extra"]
    lines = ["\n".join(rows), ""]
    lines.append(f"conversations stored per backend: ~{report['stored_conversations']:,}")
    if "redis_server_rss_kib" in extra:
        lines.append(f"redis-server RSS: {extra['redis_server_rss_kib'] / 1024:.1f} MiB")
    lines.append(f"sqlite file (with -wal, -shm): {extra['sqlite_file_kib'] / 1024:.1f} MiB")
    lines.extend(f"note: {note}" for note in report["notes"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print a Markdown table (or JSON)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each backend is loaded once per round")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per backend per round")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests before each measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--exchanges", type=int, default=10, help="requests per conversation before a new one")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    report = run(args)
    print(msgspec.json.format(msgspec.json.encode(report)).decode() if args.json else _table(report))


if __name__ == "__main__":
    main()
