"""Benchmark what piagent's edge protocols cost: uvicorn's plain protocol against piagent's subclass, same run.

``python bench/edge.py`` (``--quick`` for a smoke run) starts four piagent servers pinned to core 1, one per
variant (uvicorn's httptools and h11 protocols, plain and with piagent's edge limits), and drives each in turn
from core 0 with ``GET /health``: 16 keep-alive clients, then 16 clients opening a new connection per request.
Rounds interleave the variants, so drift on a shared machine hits them alike. Per variant: server CPU time per
request (utime + stime from /proc) and requests per second; the ratio is edge over plain for the same parser.
Then the protocol alone, in this process: requests fed to a protocol instance over a stub transport, with an
ASGI app that does nothing, so that the protocol's own share is not hidden under piagent's app.

Then the header flood of issue 11: four clients send requests with a 150 MB header, reconnecting when cut off,
for a few seconds, while another polls ``/health``; reported are the peak RSS over idle (``VmHWM`` after
``clear_refs``) and the slowest ``/health``. The plain httptools protocol gets a 20 MB header instead (150 MB
takes it over a minute). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import LoadGenerator, build_request, run_async  # noqa: E402
from run import cpu_seconds, free_port, status_kib  # noqa: E402

VARIANTS = [("plain", "httptools"), ("edge", "httptools"), ("plain", "h11"), ("edge", "h11")]


def serve(kind: str, http: str, port: int) -> None:
    """Run piagent on `port` with uvicorn's `http` protocol, plain or as piagent's edge subclass."""
    import uvicorn

    from piagent import Settings, create_app
    from piagent.server import edge_limits, edge_protocol

    settings = Settings.from_env()
    protocol: Any = edge_protocol(edge_limits(settings), http) if kind == "edge" else http
    config = uvicorn.Config(create_app(settings), port=port, http=protocol, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def start(kind: str, http: str, pin: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [sys.executable, __file__, "--serve", kind, http, str(port)]
    if pin:
        argv = ["taskset", "-c", "1", *argv]
    env = {**os.environ, "PIAGENT_LOG_LEVEL": "warning", "PIAGENT_ACCESS_LOG": "false"}
    process = subprocess.Popen(argv, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


async def churn(port: int, count: int, clients: int) -> float:
    """`count` requests, each on its own connection (Connection: close); the seconds they took."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    left = [count]

    async def client() -> None:
        while left[0] > 0:
            left[0] -= 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


async def keep_alive(port: int, count: int, clients: int) -> float:
    generator = LoadGenerator("127.0.0.1", port, build_request("GET", "/health", "127.0.0.1", port), clients)
    try:
        result = await generator.run(count)
    finally:
        generator.close()
    assert result.failed == 0, result.errors
    return result.elapsed_s


def flood(port: int, stop: threading.Event, header_bytes: int) -> None:
    piece = b"a" * (1024 * 1024)
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
                for _ in range(header_bytes // len(piece)):
                    if stop.is_set():
                        break
                    sock.sendall(piece)
            except OSError:
                pass


def flood_figures(pid: int, port: int, header_mb: int, seconds: float) -> tuple[float, float, float]:
    """(idle RSS MiB, peak RSS over idle MiB, slowest /health s) while 4 clients send `header_mb` MB headers."""
    idle = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(port, stop, header_mb * 2**20)) for _ in range(4)]
    for thread in threads:
        thread.start()
    slowest = 0.0
    deadline = time.monotonic() + seconds
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(request)
            sock.settimeout(120)
            assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join()
    return idle / 1024, (status_kib(pid, "VmHWM") - idle) / 1024, slowest


