"""Command tools: programs on the owner's machine, declared in a TOML file, run with checked arguments only.

    [tools.gpio_read]
    description = "Read a GPIO pin (BCM numbering)."
    argv = ["gpio", "-g", "read", "{pin}"]
    timeout = 5
    [tools.gpio_read.parameters.pin]
    type = "integer"
    minimum = 0
    maximum = 27

A placeholder is a whole argv element, `"{name}"`, replaced by the value as one argument; an element with
any other brace is refused when the file is read (write `{{` or `}}` for a literal brace), so a value can
never be spliced into a larger argument. The program (the first element) is fixed. String parameters need
an `enum` or a `pattern` (matched against the whole value), may not hold control characters, and may not
start with `-` unless `allow_dash = true`, so a value cannot become an option.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from piagent.exceptions import SettingsError
from piagent.tools.base import ToolError, ToolResult
from piagent.tools.processes import run_command
from piagent.tools.schema import ArgumentError, validate

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The child's PATH; the owner can pass piagent's own by listing PATH in `env`.
CHILD_PATH = "/usr/bin:/bin"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Parameter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None
    enum: list[str | int] | None = None
    pattern: str | None = None
    max_length: int = 256
    allow_dash: bool = False
    default: str | int | bool | None = None


class _Command(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    description: str
    argv: list[str]
    parameters: dict[str, _Parameter] = {}
    timeout: float | None = None
    output_max_bytes: int | None = None
    cwd: str = "/"
    env: list[str] = []


def _schema(parameter: _Parameter) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": parameter.type}
    if parameter.description:
        schema["description"] = parameter.description
    if parameter.type == "integer":
        schema.update({key: value for key in ("minimum", "maximum") if (value := getattr(parameter, key)) is not None})
    if parameter.enum is not None:
        schema["enum"] = list(parameter.enum)
    if parameter.type == "string":
        schema["maxLength"] = parameter.max_length
        if parameter.pattern is not None:
            schema["pattern"] = parameter.pattern
    return schema


class CommandTool:
    """One owner-declared program, run with the model's checked arguments in place of its placeholders."""

    def __init__(
        self,
        name: str,
        spec: _Command,
        *,
        timeout: float,
        output_max_bytes: int,
        environ: Mapping[str, str],
    ) -> None:
        self.name = name
        self.description = spec.description
        self._spec = spec
        self.argv = tuple(spec.argv)
        self.timeout = spec.timeout if spec.timeout is not None else timeout
        self.output_max_bytes = spec.output_max_bytes if spec.output_max_bytes is not None else output_max_bytes
        self.cwd = spec.cwd
        self.env = {"PATH": CHILD_PATH} | {key: environ[key] for key in spec.env if key in environ}
        properties = {key: _schema(parameter) for key, parameter in spec.parameters.items()}
        required = [key for key, parameter in spec.parameters.items() if parameter.default is None]
        self.parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            self.parameters["required"] = required

    def _argument(self, key: str, value: Any) -> str:
        """One value as argv text, checked again here so `run` is safe even when called directly."""
        parameter = self._spec.parameters[key]
        validate(_schema(parameter), value, f"$.{key}")
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value)
        if parameter.type == "string":
            if _CONTROL.search(text):
                raise ArgumentError(f"$.{key}", "must not contain control characters such as a newline")
            if text.startswith("-") and not parameter.allow_dash:
                raise ArgumentError(f"$.{key}", "must not start with '-'")
        return text

    def render_argv(self, arguments: Mapping[str, Any]) -> list[str]:
        """The argv for these arguments; `ArgumentError` if one does not fit its parameter."""
        values = {key: parameter.default for key, parameter in self._spec.parameters.items()}
        values.update(arguments)
        unknown = set(values) - set(self._spec.parameters)
        if unknown:
            raise ArgumentError(f"$.{sorted(unknown)[0][:64]}", "is not a parameter of this tool")
        missing = sorted(key for key, value in values.items() if value is None)
        if missing:
            raise ArgumentError(f"$.{missing[0]}", "is required")
        rendered = {key: self._argument(key, value) for key, value in values.items()}
        argv = []
        for element in self.argv:
            whole = _PLACEHOLDER.fullmatch(element)
            argv.append(rendered[whole.group(1)] if whole else element.replace("{{", "{").replace("}}", "}"))
        return argv

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The command's output (stdout and stderr together); a non-zero exit or a timeout is an error result."""
        argv = self.render_argv(arguments)
        try:
            outcome = await run_command(
                argv, env=self.env, cwd=self.cwd, time_limit=self.timeout, output_max_bytes=self.output_max_bytes
            )
        except OSError as exc:
            raise ToolError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
        if outcome.returncode is None:
            text = f"timed out after {self.timeout:g} s and was stopped\n{outcome.output}"
            return ToolResult(ok=False, text=text.rstrip("\n"), truncated=outcome.truncated)
        if outcome.returncode == 0:
            return ToolResult(ok=True, text=outcome.output, truncated=outcome.truncated)
        status = f"exit status {outcome.returncode}" if outcome.returncode > 0 else f"signal {-outcome.returncode}"
        text = f"{outcome.output.rstrip(chr(10))}\n[{status}]".lstrip("\n")
        return ToolResult(ok=False, text=text, truncated=outcome.truncated)


