"""`piagent check` reaches each MCP server of PIAGENT_MCP_FILE and lists its tools, or names what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.fakemodel import FakeModel
from tests.conftest import MakeSettings
from tests.mcp_harness import TESTS
from tests.test_check import run_check


def test_each_mcp_server_is_started_and_its_tools_listed_or_its_failure_named(
    make_settings: MakeSettings, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    mcp_file = tmp_path / "mcp.toml"
    mcp_file.write_text(
        f'[mcp.servers.good]\ncommand = ["{sys.executable}", "{TESTS / "mcp_fake.py"}", "pages"]\n\n'
        '[mcp.servers.gone]\ncommand = ["no-such-mcp-server"]\n',
        encoding="utf-8",
    )
    code, report, problems = run_check(make_settings(mcp_file=str(mcp_file)))
    assert code == 1
    lines = report.splitlines()
    start = lines.index(f"MCP servers ({mcp_file}):")
    assert lines[start + 1 : start + 3] == [
        "  good (stdio): 8 tools: " + ", ".join(f"good__t{n}" for n in range(8)),
        "  gone (stdio): not working",
    ]
    assert problems == [
        "mcp server 'gone': could not start 'no-such-mcp-server': No such file or directory: "
        "fix its `command` or `url` in PIAGENT_MCP_FILE (run the command by hand to see its own error)"
    ]


def test_a_wrong_mcp_file_is_a_problem_with_its_fix(
    make_settings: MakeSettings, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    mcp_file = tmp_path / "mcp.toml"
    mcp_file.write_text('[mcp.servers.a]\nurl = "ftp://x"\n', encoding="utf-8")
    code, _, problems = run_check(make_settings(mcp_file=str(mcp_file)))
    assert code == 1
    assert problems == [
        f"PIAGENT_MCP_FILE={str(mcp_file)!r}: [mcp.servers.a]: `url` must be an http:// or https:// URL: "
        "fix the file, or leave PIAGENT_MCP_FILE empty"
    ]
