"""Benchmark piagent against a fake Ollama, with the same load sent straight to the fake as the baseline.

``python bench/run.py`` (from anywhere; the server runs with cwd = the repository root) does, for each of two
rounds:

1. start the fake model server (``bench/fake_model.py``, playing Ollama) pinned to core 0 (its start-up time and
   idle RSS are the floor for a Python asyncio server) and measure every load scenario straight against it: the
   baseline, the physical limit;
2. start piagent (``python -m piagent``, pinned to core 1) for the memory scenarios: start-up time to the first
   ``GET /health`` 200, idle RSS, RSS after 1,000 requests, RSS growth per stored conversation over 10,000 new
   conversations, peak RSS (VmHWM);
3. start piagent again for the load scenarios: streamed 256-token replies at 1 and 16 clients, non-streamed 16-token
   replies at 32 clients, and a "trickle" stream as a model on a Pi sends it (64 tokens, one per read, 20 ms apart,
   8 clients), reading the server's CPU time (every thread's run time from /proc schedstat) around each one.

This process (the load generator) pins itself to core 0 with the fake. It prints one Markdown table with both
rounds, the baseline, their ratio and the targets, then appends it to ``bench/RESULTS.md`` with the date, machine,
Python and package versions. ``--quick`` is a fast smoke run (one round, small counts, nothing written);
``--server-cmd`` benchmarks another command. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from fakemodel import reply_text
from loadgen import Check, LoadGenerator, LoadResult, build_request, fetch, run_async

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
HOST = "127.0.0.1"
PACKAGES = ("starlette", "uvicorn", "httpx", "msgspec", "uvloop", "httptools")
# piagent admits one generation at a time by default (a Pi runs one), queues 8 and answers 503 past that. The fake
# generates any number at once, so for the relay's own limits the benchmark admits every client: 16 generations
# (the default upstream pool) and a queue deeper than any load here. No rate limit. --env overrides each.
ADMISSION_ENV = {"PIAGENT_MAX_CONCURRENT": "16", "PIAGENT_MAX_QUEUE": "1000", "PIAGENT_RATE_LIMIT": "0"}
NOISY = 0.1  # other processes using this much of a core during a load make its figures doubtful
SYSTEM_PROMPT = "You are a helpful assistant running on a Raspberry Pi. Answer briefly."


@dataclass(frozen=True)
class Scenario:
    """One load: ``count`` requests from ``concurrency`` clients, each reply ``tokens`` tokens long."""

    key: str
    title: str
    stream: bool
    tokens: int
    concurrency: int
    count: int
    warmup: int
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Plan:
    """Everything the run does, fixed up front from the command line."""

    rounds: int
    scenarios: tuple[Scenario, ...]
    warm_requests: int  # requests before "RSS after 1,000 requests"
    conversations: int  # new conversations for the growth figure
    max_seconds: float  # a cap per measured load, so a slow server cannot stretch the run
    settle_s: float  # pause between start-up and the idle RSS reading
    python: str
    server_cmd: str | None
    extra_env: tuple[tuple[str, str], ...]
    pin: bool
    batch_writes: bool
    run_piagent: bool
    run_baseline: bool
    max_conversations: int
    wait_quiet_s: float
    server_root: Path = REPO_ROOT  # the server's working directory: which checkout of piagent runs
    run_memory: bool = True  # the memory instance (off with --only)
    compile_bytecode: bool = True  # piagent's .pyc files written before the run, as `pip install` does


@dataclass
class Measured:
    """One scenario measured once against one target."""

    result: LoadResult
    tokens: int
    server_cpu_s: float | None = None
    harness_busy: float = 0.0
    foreign_busy: float = 0.0  # CPU used by other processes on the machine, in cores
    favoured: bool = False  # the load generator ran as a real-time task (see measure)
    upstream: dict[str, object] | None = None


@dataclass
class MemoryFigures:
    """The memory-instance figures of one round."""

    startup_s: float = 0.0
    idle_kib: int = 0
    after_warm_kib: int = 0
    after_convs_kib: int = 0
    conversations: int = 0
    conversations_s: float = 0.0
    failed: int = 0
    hwm_kib: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Round:
    """Everything measured in one round."""

    baseline: dict[str, Measured] = field(default_factory=dict)
    piagent: dict[str, Measured] = field(default_factory=dict)
    relay: dict[str, Measured] = field(default_factory=dict)  # the bare relay (bench/relay.py), trickle only
    fake_startup_s: float = 0.0
    fake_idle_kib: int = 0
    memory: MemoryFigures | None = None
    load_startup_s: float = 0.0
    load_hwm_kib: int = 0
    last_upstream_body: str = ""
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# /proc readings


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree = [pid]
    i = 0
    while i < len(tree):
        tree.extend(_children(tree[i]))
        i += 1
    return tree


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` figure (``VmRSS``, ``VmHWM``) from /proc/PID/status, summed over the process tree."""
    total = 0
    for member in process_tree(pid):
        try:
            text = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        if match:
            total += int(match.group(1))
    return total


