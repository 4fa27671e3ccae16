"""One fake model server for the tests and the benchmarks: Ollama's and OpenAI's chat protocols, scriptable per request.

Real HTTP/1.1 on 127.0.0.1 (raw asyncio, keep-alive, pipelining), so streaming, disconnects and faults are real.
"""

from __future__ import annotations

from .process import BenchModel, main, run_async
from .scripts import TOKENS, Recorded, Script, ToolCall, json_script, reply_text, vocabulary
from .server import FakeModel, Stats

__all__ = [
    "TOKENS",
    "BenchModel",
    "FakeModel",
    "Recorded",
    "Script",
    "Stats",
    "ToolCall",
    "json_script",
    "main",
    "reply_text",
    "run_async",
    "vocabulary",
]
