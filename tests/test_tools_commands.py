"""Command tools: declared in TOML, run without a shell, arguments checked, nothing left running after a call."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from piagent.exceptions import SettingsError
from piagent.tools import ToolLimits, ToolResult, run_tool
from piagent.tools.commands import CommandTool, load_commands
from piagent.tools.processes import KILL_GRACE

pytestmark = pytest.mark.anyio

PYTHON = sys.executable
LIMITS = ToolLimits(timeout=10, output_max_bytes=1 << 20)
# piagent serves on uvloop where it is installed, whose subprocess transport is its own: the process
# lifecycle tests run on both loops.
BOTH_LOOPS = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param("asyncio", id="asyncio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],
)
# A child that prints the arguments it was given as JSON: shows exactly what reached argv.
SHOW_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
# A child that starts a grandchild, writes both pids, then waits: `stubborn` ignores SIGTERM.
SPAWN = """
import os, signal, subprocess, sys, time
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
child = subprocess.Popen([sys.executable, "-c", grandchild])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d %d" % (os.getpid(), child.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def load(tmp_path: Path, text: str, **environ: str) -> dict[str, CommandTool]:
    path = tmp_path / "tools.toml"
    path.write_text(text)
    return load_commands(str(path), timeout=5, output_max_bytes=4096, environ=environ)


def show_argv_tool(tmp_path: Path, parameters: str, placeholders: str = '"{value}"') -> CommandTool:
    text = f"""
[tools.show]
description = "Shows its arguments."
argv = [{toml_string(PYTHON)}, "-c", {toml_string(SHOW_ARGV)}, {placeholders}]
{parameters}
"""
    return load(tmp_path, text)["show"]


async def argv_of(tool: CommandTool, arguments: Any) -> Any:
    result = await run_tool(tool, arguments, LIMITS)
    return json.loads(result.text) if result.ok else result


STRING_VALUE = """
[tools.show.parameters.value]
type = "string"
pattern = '[\\s\\S]+'
"""


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("; rm -rf /", id="semicolon"),
        pytest.param("$(id)", id="command-substitution"),
        pytest.param("`id`", id="backticks"),
        pytest.param("a b c", id="spaces-stay-one-argument"),
        pytest.param("* ?", id="globs"),
        pytest.param("'\"", id="quotes"),
        pytest.param("| cat /etc/passwd", id="pipe"),
    ],
)
async def test_shell_syntax_in_a_value_arrives_as_one_literal_argument(tmp_path: Path, value: str) -> None:
    tool = show_argv_tool(tmp_path, STRING_VALUE)
    assert await argv_of(tool, {"value": value}) == [value]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("-rf", "$.value: must not start with '-'", id="dash-option"),
        pytest.param("--output=/etc/passwd", "$.value: must not start with '-'", id="long-option"),
        pytest.param("a\nb", "$.value: must not contain control characters", id="newline"),
        pytest.param("a\x00b", "$.value: must not contain control characters", id="nul"),
        pytest.param("x" * 257, "$.value: must be at most 256 characters", id="default-max-length"),
    ],
)
async def test_a_value_that_could_become_an_option_or_break_argv_never_reaches_it(
    tmp_path: Path, value: str, message: str
) -> None:
    tool = show_argv_tool(tmp_path, STRING_VALUE)
    result = await run_tool(tool, {"value": value}, LIMITS)
    assert not result.ok
    assert message in result.text


async def test_a_dash_is_allowed_when_the_owner_says_so(tmp_path: Path) -> None:
    tool = show_argv_tool(tmp_path, STRING_VALUE + "allow_dash = true\n")
    assert await argv_of(tool, {"value": "-v"}) == ["-v"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("gpio4\n", "must match the pattern", id="trailing-newline"),
        pytest.param("gpio4;id", "must match the pattern", id="suffix"),
        pytest.param("xgpio4", "must match the pattern", id="prefix"),
        pytest.param(4, "expected a string", id="number"),
    ],
)
async def test_a_pattern_matches_the_whole_value(tmp_path: Path, value: Any, message: str) -> None:
    tool = show_argv_tool(tmp_path, '[tools.show.parameters.value]\ntype = "string"\npattern = "gpio[0-9]+"\n')
    assert await argv_of(tool, {"value": "gpio17"}) == ["gpio17"]
    result = await run_tool(tool, {"value": value}, LIMITS)
    assert not result.ok
    assert message in result.text


