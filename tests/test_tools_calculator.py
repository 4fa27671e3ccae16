"""The calculator: right answers, and hostile input refused quickly with a clear error, never evaluated."""

from __future__ import annotations

import time

import pytest

from piagent.tools import ToolError, ToolLimits, ToolResult, run_tool
from piagent.tools.calculator import MAX_EXPRESSION_CHARS, Calculator
from piagent.tools.calculator import calculate as evaluate

pytestmark = pytest.mark.anyio

LIMITS = ToolLimits(timeout=5)


async def calculate(expression: str) -> ToolResult:
    return await run_tool(Calculator(), {"expression": expression}, LIMITS)


@pytest.mark.parametrize(
    ("expression", "answer"),
    [
        pytest.param("1 + 2 * 3", "7", id="precedence"),
        pytest.param("(1 + 2) * 3", "9", id="parentheses"),
        pytest.param("7 / 2", "3.5", id="true-division"),
        pytest.param("7 // 2", "3", id="floor-division"),
        pytest.param("-7 % 3", "2", id="modulo"),
        pytest.param("2 ** 10", "1024", id="power"),
        pytest.param("2 ** -1", "0.5", id="negative-exponent"),
        pytest.param("-(3 - 5)", "2", id="unary-minus"),
        pytest.param("0.1 + 0.2", "0.3", id="float-shown-to-15-digits"),
        pytest.param("sqrt(16) + abs(-2)", "6", id="functions"),
        pytest.param("round(pi, 3)", "3.142", id="round-digits"),
        pytest.param("max(1, 5, 3) - min(4, 2)", "3", id="min-max"),
        pytest.param("log(8, 2)", "3", id="log-base"),
        pytest.param("2 ** 1000 // 2 ** 999", "2", id="big-integers-exact"),
        pytest.param("  1 + 1  ", "2", id="spaces"),
    ],
)
async def test_arithmetic_is_right(expression: str, answer: str) -> None:
    assert await calculate(expression) == ToolResult(ok=True, text=answer)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param("__import__('os').system('id')", "Call is not allowed", id="import"),
        pytest.param("().__class__.__bases__", "Attribute is not allowed", id="attribute"),
        pytest.param("(lambda: 1)()", "Call is not allowed", id="lambda"),
        pytest.param("open('/etc/passwd')", "Call is not allowed", id="open"),
        pytest.param("x", "unknown name 'x'", id="unknown-name"),
        pytest.param("'a' * 10", "'a' is not a number", id="string"),
        pytest.param("True + 1", "True is not a number", id="bool"),
        pytest.param("1j * 1j", "is not a number", id="complex"),
        pytest.param("[1, 2]", "List is not allowed", id="list"),
        pytest.param("1 if 1 else 2", "IfExp is not allowed", id="conditional"),
        pytest.param("1 < 2", "Compare is not allowed", id="compare"),
        pytest.param("1 << 100000", "BinOp is not allowed", id="shift"),
        pytest.param("sqrt(x=4)", "plain arguments", id="keyword-argument"),
        pytest.param("round(1.5, 10 ** 9)", "digits", id="round-digits-bound"),
        pytest.param("9 ** 9 ** 9", "exponents are limited to 1000", id="tower"),
        pytest.param("10 ** 100000", "exponents are limited to 1000", id="huge-exponent"),
        pytest.param("999999 ** 999", "too large", id="huge-base"),
        pytest.param("(2 ** 1000) ** 5", "too large", id="power-of-a-big-result"),
        pytest.param("(2**999)*(2**999)*(2**999)*(2**999)*(2**999)", "too large", id="product-growth"),
        pytest.param("10.0 ** 400", "too large", id="float-overflow"),
        pytest.param("exp(1000)", "too large", id="exp-overflow"),
        pytest.param("1e999", "not a finite number", id="infinite-literal"),
        pytest.param("1 / 0", "division by zero", id="division-by-zero"),
        pytest.param("1 // 0", "division by zero", id="floor-division-by-zero"),
        pytest.param("5 % 0", "division by zero", id="modulo-by-zero"),
        pytest.param("0 ** -1", "division by zero", id="zero-to-negative-power"),
        pytest.param("sqrt(-1)", "math error", id="domain-error"),
        pytest.param("(-8) ** 0.5", "not a real number", id="complex-result"),
        pytest.param("-" * 150 + "1", "limited to 100 parts", id="many-nodes"),
        pytest.param("1 +", "not an arithmetic expression", id="syntax-error"),
        pytest.param("1; 2", "not an arithmetic expression", id="statement"),
    ],
)
async def test_hostile_or_impossible_input_is_an_error_result(expression: str, message: str) -> None:
    started = time.perf_counter()
    result = await calculate(expression)
    assert time.perf_counter() - started < 0.5
    assert not result.ok
    assert message in result.text, result.text


async def test_an_overlong_expression_is_refused_by_its_schema() -> None:
    result = await calculate("1+" * MAX_EXPRESSION_CHARS + "1")
    assert not result.ok
    assert "$.expression: must be at most 200 characters" in result.text


async def test_the_largest_allowed_integers_are_still_exact() -> None:
    result = await calculate("2 ** 1000 * 2 ** 1000 * 2 ** 1000 * 2 ** 1000 + 1")
    assert result.ok
    assert int(result.text) == 2**4000 + 1


async def test_nesting_as_deep_as_the_length_allows_is_evaluated_quickly() -> None:
    started = time.perf_counter()
    assert await calculate("-(" * 40 + "1" + ")" * 40) == ToolResult(ok=True, text="1")
    assert await calculate("(" * 99 + "1" + ")" * 99) == ToolResult(ok=True, text="1")
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("(" * 5000 + "1" + ")" * 5000, id="deep-parentheses"),
        pytest.param("-" * 100_000 + "1", id="deep-unary"),
        pytest.param("1+" * 100_000 + "1", id="long-sum"),
    ],
)
def test_the_evaluator_itself_refuses_long_input_before_parsing(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError, match="limited to 200 characters"):
        evaluate(expression)
    assert time.perf_counter() - started < 0.5
