"""The `calculator` tool: arithmetic over a whitelisted syntax tree, never `eval`, with every size bounded."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from piagent.tools.base import ToolError, ToolResult

# These bounds keep one call to microseconds and kilobytes whatever the model writes: a 200-character
# expression of at most 100 nodes, integers of at most 4096 bits (about 1233 digits), exponents up to 1000.
MAX_EXPRESSION_CHARS = 200
MAX_NODES = 100
MAX_INT_BITS = 4096
MAX_EXPONENT = 1000

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(value: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or abs(digits) > 100:
        raise ToolError("round() takes a whole number of digits from -100 to 100")
    return round(value, digits) if digits else round(value)


def _log(value: Number, base: Number = math.e) -> float:
    return math.log(value, base)


# name -> (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "sqrt": (math.sqrt, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "log2": (math.log2, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "min": (min, 1, 20),
    "max": (max, 1, 20),
}


def _check_size(value: Number) -> Number:
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ToolError("the result is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError("the result is not a finite number")
        return value
    raise ToolError("the result is not a real number")  # e.g. a complex from (-8) ** 0.5


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponents are limited to {MAX_EXPONENT}")
    # The result's size is known before it is computed: refuse rather than build a huge integer.
    if isinstance(base, int) and isinstance(exponent, int) and max(base.bit_length() - 1, 0) * exponent > MAX_INT_BITS:
        raise ToolError("the result is too large")
    return _check_size(base**exponent)


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Pow):
        return _power(left, right)
    if isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):  # noqa: SIM102
        # Known before computing it: a product's bits are at most the sum of its factors' bits.
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise ToolError("the result is too large")
    return _check_size(_BINARY[type(op)](left, right))


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"{node.value!r} is not a number")
        return _check_size(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _binary(node.op, _evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        function, fewest, most = _FUNCTIONS[node.func.id]
        if node.keywords or not fewest <= len(node.args) <= most:
            raise ToolError(f"{node.func.id}() takes {fewest} to {most} plain arguments")
        arguments = [_evaluate(argument) for argument in node.args]
        return _check_size(function(*arguments))
    if isinstance(node, ast.Name):
        raise ToolError(f"unknown name {node.id[:32]!r}; known: {', '.join([*_CONSTANTS, *_FUNCTIONS])}")
    raise ToolError(f"{type(node).__name__} is not allowed; only numbers, + - * / // % **, parentheses and functions")


def calculate(expression: str) -> Number:
    """The value of an arithmetic expression, or `ToolError` saying what is not allowed."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expressions are limited to {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ToolError("not an arithmetic expression") from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"expressions are limited to {MAX_NODES} parts")
    try:
        return _evaluate(tree)
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError("the result is too large") from exc
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from exc


def format_number(value: Number) -> str:
    """A number as the model should read it: integers exactly, floats to 15 significant digits."""
    if isinstance(value, int):
        return str(value)
    return format(value, ".15g")


class Calculator:
    """Evaluates arithmetic so the model does not have to guess it."""

    name = "calculator"
    description = (
        "Evaluate an arithmetic expression exactly. Supports numbers, + - * / // % ** and parentheses, "
        "pi, e, and sqrt, sin, cos, tan, asin, acos, atan, exp, log, log10, log2, abs, round, floor, ceil, min, max."
    )
    parameters: dict[str, Any] = {  # noqa: RUF012 - read-only, the same for every instance
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "For example: (17.5 - 3) * 2 ** 0.5",
                "maxLength": MAX_EXPRESSION_CHARS,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The expression's value as text."""
        expression = str(arguments["expression"])
        return ToolResult(ok=True, text=format_number(calculate(expression)))