TYPED = """
[tools.show.parameters.pin]
type = "integer"
minimum = 0
maximum = 27
[tools.show.parameters.mode]
type = "string"
enum = ["in", "out"]
[tools.show.parameters.pull]
type = "boolean"
default = false
"""


async def test_typed_parameters_render_as_plain_arguments(tmp_path: Path) -> None:
    tool = show_argv_tool(tmp_path, TYPED, '"{pin}", "{mode}", "{pull}", "{{literal}}"')
    assert tool.parameters["required"] == ["pin", "mode"]
    assert await argv_of(tool, {"pin": 17, "mode": "in", "pull": True}) == ["17", "in", "true", "{literal}"]
    assert await argv_of(tool, {"pin": 0, "mode": "out"}) == ["0", "out", "false", "{literal}"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"pin": 28, "mode": "in"}, "$.pin: must be at most 27", id="range"),
        pytest.param({"pin": "4; reboot", "mode": "in"}, "$.pin: expected an integer", id="string-for-integer"),
        pytest.param({"pin": 4.5, "mode": "in"}, "$.pin: expected an integer", id="float"),
        pytest.param({"pin": 4, "mode": "in; reboot"}, "$.mode: must be one of", id="enum"),
        pytest.param({"pin": 4, "mode": "in", "pull": "yes"}, "$.pull: expected a boolean", id="boolean"),
        pytest.param({"pin": 4}, "$.mode: is required", id="missing"),
        pytest.param({"pin": 4, "mode": "in", "extra": "x"}, "$.extra: is not a parameter", id="extra"),
    ],
)
async def test_parameters_that_fail_their_type_never_reach_argv(
    tmp_path: Path, arguments: dict[str, Any], message: str
) -> None:
    tool = show_argv_tool(tmp_path, TYPED, '"{pin}", "{mode}", "{pull}"')
    result = await run_tool(tool, arguments, LIMITS)
    assert not result.ok
    assert message in result.text
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        tool.render_argv(arguments)  # the tool checks again itself, for a caller that skips run_tool


@BOTH_LOOPS
async def test_the_environment_is_scrubbed_to_path_and_the_listed_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIAGENT_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("LANG", "C.UTF-8")
    path = tmp_path / "tools.toml"
    path.write_text('[tools.env]\ndescription = "env"\nargv = ["env"]\nenv = ["LANG", "NOT_SET_ANYWHERE"]\n')
    tool = load_commands(str(path), timeout=5, output_max_bytes=4096)["env"]
    result = await run_tool(tool, {}, LIMITS)
    assert result.ok
    assert sorted(result.text.split()) == ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"]


async def test_the_command_runs_in_the_owner_folder(tmp_path: Path) -> None:
    tool = load(tmp_path, f'[tools.where]\ndescription = "pwd"\nargv = ["pwd"]\ncwd = {toml_string(str(tmp_path))}\n')
    assert await run_tool(tool["where"], {}, LIMITS) == ToolResult(ok=True, text=f"{tmp_path}\n")


async def test_a_failing_command_is_an_error_result_with_its_output_and_status(tmp_path: Path) -> None:
    script = toml_string("import sys; print('no such pin', file=sys.stderr); sys.exit(3)")
    tools = load(tmp_path, f'[tools.fail]\ndescription = "fails"\nargv = [{toml_string(PYTHON)}, "-c", {script}]\n')
    assert await run_tool(tools["fail"], {}, LIMITS) == ToolResult(ok=False, text="no such pin\n[exit status 3]")


