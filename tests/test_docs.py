"""README.md and docs/: every `curl` example runs verbatim against piagent served for real, every link resolves."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEY = "docs-example-key-0123456789"
# The address the examples are written for, and the conversation id they show as a placeholder.
EXAMPLE_ADDRESS = "localhost:8000"
EXAMPLE_ID = "vX3..."


def shell_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each ```sh block as (line number of its first line, its lines)."""
    lines = text.splitlines()
    start: int | None = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```sh":
            start = number + 1
        elif start is not None and line.strip() == "```":
            yield start, lines[start - 1 : number - 1]
            start = None


def shell_commands(block: list[str]) -> Iterator[tuple[int, str]]:
    """The block's commands as (offset of the first line, text), joining `\\` continuations and open quotes."""
    pending: list[str] = []
    first = 0
    for offset, line in enumerate(block):
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            first = offset
        pending.append(line)
        text = "\n".join(pending)
        if line.rstrip().endswith("\\"):
            continue
        try:
            shlex.split(text, comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        yield first, text
        pending = []
    assert not pending, f"a command never ends: {pending}"


def curl_examples() -> list[Any]:
    """Every `curl` command of the docs that talks to piagent, with an id naming its file and line."""
    found = []
    for path in DOCS:
        for start, block in shell_blocks(path.read_text(encoding="utf-8")):
            for offset, command in shell_commands(block):
                if command.startswith("curl ") and EXAMPLE_ADDRESS in command:
                    found.append(pytest.param(command, id=f"{path.relative_to(ROOT)}:{start + offset}"))
    return found


EXAMPLES = curl_examples()


def test_every_curl_example_of_the_docs_is_found() -> None:
    """The parser above misses none: as many examples as lines opening a `curl` to piagent in a sh block."""
    expected = 0
    for path in DOCS:
        for _, block in shell_blocks(path.read_text(encoding="utf-8")):
            expected += sum(1 for line in block if line.startswith("curl ") and EXAMPLE_ADDRESS in line)
    assert expected >= 10
    assert len(EXAMPLES) == expected


@pytest.fixture
def run_example(tmp_path: Path, serve: Callable[..., Any]) -> Iterator[Callable[[str], str]]:
    """Run one example through bash against piagent (the repository's agents, the fake Ollama); its output.

    A curlrc adds `--fail-with-body`, so an error status fails the example while its text stays as written.
    Examples with `$KEY` go to a piagent with API keys on, and `$KEY` is a key it accepts.
    """
    if shutil.which("curl") is None:
        pytest.fail("the docs' examples need curl (Debian's package `curl`)")
    (tmp_path / ".curlrc").write_text("fail-with-body\nshow-error\nmax-time = 20\n", encoding="utf-8")
    prompts = str(ROOT / "prompts")
    tools = str(ROOT / "prompts" / "tools.toml")  # as config.env says
    with (
        serve(prompts_dir=prompts, tools_file=tools) as open_url,
        serve(prompts_dir=prompts, tools_file=tools, api_keys=(KEY,)) as keyed_url,
    ):

        def run(command: str) -> str:
            url = keyed_url if "$KEY" in command else open_url
            headers = {"Authorization": f"Bearer {KEY}"}
            if EXAMPLE_ID in command:
                made = httpx.post(f"{url}/chat", json={"message": "Hi"}, headers=headers, timeout=10)
                command = command.replace(EXAMPLE_ID, made.json()["conversation_id"])
            command = command.replace(EXAMPLE_ADDRESS, url.removeprefix("http://"))
            env = {"PATH": "/usr/bin:/bin", "CURL_HOME": str(tmp_path), "KEY": KEY}
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, env=env, timeout=30, check=False
            )
            assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
            return done.stdout

        yield run


@pytest.mark.parametrize("command", EXAMPLES)
def test_a_curl_example_works_verbatim(run_example: Callable[[str], str], command: str) -> None:
    output = run_example(command)
    if "-X DELETE" not in command:
        assert output.strip(), command
    # A stream that failed after its status says so in-band, and curl still exits 0.
    assert '"error"' not in output, output


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a Markdown file's headings (lowercase, punctuation dropped, spaces as `-`)."""
    found = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_between_the_docs_resolves(path: Path) -> None:
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        assert resolved.exists(), f"{path.name}: {target} points at nothing"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved.read_text(encoding="utf-8")), f"{path.name}: no heading for {target}"
