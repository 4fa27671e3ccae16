"""What `/metrics` (PIAGENT_METRICS=true) costs per request: the same load on piagent with metrics off and on.

Reuses bench/stores.py's load (keep-alive clients, non-stream `/chat` conversations) and processes: one
fake model server as Ollama (each reply whole in one write) and two piagent processes, metrics off and
on, pinned to CPU 1 when there are two or more. Each round gives both the same load in turn; CPU per
request (the server's utime + stime over the measured requests) is the steadier figure on a shared
machine, and the ratio on/off is reported per round and as the median, with each server's RSS.

With `--baseline-root PATH` (another checkout, e.g. `git archive <commit> | tar -x -C PATH`), a third
process runs that checkout's piagent with metrics off, in the same rounds: what metrics being off costs
now against that revision (`off/base`), the way to show that off stays free.

Run: `python bench/metrics.py [--rounds 3] [--requests 2000] [--clients 8] [--baseline-root PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stores import ROOT, TOKENS, _cpu_seconds, _free_port, _load, _piagent_env, _process, _rss_kib


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--baseline-root", type=Path, default=None, help="a checkout run with metrics off beside")
    args = parser.parse_args()
    modes = ["off", "on"] + (["base"] if args.baseline_root is not None else [])
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    wall: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="piagent-bench-metrics-") as folder, ExitStack() as stack:
        fake_port = _free_port()
        fake = [sys.executable, str(ROOT / "bench" / "fake_model.py"), "--port", str(fake_port)]
        fake += ["--force-tokens", str(TOKENS), "--content-length", *(f"--word= w{i}" for i in range(TOKENS))]
        stack.enter_context(_process(fake, None, 0, fake_port, b"/api/version", "the fake model server", folder))
        servers: dict[str, tuple[int, int]] = {}
        for mode in modes:
            port = _free_port()
            env = _piagent_env(fake_port, port, "memory://")
            env.update(PIAGENT_METRICS="true" if mode == "on" else "false", PIAGENT_STARTUP_CHECK="false")
            if mode == "base":  # that checkout's package first on the path; the same agents and load
                env["PYTHONPATH"] = str(args.baseline_root.resolve())
            command = [sys.executable, "-m", "piagent"]
            pid = stack.enter_context(_process(command, env, 1, port, b"/health", f"piagent (metrics {mode})", folder))
            servers[mode] = (port, pid)
        for port, _ in servers.values():  # warm-up
            asyncio.run(_load(port, args.clients, 200, 4))
        for _ in range(args.rounds):
            for mode, (port, pid) in servers.items():
                before = _cpu_seconds(pid)
                latencies, errors, _ = asyncio.run(_load(port, args.clients, args.requests, 4))
                assert not errors, errors[:3]
                cpu[mode].append((_cpu_seconds(pid) - before) / args.requests * 1e6)
                wall[mode].append(statistics.mean(latencies) * 1e6)
            time.sleep(0.2)
        rss = {mode: _rss_kib(pid) for mode, (_, pid) in servers.items()}
    ratios = [on / off for on, off in zip(cpu["on"], cpu["off"], strict=True)]
    for mode in modes:
        print(
            f"metrics {mode:3}: CPU/request {statistics.median(cpu[mode]):7.1f} µs, "
            f"mean latency {statistics.median(wall[mode]):7.1f} µs, RSS {rss[mode] / 1024:.1f} MiB "
            f"(rounds: {', '.join(f'{value:.0f}' for value in cpu[mode])})"
        )
    print(f"CPU on/off: median {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    if "base" in cpu:
        offs = [off / base for off, base in zip(cpu["off"], cpu["base"], strict=True)]
        print(f"CPU off/base: median {statistics.median(offs):.3f} (rounds: {', '.join(f'{r:.3f}' for r in offs)})")


if __name__ == "__main__":
    main()