@BOTH_LOOPS
async def test_huge_output_is_capped_while_read_and_the_command_finishes(tmp_path: Path) -> None:
    script = toml_string("import sys; sys.stdout.write('x' * 5_000_000)")
    text = (
        f'[tools.loud]\ndescription = "loud"\nargv = [{toml_string(PYTHON)}, "-c", {script}]\noutput_max_bytes = 1000\n'
    )
    result = await run_tool(load(tmp_path, text)["loud"], {}, LIMITS)
    assert result == ToolResult(ok=True, text="x" * 1000 + "\n[truncated: 4999000 bytes more]", truncated=True)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a container's init may be slow to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def wait_for_pids(pid_file: Path) -> list[int]:
    """The pids the child wrote, once it has (polling a file: the child has no other way to say so)."""
    async with asyncio.timeout(10):
        while not os.path.exists(pid_file):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.01)
    with open(pid_file) as file:  # noqa: ASYNC230 - a few bytes on tmpfs
        return [int(pid) for pid in file.read().split()]


async def seconds_until_dead(pids: list[int], limit: float = 2.0) -> float:
    """How long until none of `pids` runs (polled: a process's end is not an event this test can await)."""
    started = time.monotonic()
    while any(alive(pid) for pid in pids) and time.monotonic() - started < limit:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def let_the_cleanup_finish(leader: int) -> None:
    """Once the event loop has reaped the leader, give its scheduled cleanup (SIGKILL, closing the pipes) time
    to run, as a server's loop would; a test's loop closes right after, and unclosed pipes would warn."""
    async with asyncio.timeout(5):
        while os.path.exists(f"/proc/{leader}"):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.01)
    await asyncio.sleep(3 * KILL_GRACE)


def spawn_tool(tmp_path: Path, mode: str, timeout: float = 30) -> CommandTool:
    text = f"""
[tools.spawn]
description = "Starts a grandchild and waits."
argv = [{toml_string(PYTHON)}, "-c", {toml_string(SPAWN)}, {toml_string(str(tmp_path / "pids"))}, "{mode}"]
timeout = {timeout}
"""
    return load(tmp_path, text)["spawn"]


@BOTH_LOOPS
@pytest.mark.parametrize("mode", ["polite", "stubborn"])
async def test_a_slow_command_is_stopped_at_its_timeout_with_its_whole_group(tmp_path: Path, mode: str) -> None:
    tool = spawn_tool(tmp_path, mode, timeout=1.5)
    task = asyncio.ensure_future(run_tool(tool, {}, LIMITS))
    pids = await wait_for_pids(tmp_path / "pids")
    assert all(alive(pid) for pid in pids)
    result = await task
    assert result.ok is False
    assert result.text == "timed out after 1.5 s and was stopped"
    assert await seconds_until_dead(pids) < 0.2


@BOTH_LOOPS
@pytest.mark.parametrize("mode", ["polite", "stubborn"])
async def test_cancelling_the_call_kills_the_command_and_its_children_within_200ms(tmp_path: Path, mode: str) -> None:
    tool = spawn_tool(tmp_path, mode)
    task = asyncio.ensure_future(run_tool(tool, {}, LIMITS))
    pids = await wait_for_pids(tmp_path / "pids")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await seconds_until_dead(pids) < 0.2
    await let_the_cleanup_finish(pids[0])


async def test_the_call_limit_stops_a_command_whose_own_timeout_is_longer(tmp_path: Path) -> None:
    tool = spawn_tool(tmp_path, "polite", timeout=30)
    task = asyncio.ensure_future(run_tool(tool, {}, ToolLimits(timeout=1.5)))
    pids = await wait_for_pids(tmp_path / "pids")
    assert await task == ToolResult(ok=False, text="spawn timed out after 1.5 s")
    assert await seconds_until_dead(pids) < 0.2
    await let_the_cleanup_finish(pids[0])


async def test_endless_output_is_capped_and_stopped_at_the_timeout(tmp_path: Path) -> None:
    tools = load(tmp_path, '[tools.yes]\ndescription = "y"\nargv = ["yes"]\ntimeout = 0.5\noutput_max_bytes = 10\n')
    result = await run_tool(tools["yes"], {}, LIMITS)
    assert not result.ok
    assert result.truncated
    assert result.text.startswith("timed out after 0.5 s and was stopped\ny\ny\ny\ny\ny\n\n[truncated: ")


