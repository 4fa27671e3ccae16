"""The tool catalog: built-ins set up from the settings, command tools from the file, agents' names checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import piagent.tools
from piagent.exceptions import AgentDefinitionError, SettingsError
from piagent.settings import Settings
from piagent.tools import BUILTIN_TOOLS, ToolCatalog, ToolResult, call_tool, describe_tools, http_get_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(
        '[tools.uptime]\ndescription = "How long the machine has been up."\nargv = ["cat", "/proc/uptime"]\n'
        "timeout = 2\n"
    )
    return path


def test_the_package_exports_its_public_names_sorted() -> None:
    public = {name for name in vars(piagent.tools) if not name.startswith("_") and name != "annotations"}
    modules = {name for name in public if type(getattr(piagent.tools, name)).__name__ == "module"}
    assert set(piagent.tools.__all__) == public - modules
    assert piagent.tools.__all__ == sorted(piagent.tools.__all__)


async def test_an_agent_gets_exactly_the_tools_it_lists(tools_file: Path) -> None:
    catalog = ToolCatalog(Settings(tools_file=str(tools_file), tool_timeout=3))
    tools = catalog.for_agent("pi", ["calculator", "clock", "system_status", "uptime"])
    assert list(tools) == ["calculator", "clock", "system_status", "uptime"]
    assert catalog.names() == (*BUILTIN_TOOLS, "uptime")
    assert catalog.limits.timeout == 3
    assert await call_tool(tools, "calculator", '{"expression": "6 * 7"}', catalog.limits) == ToolResult(
        ok=True, text="42"
    )
    uptime = await call_tool(tools, "uptime", "{}", catalog.limits)
    assert uptime.ok
    assert float(uptime.text.split()[0]) > 0
    assert catalog.for_agent("other", ["calculator"])["calculator"] is tools["calculator"]


def test_an_unknown_tool_stops_start_up_naming_the_agent_and_what_exists() -> None:
    with pytest.raises(AgentDefinitionError) as caught:
        ToolCatalog(Settings()).for_agent("pi", ["calculator", "shell"])
    assert caught.value.message == (
        "agent 'pi': unknown tool 'shell'; available: calculator, clock, http_get, read_file, system_status"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(Settings(), "tool 'read_file': needs PIAGENT_READ_FILE_DIRS", id="read-file-without-folders"),
        pytest.param(
            Settings(read_file_dirs=("/no/such/folder",)),
            "tool 'read_file': PIAGENT_READ_FILE_DIRS is not allowed: '/no/such/folder' does not exist",
            id="read-file-missing-folder",
        ),
    ],
)
def test_a_built_in_that_is_not_set_up_stops_start_up(settings: Settings, message: str) -> None:
    with pytest.raises(AgentDefinitionError, match=message):
        ToolCatalog(settings).for_agent("pi", ["read_file"])


async def test_http_get_needs_prefixes_a_sound_prefix_and_a_client() -> None:
    with pytest.raises(AgentDefinitionError, match="needs PIAGENT_HTTP_GET_ALLOW"):
        ToolCatalog(Settings()).for_agent("pi", ["http_get"])
    bad = Settings(http_get_allow=("http://2130706433/",))
    with pytest.raises(AgentDefinitionError, match=r"PIAGENT_HTTP_GET_ALLOW is not allowed: .*not a canonical IP"):
        ToolCatalog(bad).for_agent("pi", ["http_get"])
    good = Settings(http_get_allow=("http://192.168.1.20/api/",))
    with pytest.raises(AgentDefinitionError, match="needs an HTTP client"):
        ToolCatalog(good).for_agent("pi", ["http_get"])
    async with http_get_client(good) as client:
        assert client.trust_env is False
        tool = ToolCatalog(good, http_client=client).for_agent("pi", ["http_get"])["http_get"]
        assert "http://192.168.1.20/api/" in tool.description
    with pytest.raises(AgentDefinitionError, match="trust_env=False"):
        ToolCatalog(good, http_client=httpx.AsyncClient()).for_agent("pi", ["http_get"])


def test_read_file_and_system_status_take_their_folders_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(read_file_dirs=(str(tmp_path),), system_status_disks=("/", str(tmp_path)))
    tools = ToolCatalog(settings).for_agent("pi", ["read_file", "system_status"])
    assert str(tmp_path.resolve()) in tools["read_file"].description


def test_a_command_tool_may_not_take_a_built_in_name(tmp_path: Path) -> None:
    path = tmp_path / "tools.toml"
    path.write_text('[tools.clock]\ndescription = "mine"\nargv = ["date"]\n')
    with pytest.raises(SettingsError, match=r"tools\.toml: tool 'clock': name: taken by a built-in tool"):
        ToolCatalog(Settings(tools_file=str(path)))


def test_describe_tools_says_what_each_tool_can_reach(tools_file: Path) -> None:
    rows = describe_tools(Settings(tools_file=str(tools_file), http_get_allow=("http://192.168.1.20/api/",)))
    described = {name: (kind, reach) for name, kind, reach in rows}
    assert described["http_get"] == ("built-in", "URLs under http://192.168.1.20/api/; public addresses only")
    assert described["read_file"] == ("built-in", "unusable: PIAGENT_READ_FILE_DIRS is empty")
    assert described["system_status"] == ("built-in", "/sys/class/thermal, /proc; disk space of /")
    assert described["uptime"] == ("command", "runs /usr/bin/cat /proc/uptime in / (no shell; 2 s)")
    assert [name for name, _, _ in rows] == [*BUILTIN_TOOLS, "uptime"]


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        pytest.param("PIAGENT_HTTP_GET_ALLOW", "192.168.1.20/api", "comma-separated URL prefixes", id="no-scheme"),
        pytest.param("PIAGENT_TOOL_TIMEOUT", "0", "a number of seconds from 0.01 to 3600", id="timeout"),
        pytest.param("PIAGENT_TOOL_OUTPUT_MAX_BYTES", "10", "an integer from 256 to", id="output-cap"),
        pytest.param("PIAGENT_HTTP_GET_MAX_REDIRECTS", "99", "an integer from 0 to 20", id="redirects"),
    ],
)
def test_a_wrong_tool_setting_names_the_key(tmp_path: Path, key: str, value: str, allowed: str) -> None:
    env = tmp_path / "empty.env"
    env.write_text("")
    with pytest.raises(SettingsError, match=f"{key}=.* is not allowed: expected {allowed}"):
        Settings.from_env({key: value}, env_file=str(env))


def test_tool_settings_are_read_as_lists(tmp_path: Path) -> None:
    env = tmp_path / "empty.env"
    env.write_text("")
    settings = Settings.from_env(
        {"PIAGENT_READ_FILE_DIRS": " /srv/notes , /home/pi/logs ", "PIAGENT_HTTP_GET_ALLOW": "http://a/x, https://b/"},
        env_file=str(env),
    )
    assert settings.read_file_dirs == ("/srv/notes", "/home/pi/logs")
    assert settings.http_get_allow == ("http://a/x", "https://b/")
    assert Settings.from_env({}, env_file=str(env)).system_status_disks == ("/",)


def test_a_built_in_is_imported_only_when_an_agent_lists_it() -> None:
    script = (
        "import json, sys; from piagent.settings import Settings; from piagent.tools import ToolCatalog; "
        "ToolCatalog(Settings()).for_agent('pi', ['calculator']); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('piagent.tools.'))))"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(found) == [
        "piagent.tools.base",
        "piagent.tools.calculator",
        "piagent.tools.registry",
        "piagent.tools.schema",
    ]
