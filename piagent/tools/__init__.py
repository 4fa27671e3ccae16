"""Tools agents may call: the contract, the guarded runner, and the catalog of what the owner made available.

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
from piagent.tools.registry import BUILTIN_TOOLS, ToolCatalog, describe_tools, http_get_client, tool_limits
from piagent.tools.schema import ArgumentError, validate

__all__ = [
    "ArgumentError",
    "BUILTIN_TOOLS",
    "Tool",
    "ToolCatalog",
    "ToolError",
    "ToolLimits",
    "ToolResult",
    "call_tool",
    "describe_tools",
    "function_spec",
    "http_get_client",
    "run_tool",
    "tool_limits",
    "validate",
]