@BOTH_LOOPS
async def test_a_child_left_running_in_the_background_is_killed_when_the_command_ends(tmp_path: Path) -> None:
    script = "import subprocess, sys; print(subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL).pid)"
    text = f'[tools.bg]\ndescription = "bg"\nargv = [{toml_string(PYTHON)}, "-c", {toml_string(script)}]\n'
    result = await run_tool(load(tmp_path, text)["bg"], {}, LIMITS)
    assert result.ok
    assert await seconds_until_dead([int(result.text)]) < 0.2


FILE_ERRORS = [
    pytest.param('[tools.x]\nargv = ["true"]\n', "tool 'x'", "description", id="missing-description"),
    pytest.param('[tools.x]\ndescription = "d"\nargv = ["true"]\nshell = true\n', "tool 'x'", "shell", id="unknown"),
    pytest.param('[tools.x]\ndescription = "d"\nargv = "true"\n', "tool 'x'", "argv", id="argv-not-a-list"),
    pytest.param('[tools.x]\ndescription = "d"\nargv = []\n', "tool 'x'", "argv: the first", id="empty-argv"),
    pytest.param('[tools.x]\ndescription = "d"\nargv = ["{p}"]\n', "tool 'x'", "argv: the first", id="program-param"),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "pin={p}"]\n[tools.x.parameters.p]\ntype = "integer"\n',
        "tool 'x'",
        "argv: 'pin={p}': a placeholder must be a whole element",
        id="placeholder-inside-a-string",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "{p}"]\n', "tool 'x'", "names no parameter", id="nameless"
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo"]\n[tools.x.parameters.p]\ntype = "integer"\n',
        "tool 'x'",
        "parameters.p: not used in argv",
        id="unused-parameter",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "{p}"]\n[tools.x.parameters.p]\ntype = "string"\n',
        "tool 'x'",
        "parameters.p.pattern: a string parameter needs an enum or a pattern",
        id="free-string",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "{p}"]\n[tools.x.parameters.p]\ntype = "number"\n',
        "tool 'x'",
        "parameters.p.type",
        id="unsupported-type",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "{p}"]\n[tools.x.parameters.p]\ntype = "string"\n'
        'pattern = "("\n',
        "tool 'x'",
        "parameters.p.pattern: missing )",
        id="broken-pattern",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "{p}"]\n[tools.x.parameters.p]\ntype = "integer"\n'
        "maximum = 5\ndefault = 9\n",
        "tool 'x'",
        "parameters.p.default: must be at most 5",
        id="default-out-of-range",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["echo", "{p}"]\n[tools.x.parameters.p]\ntype = "string"\nenum = [1]\n',
        "tool 'x'",
        "parameters.p.enum: every item must be a string",
        id="enum-type",
    ),
    pytest.param(
        '[tools.x]\ndescription = "d"\nargv = ["no-such-program-here"]\n', "tool 'x'", "not found", id="program"
    ),
    pytest.param('[tools.x]\ndescription = "d"\nargv = ["true"]\ncwd = "relative"\n', "tool 'x'", "cwd", id="cwd"),
    pytest.param('[tools.x]\ndescription = "d"\nargv = ["true"]\ntimeout = 0\n', "tool 'x'", "timeout", id="timeout"),
    pytest.param('[tools."bad name"]\ndescription = "d"\nargv = ["true"]\n', "tool 'bad name'", "name:", id="name"),
    pytest.param("[tools.x\n", "not valid TOML", "line 1", id="toml-syntax"),
]


@pytest.mark.parametrize(("text", "where", "what"), FILE_ERRORS)
def test_a_mistake_in_the_tools_file_names_the_file_the_tool_and_the_field(
    tmp_path: Path, text: str, where: str, what: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, text)
    message = caught.value.message
    assert message.startswith(f"tools file {tmp_path / 'tools.toml'}: ")
    assert where in message
    assert what in message


def test_a_missing_tools_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"tools file .*nope\.toml: cannot be read"):
        load_commands(str(tmp_path / "nope.toml"), timeout=5, output_max_bytes=4096)
