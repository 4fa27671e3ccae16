"""The fake as a benchmark process: replies from a fixed vocabulary, sized per request, with control endpoints.

``python bench/fake_model.py --port N [--tokens 256] [--token-delay-ms 0] [--batch-writes]`` serves both protocols
on a uvloop loop when uvloop is installed. Tokens per reply: the fake-wide override (``--force-tokens`` or
``POST /_bench/config``), else the request's ``options.num_predict`` when positive, else ``--tokens``; the text is
:func:`~.scripts.reply_text`, so a client can check a relayed reply byte for byte. Benchmark-only endpoints:
``POST /_bench/config`` with ``{"tokens": int | null, "delay_ms": float, "batch_writes": bool}``, ``GET /_bench/stats``
(the :class:`~.server.Stats` counters) and ``POST /_bench/reset``. ``--word`` (repeatable) cycles other tokens;
``--content-length`` sends each reply whole in one write without chunks (bench/protocols.py: the relay's cost
alone).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

import msgspec

from .scripts import Recorded, Script, vocabulary
from .server import FakeModel, Stats

__all__ = ["BenchModel", "main", "run_async"]


class _BenchConfig(msgspec.Struct, forbid_unknown_fields=True):
    tokens: int | None = None
    delay_ms: float = 0.0
    batch_writes: bool = False


class BenchModel(FakeModel):
    """A :class:`FakeModel` answering every chat from the vocabulary; records nothing but counters."""

    def __init__(
        self, tokens: int = 256, force_tokens: int | None = None, delay_ms: float = 0.0, words: tuple[str, ...] = ()
    ) -> None:
        """Replies of ``tokens`` tokens (or ``force_tokens``), ``delay_ms`` before each, from ``words`` if given."""
        super().__init__(record=False)
        self.words = words
        self.default_tokens = tokens
        self.force_tokens = force_tokens
        self.delay = delay_ms / 1000.0
        self._scripts: dict[tuple[int, float], Script] = {}

    def script_for(self, request: Recorded, model: str) -> Script:
        """``force_tokens``, else a positive ``options.num_predict``, else ``default_tokens`` vocabulary tokens."""
        count = self.default_tokens
        if self.force_tokens is not None:
            count = self.force_tokens
        elif isinstance(request.json, dict) and isinstance(options := request.json.get("options"), dict):
            wanted = options.get("num_predict")
            if isinstance(wanted, int | float) and wanted > 0:
                count = int(wanted)
        key = (count, self.delay)
        script = self._scripts.get(key)
        if script is None:
            if len(self._scripts) > 64:
                self._scripts.clear()
            # The delay comes before each token, none before the final line (a model's pace between tokens).
            tokens = [self.words[i % len(self.words)] for i in range(count)] if self.words else vocabulary(count)
            script = Script(tokens=tokens, first_delay=self.delay, delay=self.delay, final_delay=0.0)
            self._scripts[key] = script
        return script

    def extra_endpoint(self, method: str, path: str, body: bytes, keep: bool) -> bytes | None:
        """``GET /_bench/stats``, ``POST /_bench/reset``, ``POST /_bench/config``."""
        if path == "/_bench/stats" and method == "GET":
            return self.wire.json(200, self.stats, keep)
        if path == "/_bench/reset" and method == "POST":
            self.stats = Stats()
            return self.wire.json(200, {"reset": True}, keep)
        if path == "/_bench/config" and method == "POST":
            try:
                config = msgspec.json.decode(body, type=_BenchConfig)
            except msgspec.DecodeError as exc:
                return self.wire.json(400, {"error": str(exc)}, keep)
            self.force_tokens, self.delay = config.tokens, max(config.delay_ms, 0.0) / 1000.0
            self.batch_writes = config.batch_writes
            settings = {"tokens": self.force_tokens, "delay_ms": self.delay * 1000.0, "batch_writes": self.batch_writes}
            return self.wire.json(200, settings, keep)
        return None


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on a uvloop event loop when uvloop is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> None:
    """Command line: serve both protocols from the vocabulary until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="A fake Ollama and OpenAI-compatible model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per reply when the request sets no num_predict")
    parser.add_argument("--force-tokens", type=int, default=None, help="tokens per reply, whatever the request says")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="delay before each token")
    parser.add_argument("--batch-writes", action="store_true", help="write a whole reply at once (not as Ollama does)")
    parser.add_argument(
        "--content-length", action="store_true", help="write a whole reply at once with a Content-Length, no chunks"
    )
    parser.add_argument("--word", action="append", default=[], help="a token to cycle instead of the vocabulary")
    args = parser.parse_args(argv)
    fake = BenchModel(args.tokens, args.force_tokens, args.token_delay_ms, tuple(args.word))
    fake.batch_writes, fake.unchunked = args.batch_writes, args.content_length

    def ready(port: int) -> None:
        print(f"fake model server listening on http://{args.host}:{port}", flush=True)

    run_async(fake.serve(args.host, args.port, ready))
