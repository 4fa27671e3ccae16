"""`ask_agent`: hand a question to another agent the owner named, and give its answer back as the result.

The asking itself (that agent's prompt, model, tools and limits) is done by the chat service, which
passes it in; depth and cycles are checked there, along the chain of agents already answering.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from piagent.tools.base import ToolResult

NAME = "ask_agent"
# Ask(agent, question) -> the agent's answer; raises ToolError for a refused chain (too deep, a cycle).
Ask = Callable[[str, str], Awaitable[str]]


class AskAgent:
    """The tool an agent with `delegates:` gets: ask one of them a question."""

    name = NAME

    def __init__(self, delegates: Sequence[str], ask: Ask, timeout: float, describe: Callable[[str], str]) -> None:
        self._ask = ask
        # A model answering takes longer than a sensor read: this tool's own limit (the reply's bounds it).
        self.timeout = timeout
        listed = "; ".join(f"{name}: {describe(name)}" if describe(name) else name for name in delegates)
        self.description = f"Ask another agent a question and get its answer. Agents: {listed}."
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "agent": {"type": "string", "enum": list(delegates), "description": "who to ask"},
                "question": {"type": "string", "minLength": 1, "maxLength": 4000, "description": "the question"},
            },
            "required": ["agent", "question"],
            "additionalProperties": False,
        }

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The named agent's answer, said to be its own (the steps show which agent answered)."""
        agent = arguments["agent"]
        answer = await self._ask(agent, arguments["question"])
        return ToolResult(True, f"{agent} answered: {answer}")