def run_seconds(pid: int) -> float:
    """Time on a CPU of every thread of ``pid`` in nanosecond resolution (/proc schedstat), for short loads."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def tree_run_seconds(pid: int) -> float:
    """`run_seconds` summed over ``pid`` and its descendants: a server's CPU time to the nanosecond, since a load
    of a few seconds at a model's pace uses only some ten 10 ms ticks of utime + stime."""
    return sum(run_seconds(member) for member in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU time used on the whole machine so far, all cores, from /proc/stat.

    Interrupt and softirq time is left out: loopback networking runs there and is mostly this benchmark's own.
    Steal time (the hypervisor running someone else) counts as busy.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


async def wait_quiet(limit_s: float) -> float:
    """Wait (up to ``limit_s``) for a second in which other processes use under ``NOISY`` of a core; return it.

    Called between loads, when this script's own processes are idle, so the machine's CPU use is foreign.
    """
    deadline = time.monotonic() + limit_s
    while True:
        before = machine_busy_seconds()
        await asyncio.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy < NOISY or time.monotonic() >= deadline:
            return busy


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------------------------
# processes


class Process:
    """A server this script started, in its own session, logging to ``log_path``."""

    def __init__(
        self, name: str, argv: Sequence[str], env: dict[str, str], port: int, log_dir: Path, cwd: Path = REPO_ROOT
    ) -> None:
        self.name = name
        self.cwd = cwd
        self.argv = list(argv)
        self.env = env
        self.port = port
        self.log_path = log_dir / f"{name}-{port}.log"
        self.startup_s = 0.0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The process id (of the server itself: taskset execs it)."""
        assert self._proc is not None
        return self._proc.pid

    async def start(self, health_path: str, limit_s: float = 30.0) -> None:
        """Spawn, then poll ``health_path`` until it answers 200; ``startup_s`` is spawn to that answer."""
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = started + limit_s
        status = 0
        while time.perf_counter() < deadline:
            if self._proc.returncode is not None:
                raise RuntimeError(f"at start: {self.exit_text()}")
            try:
                response = await fetch(HOST, self.port, "GET", health_path, limit_s=5.0)
            except (TimeoutError, OSError):
                await asyncio.sleep(0.002)
                continue
            status = response.status
            if status == 200:
                self.startup_s = time.perf_counter() - started
                return
            await asyncio.sleep(0.002)
        raise RuntimeError(
            f"{self.name}: no 200 from {health_path} in {limit_s:g} s (last {status}):\n{self.log_tail()}"
        )

    def exited(self) -> bool:
        """Whether the process has ended."""
        return self._proc is None or self._proc.returncode is not None

    def exit_text(self) -> str:
        """How the process ended, and the end of its output."""
        code = None if self._proc is None else self._proc.returncode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return f"{self.name} ended ({how}); its output ends with:\n{self.log_tail() or '(nothing)'}"

    def log_tail(self, size: int = 3000) -> str:
        """The end of the server's output."""
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        """SIGTERM to the process group this script created, SIGKILL (said on stderr) after 10 s."""
        proc = self._proc
        self._proc = None
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                print(f"  {self.name} (pid {proc.pid}) ignored SIGTERM for 10 s: SIGKILL", file=sys.stderr)
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        except ProcessLookupError:
            pass


def _die_with_parent() -> None:
    """In the child before exec: be killed when this script dies, so no server outlives an interrupted run."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG; kept across exec
    except (OSError, AttributeError):
        pass


def _pinned(argv: list[str], core: int, pin: bool) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if pin else argv


def fake_process(plan: Plan, log_dir: Path) -> Process:
    """The fake model server (as Ollama), pinned to core 0."""
    port = free_port()
    argv = [plan.python, str(BENCH_DIR / "fake_model.py"), "--host", HOST, "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    return Process("fake_model", _pinned(argv, 0, plan.pin), env, port, log_dir)


def relay_process(plan: Plan, fake_port: int, log_dir: Path) -> Process:
    """The bare relay (bench/relay.py) in front of the fake, pinned to core 1 as piagent is."""
    port = free_port()
    argv = [plan.python, str(BENCH_DIR / "relay.py"), "--port", str(port), "--upstream-port", str(fake_port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    return Process("relay", _pinned(argv, 1, plan.pin), env, port, log_dir)


def server_process(plan: Plan, fake_port: int, log_dir: Path) -> Process:
    """The server under test, pinned to core 1, configured by PIAGENT_* variables."""
    port = free_port()
    ollama_url = f"http://{HOST}:{fake_port}"
    if plan.server_cmd:
        command = plan.server_cmd.format(python=plan.python, host=HOST, port=port, ollama_url=ollama_url)
        argv = shlex.split(command)
    else:
        argv = [plan.python, "-m", "piagent"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    env.update(
        {
            "PIAGENT_HOST": HOST,
            "PIAGENT_PORT": str(port),
            "PIAGENT_OLLAMA_URL": ollama_url,
            "PIAGENT_MODEL": "bench",
            "PIAGENT_MEMORY_MAX_CONVERSATIONS": str(plan.max_conversations),
            "PIAGENT_ACCESS_LOG": "false",
            "PIAGENT_LOG_LEVEL": "warning",
            **ADMISSION_ENV,
        }
    )
    env.update(dict(plan.extra_env))
    return Process("piagent", _pinned(argv, 1, plan.pin), env, port, log_dir, plan.server_root)


# --------------------------------------------------------------------------------------------------------------
# requests and checks

_ENCODER = msgspec.json.Encoder()


class _ChatReply(msgspec.Struct):
    conversation_id: str | None = None
    reply: str | None = None


class _OllamaMessage(msgspec.Struct):
    content: str = ""


class _OllamaReply(msgspec.Struct):
    message: _OllamaMessage | None = None
    done: bool = False


def piagent_body(stream: bool) -> bytes:
    """A ``POST /chat`` body starting a new conversation."""
    return _ENCODER.encode({"message": "hi", "agent": "general", "conversation_id": None, "stream": stream})


def ollama_body(scenario: Scenario) -> bytes:
    """The ``POST /api/chat`` body a client would send Ollama for the same exchange."""
    # What a client talking to Ollama directly would send for the same exchange; a non-stream client asks for
    # one JSON object, which is the cheapest way for Ollama to deliver it.
    return _ENCODER.encode(
        {
            "model": "bench",
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "hi"}],
            "stream": scenario.stream,
            "options": {"num_predict": scenario.tokens},
        }
    )


def piagent_check(scenario: Scenario) -> Check:
    """The check of piagent's answers: the fake's text exactly, and a conversation id."""
    expected = reply_text(scenario.tokens)
    expected_bytes = expected.encode()
    decoder = msgspec.json.Decoder(_ChatReply)

    def check_stream(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        if body != expected_bytes:
            return f"streamed text differs from the fake's reply ({len(body)} bytes, expected {len(expected_bytes)})"
        if not headers.get("x-conversation-id"):
            return "no X-Conversation-Id header"
        return None

    def check_json(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        try:
            reply = decoder.decode(body)
        except msgspec.DecodeError as exc:
            return f"bad JSON: {exc}"
        if reply.reply != expected:
            return "reply differs from the fake's reply"
        if not reply.conversation_id:
            return "no conversation_id"
        return None

    return check_stream if scenario.stream else check_json


def baseline_check(scenario: Scenario) -> Check:
    """The check of the fake's own answers."""
    expected = reply_text(scenario.tokens)
    lines = scenario.tokens + 1
    decoder = msgspec.json.Decoder(_OllamaReply)

    def check_stream(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        if body.count(b"\n") != lines or b'"done":true' not in body[body.rfind(b"\n", 0, -1) :]:
            return "NDJSON stream incomplete"
        return None

    def check_json(status: int, headers: dict[str, str], body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        reply = decoder.decode(body)
        if reply.message is None or reply.message.content != expected or not reply.done:
            return "reply differs"
        return None

    return check_stream if scenario.stream else check_json


async def configure_fake(port: int, tokens: int, delay_ms: float, batch_writes: bool) -> None:
    """Set the fake's reply length, token delay and write mode."""
    body = _ENCODER.encode({"tokens": tokens, "delay_ms": delay_ms, "batch_writes": batch_writes})
    response = await fetch(HOST, port, "POST", "/_bench/config", body)
    if response.status != 200:
        raise RuntimeError(f"the fake refused its configuration: {bytes(response.body)!r}")


async def fake_stats(port: int, reset: bool = False) -> dict[str, object]:
    """The fake's counters, optionally zeroed after reading."""
    response = await fetch(HOST, port, "GET", "/_bench/stats")
    stats: dict[str, object] = msgspec.json.decode(bytes(response.body))
    if reset:
        await fetch(HOST, port, "POST", "/_bench/reset")
    return stats


# --------------------------------------------------------------------------------------------------------------
# measuring


async def measure(
    plan: Plan,
    scenario: Scenario,
    fake: Process,
    target_port: int,
    request: bytes,
    check: Check,
    server_pid: int | None,
) -> Measured:
    """Warm up, then measure one scenario; read the server's CPU time and the fake's counters around it.

    With one client (the latency scenario) the load generator runs as a real-time task (SCHED_FIFO, when this
    script runs as root), so it reads each byte when it arrives: it shares core 0 with the fake, and as an ordinary
    task it was woken for a reply's first token only after the scheduler let the fake write on (measured here: about
    0.35 ms added to the baseline's TTFT and 1 ms to piagent's, whose first token arrives while the fake is still
    writing the rest of its 256-token burst). Both the baseline and piagent are measured that way; the fake's
    throughput in that load is then not the limit it is elsewhere (the load generator runs first).
    """
    await configure_fake(fake.port, scenario.tokens, scenario.delay_ms, plan.batch_writes)
    generator = LoadGenerator(HOST, target_port, request, scenario.concurrency, check)
    favour = scenario.concurrency == 1 and os.geteuid() == 0  # only root may make a task real-time
    if favour:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    try:
        if scenario.warmup:
            await generator.run(scenario.warmup, min(plan.max_seconds, 5.0))
        if plan.wait_quiet_s > 0:
            await wait_quiet(plan.wait_quiet_s)
        await fake_stats(fake.port, reset=True)
        server_cpu = tree_run_seconds(server_pid) if server_pid is not None else 0.0
        fake_cpu = run_seconds(fake.pid)
        harness_cpu = run_seconds(os.getpid()) + fake_cpu
        machine_cpu = machine_busy_seconds()
        result = await generator.run(scenario.count, plan.max_seconds)
        machine_cpu = machine_busy_seconds() - machine_cpu
        harness_cpu = run_seconds(os.getpid()) + run_seconds(fake.pid) - harness_cpu
        measured = Measured(result, scenario.tokens)
        ours = harness_cpu
        if server_pid is not None:
            measured.server_cpu_s = tree_run_seconds(server_pid) - server_cpu
            ours += measured.server_cpu_s
            measured.upstream = await fake_stats(fake.port)
        else:
            # In the baseline the fake is the server: its CPU per token is what a bare asyncio process spends on
            # each token's wake-up and write on this machine, the floor for piagent's figure beside it.
            measured.server_cpu_s = run_seconds(fake.pid) - fake_cpu
        if result.elapsed_s:
            measured.harness_busy = harness_cpu / result.elapsed_s
            measured.foreign_busy = max(0.0, machine_cpu - ours) / result.elapsed_s
        measured.favoured = favour
    finally:
        generator.close()
        if favour:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return measured


async def send_load(plan: Plan, fake: Process, server: Process, scenario: Scenario, limit_s: float) -> LoadResult:
    """A load that only changes the server's state (no figures of its own)."""
    await configure_fake(fake.port, scenario.tokens, 0.0, plan.batch_writes)
    request = build_chat_request(server.port, scenario)
    generator = LoadGenerator(HOST, server.port, request, scenario.concurrency, piagent_check(scenario))
    try:
        return await generator.run(scenario.count, limit_s)
    finally:
        generator.close()


def build_chat_request(port: int, scenario: Scenario) -> bytes:
    """The raw ``POST /chat`` request for a scenario."""
    return build_request("POST", "/chat", HOST, port, piagent_body(scenario.stream))


def build_ollama_request(port: int, scenario: Scenario) -> bytes:
    """The raw ``POST /api/chat`` request for a scenario's baseline."""
    return build_request("POST", "/api/chat", HOST, port, ollama_body(scenario))


async def memory_phase(plan: Plan, fake: Process, log_dir: Path, log: Callable[[str], None]) -> MemoryFigures:
    """A fresh piagent: start-up time, idle RSS, RSS after 1,000 requests and after the new conversations."""
    figures = MemoryFigures()
    server = server_process(plan, fake.port, log_dir)
    try:
        if plan.wait_quiet_s > 0:
            await wait_quiet(plan.wait_quiet_s)
        await server.start("/health")
        figures.startup_s = server.startup_s
        await asyncio.sleep(plan.settle_s)
        figures.idle_kib = status_kib(server.pid, "VmRSS")
        log(f"  piagent up in {figures.startup_s * 1000:.0f} ms, idle RSS {figures.idle_kib / 1024:.1f} MiB")
        half = plan.warm_requests // 2
        warm = (
            Scenario("warm-stream", "", True, 256, 16, half, 0),
            Scenario("warm-json", "", False, 16, 16, plan.warm_requests - half, 0),
        )
        for scenario in warm:
            result = await send_load(plan, fake, server, scenario, plan.max_seconds)
            figures.errors += result.errors
            figures.failed += result.failed
        await asyncio.sleep(0.2)
        figures.after_warm_kib = status_kib(server.pid, "VmRSS")
        growth = Scenario("conversations", "", False, 16, 16, plan.conversations, 0)
        result = await send_load(plan, fake, server, growth, 4 * plan.max_seconds)
        figures.errors += result.errors
        figures.failed += result.failed
        figures.conversations = result.completed
        figures.conversations_s = result.elapsed_s
        await asyncio.sleep(0.2)
        if server.exited():
            raise RuntimeError(f"during the memory phase: {server.exit_text()}")
        figures.after_convs_kib = status_kib(server.pid, "VmRSS")
        figures.hwm_kib = status_kib(server.pid, "VmHWM")
        log(
            f"  RSS after {plan.warm_requests} requests {figures.after_warm_kib / 1024:.1f} MiB, after "
            f"{result.completed} more conversations {figures.after_convs_kib / 1024:.1f} MiB"
        )
    finally:
        await server.stop()
    return figures


async def one_round(plan: Plan, number: int, log_dir: Path, log: Callable[[str], None]) -> Round:
    """Baseline, memory instance, load instance; a failing phase is recorded and the others still run."""
    record = Round()
    fake = fake_process(plan, log_dir)
    try:
        if plan.wait_quiet_s > 0:
            await wait_quiet(plan.wait_quiet_s)
        await fake.start("/api/version")
        record.fake_startup_s = fake.startup_s
        await asyncio.sleep(plan.settle_s)
        record.fake_idle_kib = status_kib(fake.pid, "VmRSS")
        if plan.run_baseline:
            try:
                for scenario in plan.scenarios:
                    request = build_ollama_request(fake.port, scenario)
                    check = baseline_check(scenario)
                    measured = await measure(plan, scenario, fake, fake.port, request, check, None)
                    record.baseline[scenario.key] = measured
                    log(f"  round {number} baseline {scenario.title}: {_brief(measured)}")
            except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                record.problems.append(f"round {number} baseline stopped: {type(exc).__name__}: {exc}")
        if plan.run_baseline and any(scenario.delay_ms for scenario in plan.scenarios):
            try:
                await relay_phase(plan, number, fake, record, log_dir, log)
            except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                record.problems.append(f"round {number} bare relay stopped: {type(exc).__name__}: {exc}")
        if plan.run_piagent:
            try:
                if plan.run_memory:
                    record.memory = await memory_phase(plan, fake, log_dir, log)
            except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                record.problems.append(f"round {number} memory instance stopped: {type(exc).__name__}: {exc}")
            try:
                await load_phase(plan, number, fake, record, log_dir, log)
            except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                record.problems.append(f"round {number} load instance stopped: {type(exc).__name__}: {exc}")
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
        record.problems.append(f"round {number}: fake Ollama failed: {type(exc).__name__}: {exc}")
    finally:
        await fake.stop()
    for problem in record.problems:
        log("  " + problem)
    return record


async def relay_phase(
    plan: Plan, number: int, fake: Process, record: Round, log_dir: Path, log: Callable[[str], None]
) -> None:
    """The trickle through the bare relay: what one read in and one write out cost any asyncio relay here."""
    relay = relay_process(plan, fake.port, log_dir)
    try:
        await configure_fake(fake.port, 1, 0.0, plan.batch_writes)
        await relay.start("/")
        for scenario in plan.scenarios:
            if not scenario.delay_ms:
                continue
            request = build_ollama_request(relay.port, scenario)
            measured = await measure(plan, scenario, fake, relay.port, request, baseline_check(scenario), relay.pid)
            record.relay[scenario.key] = measured
            log(f"  round {number} relay    {scenario.title}: {_brief(measured)}")
    finally:
        await relay.stop()


async def load_phase(
    plan: Plan, number: int, fake: Process, record: Round, log_dir: Path, log: Callable[[str], None]
) -> None:
    """A fresh piagent, every load scenario against it."""
    server = server_process(plan, fake.port, log_dir)
    try:
        await server.start("/health")
        record.load_startup_s = server.startup_s
        for scenario in plan.scenarios:
            request = build_chat_request(server.port, scenario)
            check = piagent_check(scenario)
            measured = await measure(plan, scenario, fake, server.port, request, check, server.pid)
            record.piagent[scenario.key] = measured
            log(f"  round {number} piagent  {scenario.title}: {_brief(measured)}")
            if server.exited():
                raise RuntimeError(f"during the load: {server.exit_text()}")
        record.load_hwm_kib = status_kib(server.pid, "VmHWM")
        stats = await fake_stats(fake.port)
        body = stats.get("last_chat_body")
        record.last_upstream_body = _ENCODER.encode(body).decode() if body is not None else ""
    finally:
        await server.stop()


def _brief(measured: Measured) -> str:
    result = measured.result
    text = (
        f"{result.rps:,.0f} req/s, p50 {result.latency_ms(0.5):.2f} ms, TTFT p50 {result.ttft_ms(0.5):.3f} ms, "
        f"{result.completed * measured.tokens / result.elapsed_s if result.elapsed_s else 0:,.0f} tok/s"
    )
    if result.failed:
        text += f", {result.failed} FAILED ({result.errors[0] if result.errors else '?'})"
    return text


# --------------------------------------------------------------------------------------------------------------
# reporting


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    scenario: str
    figure: str
    piagent: tuple[float | None, ...]
    baseline: tuple[float | None, ...]
    fmt: str
    target: tuple[str, float] | None = None  # ("<=", 1.0) or (">=", 40000)
    note: str = ""


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def build_rows(plan: Plan, rounds: Sequence[Round]) -> list[Row]:
    """Every line of the table, in order."""
    rows: list[Row] = []

    def per(source: str, key: str, pick: Callable[[Measured], float | None]) -> tuple[float | None, ...]:
        values: list[float | None] = []
        for record in rounds:
            table = {"piagent": record.piagent, "relay": record.relay}.get(source, record.baseline)
            values.append(pick(table[key]) if key in table else None)
        return tuple(values)

    def rps(m: Measured) -> float:
        return m.result.rps

    def tok_s(m: Measured) -> float:
        return m.result.completed * m.tokens / m.result.elapsed_s if m.result.elapsed_s else 0.0

    def cpu_per_token(m: Measured) -> float | None:
        done = m.result.completed * m.tokens
        return m.server_cpu_s / done * 1e6 if m.server_cpu_s is not None and done else None

    def cpu_per_request(m: Measured) -> float | None:
        done = m.result.completed
        return m.server_cpu_s / done * 1e6 if m.server_cpu_s is not None and done else None

    def q(kind: str, quantile: float) -> Callable[[Measured], float]:
        if kind == "lat":
            return lambda m: m.result.latency_ms(quantile)
        return lambda m: m.result.ttft_ms(quantile)

    targets: dict[tuple[str, str], tuple[str, float]] = {
        ("stream1", "extra TTFT p50 (ms)"): ("<=", 1.0),
        ("stream16", "tokens relayed/s"): (">=", 40_000.0),
        ("json32", "requests/s"): (">=", 1_000.0),
        ("trickle", "server CPU per token (µs)"): ("<=", 30.0),
    }
    for scenario in plan.scenarios:
        key = scenario.key
        figures: list[tuple[str, Callable[[Measured], float | None], str]] = [("requests/s", rps, ",.0f")]
        figures += [
            ("latency p50 (ms)", q("lat", 0.5), ".2f"),
            ("latency p99 (ms)", q("lat", 0.99), ".2f"),
        ]
        if scenario.stream:
            figures += [
                ("TTFT p50 (ms)", q("ttft", 0.5), ".3f"),
                ("TTFT p99 (ms)", q("ttft", 0.99), ".3f"),
                ("tokens relayed/s", tok_s, ",.0f"),
                ("server CPU per token (µs)", cpu_per_token, ".1f"),
            ]
        else:
            figures += [("server CPU per request (µs)", cpu_per_request, ".0f")]
        for name, pick, fmt in figures:
            rows.append(
                Row(
                    scenario.title,
                    name,
                    per("piagent", key, pick),
                    per("baseline", key, pick),
                    fmt,
                    targets.get((key, name)),
                )
            )
            if name == "server CPU per token (µs)" and scenario.delay_ms:
                # The floor beside it: a relay doing nothing but one read in and one write out per token.
                relay = per("relay", key, pick)
                floor = per("baseline", key, pick)
                rows.append(Row(scenario.title, "bare relay's CPU per token (µs)", relay, floor, fmt))
                above = tuple(
                    (p - r) if p is not None and r is not None else None
                    for p, r in zip(per("piagent", key, pick), relay, strict=True)
                )
                rows.append(Row(scenario.title, "piagent's CPU per token above the bare relay (µs)", above, (), fmt))
            if name == "TTFT p50 (ms)":
                extra = tuple(
                    (p - b) if p is not None and b is not None else None
                    for p, b in zip(per("piagent", key, pick), per("baseline", key, pick), strict=True)
                )
                rows.append(
                    Row(
                        scenario.title,
                        "extra TTFT p50 (ms)",
                        extra,
                        (),
                        ".3f",
                        targets.get((key, "extra TTFT p50 (ms)")),
                    )
                )

    memory = [record.memory for record in rounds]
    mib = 1024.0

    def mem(pick: Callable[[MemoryFigures], float]) -> tuple[float | None, ...]:
        return tuple(pick(m) if m is not None else None for m in memory)

    section = "memory and start-up"
    fake_startup = tuple(r.fake_startup_s * 1000 for r in rounds)
    fake_idle = tuple(r.fake_idle_kib / mib for r in rounds)
    rows += [
        Row(
            section,
            "start-up to first /health 200 (ms)",
            mem(lambda m: m.startup_s * 1000),
            fake_startup,
            ".0f",
            ("<=", 500.0),
        ),
        Row(section, "idle RSS after start (MiB)", mem(lambda m: m.idle_kib / mib), fake_idle, ".1f", ("<=", 36.0)),
        Row(
            section,
            f"RSS after {plan.warm_requests:,} requests (MiB)",
            mem(lambda m: m.after_warm_kib / mib),
            (),
            ".1f",
        ),
        Row(
            section,
            "RSS growth per stored conversation (KiB)",
            mem(lambda m: (m.after_convs_kib - m.after_warm_kib) / m.conversations if m.conversations else 0.0),
            (),
            ".2f",
            ("<=", 1.5),
        ),
        Row(section, "peak RSS, memory instance (VmHWM, MiB)", mem(lambda m: m.hwm_kib / mib), (), ".1f"),
        Row(
            section,
            "peak RSS, load instance (VmHWM, MiB)",
            tuple(r.load_hwm_kib / mib if r.load_hwm_kib else None for r in rounds),
            (),
            ".1f",
        ),
    ]
    return rows


def render_table(rows: Sequence[Row], rounds: int) -> str:
    """The Markdown table, with the ratio and the target verdicts."""
    head = ["scenario", "figure"]
    head += [f"piagent #{i + 1}" for i in range(rounds)] + [f"baseline #{i + 1}" for i in range(rounds)]
    head += ["piagent ÷ baseline", "target", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    previous = ""
    for row in rows:
        piagent = list(row.piagent) + [None] * (rounds - len(row.piagent))
        baseline = list(row.baseline) + [None] * (rounds - len(row.baseline))
        p_mean, b_mean = _mean(piagent), _mean(baseline)
        ratio = f"{p_mean / b_mean:.2f}x" if p_mean is not None and b_mean else "—"
        target = status = ""
        if row.target is not None:
            op, limit = row.target
            target = f"{'≤' if op == '<=' else '≥'} {limit:{row.fmt}}"
            if p_mean is None:
                status = "not run"
            else:
                ok = p_mean <= limit if op == "<=" else p_mean >= limit
                status = "met" if ok else "**not met**"
        cells = [row.scenario if row.scenario != previous else "", row.figure]
        cells += [_num(v, row.fmt) for v in piagent] + [_num(v, row.fmt) for v in baseline]
        cells += [ratio, target, status]
        lines.append("| " + " | ".join(cells) + " |")
        previous = row.scenario
    return "\n".join(lines)


def render_notes(plan: Plan, rounds: Sequence[Round]) -> list[str]:
    """Per-load details: failures, caps, noise, core-0 load, what the fake saw."""
    notes: list[str] = [f"**{problem}**" for record in rounds for problem in record.problems]
    for number, record in enumerate(rounds, 1):
        for source, table in (("baseline", record.baseline), ("relay", record.relay), ("piagent", record.piagent)):
            for scenario in plan.scenarios:
                measured = table.get(scenario.key)
                if measured is None:
                    continue
                result = measured.result
                text = f"round {number} {source} {scenario.title}: {result.completed:,} ok"
                if result.failed:
                    text += f", **{result.failed:,} failed** (first: {'; '.join(result.errors[:2])})"
                if result.timed_out:
                    text += f", stopped at the {plan.max_seconds:g} s cap"
                text += f", {result.elapsed_s:.2f} s, load side (core 0) busy {measured.harness_busy:.0%}"
                if measured.foreign_busy >= NOISY:
                    text += f", **other processes used {measured.foreign_busy:.0%} of a core**"
                if measured.favoured:
                    text += ", the load generator real-time (latency scenario)"
                if result.chunks and scenario.stream:
                    text += f", {result.chunks / max(result.completed, 1):.0f} HTTP chunks per reply"
                up = measured.upstream
                if up is not None:
                    text += (
                        f"; upstream: {up.get('chat_requests')} chats ({up.get('stream_requests')} with stream=true), "
                        f"{up.get('connections')} new connections, {up.get('tokens_sent'):,} tokens sent"
                    )
                notes.append(text)
        memory = record.memory
        if memory is not None:
            text = (
                f"round {number} memory instance: {plan.warm_requests:,} warm-up requests, then "
                f"{memory.conversations:,} new conversations (of {plan.conversations:,}) "
                f"in {memory.conversations_s:.1f} s"
            )
            if memory.failed:
                text += f", **{memory.failed:,} failed** (first: {'; '.join(memory.errors[:2])})"
            notes.append(text)
    if rounds and rounds[-1].last_upstream_body:
        body = rounds[-1].last_upstream_body
        notes.append(f"last upstream /api/chat body piagent sent ({len(body)} bytes): `{body[:400]}`")
    return notes


def machine_info(plan: Plan) -> list[str]:
    """Date, CPU, cores, kernel, Python and package versions, revision and settings, as list items."""
    cpu = "unknown"
    try:
        fields = dict(
            (name.strip().lower(), value.strip())
            for name, sep, value in (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())
            if sep
        )
    except OSError:
        fields = {}
    # x86 names the CPU in "model name"; a Raspberry Pi's kernel in "Model" (the board) and "Hardware".
    for key in ("model name", "model", "hardware", "cpu model"):
        if fields.get(key):
            cpu = fields[key]
            break
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "v = {}\n"
        f"for name in {list(PACKAGES)!r}:\n"
        "    try: v[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: v[name] = 'not installed'\n"
        "print(json.dumps({'python': sys.version.split()[0], 'packages': v}))\n"
    )
    try:
        out = subprocess.run([plan.python, "-c", probe], capture_output=True, text=True, timeout=30, check=True).stdout
        info = msgspec.json.decode(out)
        python_version = info["python"]
        packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    except (subprocess.SubprocessError, OSError, msgspec.DecodeError):
        python_version, packages = "unknown", "unknown"
    revision = "unknown"
    try:
        git = ["git", "-C", str(plan.server_root)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "piagent"], capture_output=True, text=True, timeout=10
        )
        revision = head.stdout.strip() or "no commit yet"
        if dirty.stdout.strip():
            revision += " (piagent/ has uncommitted changes)"
    except (subprocess.SubprocessError, OSError):
        pass
    server = plan.server_cmd or f"{plan.python} -m piagent"
    bytecode = (
        "compiled before the run (`python -m compileall piagent`, as `pip install` does)"
        if plan.compile_bytecode and not plan.server_cmd
        else "as found (--source-only or --server-cmd)"
    )
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}",
        f"- Python {python_version} ({plan.python}); {packages}",
        f"- piagent revision: {revision}; server command: `{server}` (cwd {plan.server_root}); bytecode: {bytecode}",
        "- server env: PIAGENT_ACCESS_LOG=false (access log off), PIAGENT_LOG_LEVEL=warning, "
        f"PIAGENT_MODEL=bench, PIAGENT_MEMORY_MAX_CONVERSATIONS={plan.max_conversations}, "
        + ", ".join(f"{k}={v}" for k, v in ADMISSION_ENV.items())
        + "".join(f", {k}={v}" for k, v in plan.extra_env),
        (
            "- pinning: server on core 1 (taskset -c 1); fake Ollama and load generator on core 0"
            if plan.pin
            else "- pinning: off (fewer than 2 cores usable, or --no-pin)"
        ),
        f"- fake Ollama: {'one write per reply (--batch-writes)' if plan.batch_writes else 'one write per token line'}"
        f", no delay between tokens except the trickle scenario; {plan.rounds} round(s) of each scenario",
    ]