def _check_command(name: str, spec: _Command) -> str | None:
    """What is wrong with one declared tool, as `field: reason`, or None."""
    if not NAME.fullmatch(name):
        return "name: letters, digits, '_' and '-', starting with a letter, at most 64"
    if not spec.argv or not spec.argv[0] or "{" in spec.argv[0] or "}" in spec.argv[0]:
        return "argv: the first element must be a fixed program"
    used = set()
    for element in spec.argv:
        whole = _PLACEHOLDER.fullmatch(element)
        if whole:
            if whole.group(1) not in spec.parameters:
                return f"argv: {element!r} names no parameter"
            used.add(whole.group(1))
        elif "{" in element.replace("{{", "").replace("}}", "") or "}" in element.replace("{{", "").replace("}}", ""):
            return f"argv: {element[:60]!r}: a placeholder must be a whole element, like '{{pin}}'"
    for key, parameter in spec.parameters.items():
        problem = _check_parameter(parameter)
        if problem:
            return f"parameters.{key}.{problem}"
        if key not in used:
            return f"parameters.{key}: not used in argv"
    if spec.timeout is not None and not 0 < spec.timeout <= 3600:
        return "timeout: seconds from 0 to 3600"
    if spec.output_max_bytes is not None and not 0 < spec.output_max_bytes <= 16 * 1024 * 1024:
        return "output_max_bytes: from 1 to 16777216"
    if not Path(spec.cwd).is_absolute() or not Path(spec.cwd).is_dir():
        return f"cwd: {spec.cwd!r} is not an existing absolute folder"
    return None


def _check_parameter(parameter: _Parameter) -> str | None:
    if parameter.type not in ("integer", "string", "boolean"):
        return "type: integer, string or boolean"
    if parameter.type == "string":
        if parameter.enum is None and parameter.pattern is None:
            return "pattern: a string parameter needs an enum or a pattern"
        if parameter.pattern is not None:
            try:
                re.compile(parameter.pattern)
            except re.error as exc:
                return f"pattern: {exc}"
        if not 0 < parameter.max_length <= 4096:
            return "max_length: from 1 to 4096"
    if parameter.enum is not None and not all(_fits(parameter.type, item) for item in parameter.enum):
        return f"enum: every item must be a {parameter.type}"
    if parameter.default is not None:
        try:
            validate(_schema(parameter), parameter.default)
        except ArgumentError as exc:
            return f"default: {exc.reason}"
    return None


def _fits(kind: str, value: Any) -> bool:
    return isinstance(value, str) if kind == "string" else isinstance(value, int) and not isinstance(value, bool)


def _program(argv0: str, env: Mapping[str, str]) -> str | None:
    found = shutil.which(argv0, path=env.get("PATH", CHILD_PATH))
    return found if found and os.access(found, os.X_OK) else None


def load_commands(
    path: str, *, timeout: float, output_max_bytes: int, environ: Mapping[str, str] | None = None
) -> dict[str, CommandTool]:
    """The command tools declared in the TOML file at `path`; `SettingsError` names the file, tool and field."""
    import tomllib

    env_source = os.environ if environ is None else environ
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"tools file {path}: cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"tools file {path}: not valid TOML: {exc}") from exc
    declared = raw.get("tools", {})
    if set(raw) - {"tools"} or not isinstance(declared, dict):
        raise SettingsError(f"tools file {path}: expected only [tools.<name>] tables")
    tools = {}
    for name, body in declared.items():
        try:
            spec = msgspec.convert(body, _Command)
        except msgspec.ValidationError as exc:
            # msgspec names the field as `$.argv` or `$.parameters.pin.maximum`, the way the owner wrote it.
            raise SettingsError(f"tools file {path}: tool {name!r}: {exc}") from exc
        problem = _check_command(name, spec)
        tool = CommandTool(name, spec, timeout=timeout, output_max_bytes=output_max_bytes, environ=env_source)
        program = _program(spec.argv[0], tool.env) if problem is None else None
        if problem is None and program is None:
            problem = f"argv: program {spec.argv[0]!r} not found (the tool's PATH is {tool.env['PATH']})"
        if problem is not None or program is None:
            raise SettingsError(f"tools file {path}: tool {name!r}: {problem}")
        # The program found now is the one run later, whatever appears on the PATH meanwhile.
        tool.argv = (program, *tool.argv[1:])
        tools[name] = tool
    return tools
