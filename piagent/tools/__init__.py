"""Tools agents may call: the contract, and the guarded runner.

The built-in tools and command tools live in their own modules, imported only when an agent lists them.
"""

from __future__ import annotations

from piagent.tools.base import (
    Tool,
    ToolError,
    ToolLimits,
    ToolResult,
    call_tool,
    function_spec,
    run_tool,
)
from piagent.tools.schema import ArgumentError, validate

__all__ = [
    "ArgumentError",
    "Tool",
    "ToolError",
    "ToolLimits",
    "ToolResult",
    "call_tool",
    "function_spec",
    "run_tool",
    "validate",
]
