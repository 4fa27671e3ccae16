"""A JSON schema checker for the subset tool parameters use, run on a model's arguments before any tool does.

Understood: `type` (object, string, integer, number, boolean, array, null, or a list of them), `properties`,
`required`, `additionalProperties` (false or a schema), `enum`, `const`, `minimum`, `maximum`,
`exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `pattern` (a whole-string match, as if
wrapped in `\\A...\\Z`), `items`, `minItems`, `maxItems`. Other keywords (`description`, `format`, ...)
are ignored. The walk follows the schema, never the value, so a deeply nested value costs nothing extra.
"""

from __future__ import annotations

import math
import re
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list, tuple),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
}


class ArgumentError(ValueError):
    """An argument does not fit the tool's schema; `path` names it like `$.pin`."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    allowed = _TYPES.get(name)
    return allowed is None or isinstance(value, allowed)  # an unknown type name constrains nothing


def _check_type(schema: dict[str, Any], value: Any, path: str) -> None:
    expected = schema.get("type")
    if expected is None:
        return
    names = [expected] if isinstance(expected, str) else list(expected)
    if not any(_is_type(value, name) for name in names):
        raise ArgumentError(path, "expected " + " or ".join(f"{'an' if n[0] in 'aeiou' else 'a'} {n}" for n in names))


def _check_number(schema: dict[str, Any], value: int | float, path: str) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        raise ArgumentError(path, f"must be at least {low}")
    if isinstance(high, int | float) and value > high:
        raise ArgumentError(path, f"must be at most {high}")
    low, high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and not isinstance(low, bool) and value <= low:
        raise ArgumentError(path, f"must be more than {low}")
    if isinstance(high, int | float) and not isinstance(high, bool) and value >= high:
        raise ArgumentError(path, f"must be less than {high}")


def _check_string(schema: dict[str, Any], value: str, path: str) -> None:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(value) < low:
        raise ArgumentError(path, f"must be at least {low} characters")
    if isinstance(high, int) and len(value) > high:
        raise ArgumentError(path, f"must be at most {high} characters")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.fullmatch(pattern, value)
        except re.error as exc:
            raise ArgumentError(path, "the tool's schema has a broken pattern") from exc
        if matched is None:
            raise ArgumentError(path, f"must match the pattern {pattern!r}")


def _check_object(schema: dict[str, Any], value: dict[str, Any], path: str) -> None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    for name in schema.get("required") or ():
        if name not in value:
            raise ArgumentError(f"{path}.{name}", "is required")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = f"{path}.{str(name)[:64]}"
        if name in properties:
            validate(properties[name], item, where)
        elif extra is False:
            raise ArgumentError(where, "is not a parameter of this tool")
        elif isinstance(extra, dict):
            validate(extra, item, where)


def _check_array(schema: dict[str, Any], value: list[Any] | tuple[Any, ...], path: str) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        raise ArgumentError(path, f"must have at least {low} items")
    if isinstance(high, int) and len(value) > high:
        raise ArgumentError(path, f"must have at most {high} items")
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            validate(items, item, f"{path}[{index}]")


def _same(a: Any, b: Any) -> bool:
    # JSON has no booleans-as-numbers: true must not satisfy an enum of 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def validate(schema: dict[str, Any], value: Any, path: str = "$") -> None:
    """Raise `ArgumentError` naming the first part of `value` that `schema` does not allow."""
    if not isinstance(schema, dict):
        return
    _check_type(schema, value, path)
    if "const" in schema and not _same(schema["const"], value):
        raise ArgumentError(path, f"must be {schema['const']!r}")
    choices = schema.get("enum")
    if isinstance(choices, list) and not any(_same(choice, value) for choice in choices):
        shown = ", ".join(repr(choice) for choice in choices[:20])
        raise ArgumentError(path, f"must be one of {shown}")
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ArgumentError(path, "must be a finite number")
        _check_number(schema, value, path)
    elif isinstance(value, str):
        _check_string(schema, value, path)
    elif isinstance(value, dict):
        _check_object(schema, value, path)
    elif isinstance(value, list | tuple):
        _check_array(schema, value, path)
