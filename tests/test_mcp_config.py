"""The owner's MCP server file, the limits from the settings, and the idle cost of MCP support (none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest

from piagent import Settings
from piagent.exceptions import SettingsError
from piagent.mcp import McpLimits, McpServers, ServerConfig, load_servers, parse_servers
from piagent.mcp.client import render_result
from piagent.mcp.messages import CALL_TOOL_RESULT
from piagent.tools.base import ToolResult

EXAMPLE = """
[tools.other]          # tables outside [mcp] belong to others
x = 1

[mcp.servers.home]
command = ["python", "-m", "home_mcp"]
env = ["HOME_TOKEN"]
set_env = { URL = "http://127.0.0.1:8123" }
cwd = "/opt/home"
timeout = 20
max_output_bytes = 8192

[mcp.servers.weather]
url = "http://127.0.0.1:8765/mcp"
"""


def test_the_file_lists_stdio_and_http_servers() -> None:
    home, weather = parse_servers(EXAMPLE)
    assert home == ServerConfig(
        name="home",
        command=["python", "-m", "home_mcp"],
        env=["HOME_TOKEN"],
        set_env={"URL": "http://127.0.0.1:8123"},
        cwd="/opt/home",
        timeout=20,
        max_output_bytes=8192,
    )
    assert (home.transport, weather.transport, weather.url) == ("stdio", "http", "http://127.0.0.1:8765/mcp")


def test_a_stdio_servers_environment_is_the_base_its_allowed_names_and_its_own() -> None:
    (home, _) = parse_servers(EXAMPLE)
    environ = {"PATH": "/bin", "HOME": "/home/pi", "HOME_TOKEN": "t", "PIAGENT_API_KEYS": "k", "URL": "other"}
    assert home.child_env(environ) == {
        "PATH": "/bin",
        "HOME": "/home/pi",
        "HOME_TOKEN": "t",
        "URL": "http://127.0.0.1:8123",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("[mcp.servers.a]\n", "give either `command`", id="neither"),
        pytest.param('[mcp.servers.a]\ncommand = ["x"]\nurl = "http://h/mcp"\n', "not both", id="both"),
        pytest.param(
            '[mcp.servers.a]\ncommand = "x --y"\n', "Expected `array`, got `str` - at `$.command`", id="command-string"
        ),
        pytest.param('[mcp.servers.a]\ncommand = ["x", ""]\n', "`command` has an empty part", id="empty-part"),
        pytest.param('[mcp.servers.a]\nurl = "ftp://h"\n', "an http:// or https:// URL", id="url-scheme"),
        pytest.param('[mcp.servers.a]\nurl = "http://h"\nenv = ["X"]\n', "are for a `command`", id="env-on-url"),
        pytest.param('[mcp.servers.a_b]\ncommand = ["x"]\n', "1 to 24 letters, digits or '-'", id="underscore-in-name"),
        pytest.param('[mcp.servers.a]\ncommand = ["x"]\ntimeout = 0\n', "`timeout` is seconds", id="zero-timeout"),
        pytest.param(
            '[mcp.servers.a]\ncommand = ["x"]\nshell = true\n',
            "Object contains unknown field `shell`",
            id="unknown-key",
        ),
        pytest.param("[mcp]\nserver = 1\n", "[mcp]: Object contains unknown field `server`", id="unknown-table"),
        pytest.param("mcp = 3\n", "[mcp]: Expected `object`, got `int`", id="not-a-table"),
        pytest.param("[mcp.servers.a\n", "not valid TOML", id="bad-toml"),
    ],
)
def test_a_wrong_file_is_one_clear_line_naming_the_server(text: str, error: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_servers(text)
    assert error in caught.value.message
    assert caught.value.message.startswith("PIAGENT_MCP_FILE")
    assert "\n" not in caught.value.message


def test_a_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"PIAGENT_MCP_FILE='.*nope.toml': cannot be read: No such file"):
        load_servers(str(tmp_path / "nope.toml"))


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings.from_env(
        {"PIAGENT_MCP_TIMEOUT": "5", "PIAGENT_MCP_MAX_TOOLS": "3", "PIAGENT_MCP_RESTART_MAX": "0.5"}
    )
    limits = McpLimits.from_settings(settings)
    assert (limits.timeout, limits.max_tools, limits.restart_max, limits.restart_min) == (5, 3, 0.5, 0.5)
    assert McpLimits.from_settings(Settings()) == McpLimits()


@pytest.mark.anyio
async def test_the_servers_come_from_the_file_the_settings_name(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    async with httpx.AsyncClient(trust_env=False) as client:
        servers = McpServers.from_settings(Settings(mcp_file=str(path), mcp_timeout=7), client, {"HOME_TOKEN": "t"})
    assert [(status.name, status.transport, status.state) for status in servers.status()] == [
        ("home", "stdio", "idle"),
        ("weather", "http", "idle"),
    ]
    assert (servers.servers["home"].timeout, servers.servers["weather"].timeout) == (20, 7)


def test_piagent_without_an_mcp_file_never_imports_the_mcp_client(tmp_path: Path) -> None:
    # The whole app is built (agents read, the store chosen): still no MCP code in the process.
    (tmp_path / "general.md").write_text("You help.\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from piagent import Settings, create_app\n"
        f"create_app(Settings(prompts_dir={str(tmp_path)!r}))\n"
        "print(sorted(name for name in sys.modules if name.startswith('piagent.mcp')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("content", "structured", "text"),
    [
        pytest.param([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], None, "a\nb", id="texts-joined"),
        pytest.param(
            [{"type": "image", "data": "AAAA", "mimeType": "image/png"}],
            None,
            "[image content (image/png)]",
            id="image-named",
        ),
        pytest.param([{"type": "audio", "data": "AAAA"}], None, "[audio content]", id="audio-named"),
        pytest.param(
            [{"type": "resource", "resource": {"uri": "file:///a", "text": "inside"}}],
            None,
            "inside",
            id="resource-text",
        ),
        pytest.param(
            [{"type": "resource", "resource": {"uri": "file:///a", "blob": "AA"}}],
            None,
            "[resource file:///a]",
            id="resource-blob",
        ),
        pytest.param(
            [{"type": "resource_link", "uri": "file:///b", "name": "b"}], None, "[resource link file:///b]", id="link"
        ),
        pytest.param([], {"temperature": 48.5}, '{"temperature":48.5}', id="structured-only"),
        pytest.param([], None, "", id="nothing"),
    ],
)
def test_every_kind_of_content_becomes_text_for_the_model(
    content: list[dict[str, object]], structured: object, text: str
) -> None:
    raw = msgspec.json.encode({"content": content, "structuredContent": structured, "isError": False})
    assert render_result(CALL_TOOL_RESULT.decode(raw), 1000) == ToolResult(True, text)


def test_an_http_server_without_a_client_is_refused_when_it_is_built() -> None:
    with pytest.raises(ValueError, match="mcp server 'weather' is reached over HTTP: give it an httpx client"):
        McpServers(parse_servers(EXAMPLE), McpLimits(), None, {})