class _Transport(asyncio.Transport):
    """Just enough of a transport for uvicorn's protocols: writes are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: Any) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def protocol_alone(kind: str, http: str, count: int, new_connection: bool) -> float:
    """CPU seconds per request through one protocol class alone (no sockets; an ASGI app that does nothing)."""
    import uvicorn
    from uvicorn.server import ServerState

    from piagent import Settings
    from piagent.server import edge_limits, edge_protocol

    config = uvicorn.Config(_app, http=http, log_level="warning", access_log=False)
    config.load()
    protocol_class: Any = edge_protocol(edge_limits(Settings()), http) if kind == "edge" else config.http_protocol_class
    state = ServerState()
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    protocol = None
    started = time.process_time()
    for _ in range(count):
        if protocol is None or new_connection:
            if protocol is not None:
                protocol.connection_lost(None)
            protocol = protocol_class(config=config, server_state=state, app_state={})
            protocol.connection_made(_Transport())
        protocol.data_received(request)
        while state.tasks:
            await asyncio.gather(*state.tasks)
    return (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one short round")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "HTTP", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    rounds, count, churn_count = (1, 2000, 500) if args.quick else (3, 8000, 2000)
    pin = (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {0})
    servers = {variant: start(*variant, pin) for variant in VARIANTS}
    cpu: dict[tuple[str, str, str], float] = {}
    rate: dict[tuple[str, str, str], float] = {}
    try:
        for _, port in servers.values():  # warm-up, not measured
            run_async(keep_alive(port, count // 10, 16))
        for _ in range(rounds):
            for variant, (process, port) in servers.items():
                for mode, load, n in (("keep-alive", keep_alive, count), ("new connection", churn, churn_count)):
                    before = cpu_seconds(process.pid)
                    elapsed = run_async(load(port, n, 16))
                    key = (*variant, mode)
                    cpu[key] = cpu.get(key, 0.0) + (cpu_seconds(process.pid) - before) / n
                    rate[key] = rate.get(key, 0.0) + n / elapsed
        print(f"GET /health, 16 clients, {rounds} round(s) interleaved; server pinned to core 1: {pin}\n")
        print("| protocol | connections | plain µs CPU/req | edge µs CPU/req | edge/plain | plain req/s | edge req/s |")
        print("|---|---|---|---|---|---|---|")
        for http in ("httptools", "h11"):
            for mode in ("keep-alive", "new connection"):
                plain, edge = cpu[("plain", http, mode)] / rounds, cpu[("edge", http, mode)] / rounds
                print(
                    f"| {http} | {mode} | {plain * 1e6:.0f} | {edge * 1e6:.0f} | {edge / plain:.3f} | "
                    f"{rate[('plain', http, mode)] / rounds:.0f} | {rate[('edge', http, mode)] / rounds:.0f} |"
                )
        print("\nThe protocol alone (in this process, an ASGI app that does nothing, no sockets)\n")
        print("| protocol | connections | plain µs/req | edge µs/req | edge/plain |")
        print("|---|---|---|---|---|")
        for http in ("httptools", "h11"):
            for new in (False, True):
                alone: dict[str, list[float]] = {"plain": [], "edge": []}
                for _ in range(5):  # alternating, medians: this figure is small and the machine may be shared
                    for kind in ("plain", "edge"):
                        alone[kind].append(run_async(protocol_alone(kind, http, count, new)))
                plain, edge = statistics.median(alone["plain"]), statistics.median(alone["edge"])
                mode = "new connection" if new else "keep-alive"
                print(f"| {http} | {mode} | {plain * 1e6:.1f} | {edge * 1e6:.1f} | {edge / plain:.3f} |")
        print("\nHeader flood: 4 clients, reconnecting, while /health is polled\n")
        print("| server | header | idle RSS MiB | peak over idle MiB | slowest /health s |")
        print("|---|---|---|---|---|")
        seconds = 2.0 if args.quick else 5.0
        for variant, header_mb in ((("edge", "httptools"), 150), (("edge", "h11"), 150), (("plain", "httptools"), 20)):
            process, port = servers[variant]
            idle, peak, slowest = flood_figures(process.pid, port, header_mb, seconds)
            print(f"| {' '.join(variant)} | {header_mb} MB | {idle:.1f} | {peak:+.1f} | {slowest:.3f} |")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