# --------------------------------------------------------------------------------------------------------------
# main


def compile_bytecode(plan: Plan) -> None:
    """Write the server's piagent .pyc files first, as `pip install` does for a deployed (non-editable) piagent.

    From an editable install under PYTHONDONTWRITEBYTECODE every start compiles each module from source instead:
    ~1.1 MiB more idle RSS (the compiler's freed memory stays in the heap) and slower start-up, which no
    deployed piagent pays. compileall skips what is up to date.
    """
    command = [plan.python, "-m", "compileall", "-q", str(plan.server_root / "piagent")]
    subprocess.run(command, check=True, timeout=300)


def make_plan(args: argparse.Namespace) -> Plan:
    """The run's fixed plan from the command line."""
    quick = args.quick
    scale = 0.1 if quick else 1.0

    def n(full: int, minimum: int) -> int:
        return max(minimum, int(full * scale))

    scenarios = (
        Scenario("stream1", "stream 256 tok, 1 client", True, 256, 1, n(300, 30), n(30, 5)),
        Scenario("stream16", "stream 256 tok, 16 clients", True, 256, 16, n(1024, 96), n(64, 32)),
        Scenario("json32", "non-stream 16 tok, 32 clients", False, 16, 32, n(6400, 640), n(320, 64)),
        # A model on a Pi: each token in its own read, 20 ms apart; CPU per token includes each request's set-up.
        Scenario("trickle", "stream 64 tok at 20 ms/token, 8 clients", True, 64, 8, n(64, 16), 8, 20.0),
    )
    if args.only:
        unknown = set(args.only) - {scenario.key for scenario in scenarios}
        if unknown:
            raise SystemExit(f"--only: no scenario {sorted(unknown)}; there are {[s.key for s in scenarios]}")
        scenarios = tuple(scenario for scenario in scenarios if scenario.key in args.only)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    pin = not args.no_pin and usable >= 2
    has_piagent = args.server_cmd is not None or (args.server_root / "piagent" / "__main__.py").is_file()
    extra_env = []
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        extra_env.append((key, value))
    return Plan(
        rounds=args.rounds if args.rounds is not None else (1 if quick else 2),
        scenarios=scenarios,
        warm_requests=1000,
        conversations=args.conversations if args.conversations is not None else n(10_000, 1000),
        max_seconds=args.max_seconds if args.max_seconds is not None else (8.0 if quick else 15.0),
        settle_s=0.5,
        python=args.python,
        server_cmd=args.server_cmd,
        extra_env=tuple(extra_env),
        pin=pin,
        batch_writes=args.batch_writes,
        run_piagent=has_piagent and not args.baseline_only,
        run_baseline=not args.piagent_only,
        max_conversations=args.max_conversations,
        wait_quiet_s=args.wait_quiet,
        server_root=args.server_root.resolve(),
        run_memory=not args.only,
        compile_bytecode=not args.source_only,
    )


async def run(plan: Plan) -> list[Round]:
    """Every round, in order; progress on stderr."""

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    rounds = []
    with tempfile.TemporaryDirectory(prefix="piagent-bench-") as tmp:
        for number in range(1, plan.rounds + 1):
            log(f"round {number} of {plan.rounds}")
            rounds.append(await one_round(plan, number, Path(tmp), log))
    return rounds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke mode: one round, small counts, no RESULTS.md")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every scenario (default 2, quick 1)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the server and the fake")
    parser.add_argument(
        "--server-cmd",
        default=None,
        help="command to benchmark instead of `{python} -m piagent`; {python}, {host}, {port} and {ollama_url} "
        "are filled in, and the PIAGENT_* variables are set as well",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY",
        help="only this load scenario (stream1, stream16, json32, trickle; repeatable), and no memory instance",
    )
    parser.add_argument(
        "--server-root",
        type=Path,
        default=REPO_ROOT,
        help="the server's working directory, so another checkout's piagent runs (e.g. main, for a before/after)",
    )
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra server env, repeatable")
    parser.add_argument("--max-conversations", type=int, default=20_000, help="PIAGENT_MEMORY_MAX_CONVERSATIONS")
    parser.add_argument("--conversations", type=int, default=None, help="conversations for the growth figure")
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="cap per measured load in s (default 15, quick 8)"
    )
    parser.add_argument("--batch-writes", action="store_true", help="fake writes a whole reply at once")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each measured load, wait up to S seconds for other processes to leave the CPU idle",
    )
    parser.add_argument("--baseline-only", action="store_true", help="measure the fake alone")
    parser.add_argument("--piagent-only", action="store_true", help="skip the baseline")
    parser.add_argument(
        "--source-only",
        action="store_true",
        help="do not compile piagent's bytecode first (as an editable install that cannot write .pyc files runs)",
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md", help="Markdown file to append to")
    parser.add_argument("--write", action="store_true", help="append to RESULTS.md even with --quick")
    parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    plan = make_plan(args)
    if plan.run_piagent and plan.compile_bytecode and not plan.server_cmd:
        compile_bytecode(plan)
    if plan.pin:
        os.sched_setaffinity(0, {0})
    started = time.monotonic()
    if not plan.run_piagent and not args.baseline_only:
        print(f"note: {REPO_ROOT / 'piagent'} has no __main__.py yet: measuring the baseline only", file=sys.stderr)
    rounds = run_async(run(plan))
    elapsed = time.monotonic() - started
    title = f"## {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    title += " (quick smoke run)" if args.quick else ""
    foreign = [m.foreign_busy for r in rounds for table in (r.baseline, r.piagent) for m in table.values()]
    noise = f"- other processes on the machine during the loads: up to {max(foreign, default=0.0):.0%} of a core"
    if max(foreign, default=0.0) >= NOISY:
        noise += " (**noisy: compare the loads flagged in the notes with care**)"
    parts = [title, "", *machine_info(plan), f"- whole run: {elapsed:.0f} s", noise, ""]
    parts += [render_table(build_rows(plan, rounds), plan.rounds), ""]
    notes = render_notes(plan, rounds)
    if not plan.run_piagent:
        notes.insert(0, "piagent was not run (no piagent/__main__.py, or --baseline-only)")
    parts += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    report = "\n".join(parts)
    print(report)
    if (args.write or not args.quick) and not args.no_write:
        path: Path = args.results
        fresh = not path.exists()
        with path.open("a", encoding="utf-8") as out:
            if fresh:
                out.write("# piagent benchmark results\n\nAppended by `python bench/run.py`; bench/README.md says what")
                out.write(" each figure means. Newest last.\n\n")
            out.write(report + "\n")
        print(f"appended to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
