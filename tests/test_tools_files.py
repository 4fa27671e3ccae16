"""`read_file`: text inside the owner's folders only; traversal, symlinks out, devices and fifos refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from piagent.tools import ToolLimits, ToolResult, run_tool
from piagent.tools.files import ReadFile, _open_inside, resolve_folders

pytestmark = pytest.mark.anyio

LIMITS = ToolLimits(timeout=5, output_max_bytes=1 << 20)


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    (folder / "garden").mkdir(parents=True)
    (folder / "todo.txt").write_text("water the tomatoes\n")
    (folder / "garden/beds.md").write_text("# Beds\nthree\n")
    (tmp_path / "secret.txt").write_text("the neighbour's wifi password\n")
    return folder


def reader(*folders: Path, max_bytes: int = 65536) -> ReadFile:
    return ReadFile(resolve_folders([str(folder) for folder in folders]), max_bytes)


async def read(tool: ReadFile, path: str) -> ToolResult:
    return await run_tool(tool, {"path": path}, LIMITS)


async def test_a_file_is_read_by_relative_and_by_absolute_path(allowed: Path) -> None:
    tool = reader(allowed)
    assert await read(tool, "todo.txt") == ToolResult(ok=True, text="water the tomatoes\n")
    assert await read(tool, "garden/beds.md") == ToolResult(ok=True, text="# Beds\nthree\n")
    assert await read(tool, str(allowed / "garden/beds.md")) == ToolResult(ok=True, text="# Beds\nthree\n")
    assert await read(tool, "garden/../todo.txt") == ToolResult(ok=True, text="water the tomatoes\n")


async def test_a_symlink_that_stays_inside_is_followed(allowed: Path) -> None:
    (allowed / "latest").symlink_to(allowed / "garden/beds.md")
    assert await read(reader(allowed), "latest") == ToolResult(ok=True, text="# Beds\nthree\n")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("../secret.txt", id="dot-dot"),
        pytest.param("garden/../../secret.txt", id="dot-dot-deeper"),
        pytest.param("/etc/passwd", id="absolute-outside"),
        pytest.param("link-to-passwd", id="symlink-to-etc-passwd"),
        pytest.param("link-to-etc/passwd", id="symlink-folder-escape"),
        pytest.param("link-to-parent/secret.txt", id="symlink-to-parent"),
        pytest.param("link-to-zero", id="symlink-to-dev-zero"),
        pytest.param("~/.bashrc", id="home"),
    ],
)
async def test_every_way_out_of_the_folder_is_refused(allowed: Path, path: str) -> None:
    (allowed / "link-to-passwd").symlink_to("/etc/passwd")
    (allowed / "link-to-etc").symlink_to("/etc")
    (allowed / "link-to-parent").symlink_to("..")
    (allowed / "link-to-zero").symlink_to("/dev/zero")
    result = await read(reader(allowed), path)
    assert not result.ok
    assert "outside the folders this tool may read" in result.text or "no such file" in result.text
    assert "root:" not in result.text
    assert "password" not in result.text


async def test_a_fifo_is_refused_without_blocking(allowed: Path) -> None:
    os.mkfifo(allowed / "pipe")
    started = time.monotonic()
    result = await read(reader(allowed), "pipe")
    assert time.monotonic() - started < 1
    assert result == ToolResult(ok=False, text="read_file: pipe is not a regular file")


async def test_a_device_inside_an_allowed_folder_is_refused() -> None:
    result = await read(reader(Path("/dev")), "zero")
    assert result == ToolResult(ok=False, text="read_file: zero is not a regular file")


async def test_a_folder_is_not_a_file(allowed: Path) -> None:
    assert await read(reader(allowed), "garden") == ToolResult(ok=False, text="read_file: garden is not a regular file")
    assert await read(reader(allowed), ".") == ToolResult(ok=False, text="read_file: . is a folder, not a file")


async def test_a_huge_file_is_cut_at_the_cap_with_the_rest_counted(allowed: Path) -> None:
    (allowed / "log.txt").write_bytes(b"a" * 999 + "é".encode() + b"b" * 1_000_000)
    result = await read(reader(allowed, max_bytes=1000), "log.txt")
    assert result.ok
    assert result.truncated
    assert result.text == "a" * 999 + "\n[truncated: 1000002 bytes more]"


async def test_a_binary_file_is_refused_and_bad_utf8_replaced(allowed: Path) -> None:
    (allowed / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    (allowed / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert await read(reader(allowed), "photo.jpg") == ToolResult(
        ok=False, text="read_file: photo.jpg is a binary file, not text"
    )
    assert await read(reader(allowed), "latin1.txt") == ToolResult(ok=True, text="caf\ufffd\n")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("missing.txt", "no such file: missing.txt", id="missing"),
        pytest.param("todo.txt\x00.png", "a path cannot contain NUL", id="nul"),
        pytest.param("", "$.path: must be at least 1 characters", id="empty"),
    ],
)
async def test_bad_paths_are_error_results(allowed: Path, path: str, message: str) -> None:
    result = await read(reader(allowed), path)
    assert not result.ok
    assert message in result.text


async def test_several_folders_are_allowed_by_absolute_path(allowed: Path, tmp_path: Path) -> None:
    other = tmp_path / "recipes"
    other.mkdir()
    (other / "bread.txt").write_text("flour, water, salt\n")
    tool = reader(allowed, other)
    assert await read(tool, str(other / "bread.txt")) == ToolResult(ok=True, text="flour, water, salt\n")
    assert str(other) in tool.description


def test_the_walk_from_the_folder_follows_no_symlink_swapped_in_after_the_check(allowed: Path) -> None:
    # What a race would leave: the check saw a folder, but a symlink out now sits in its place.
    (allowed / "swapped").symlink_to("/etc")
    with pytest.raises(OSError, match=r"Not a directory|Too many levels of symbolic links"):
        _open_inside(allowed, Path("swapped/passwd"))
    (allowed / "swapped-file").symlink_to("/etc/passwd")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        _open_inside(allowed, Path("swapped-file"))


def test_a_missing_folder_or_a_file_is_not_an_allowed_folder(allowed: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        resolve_folders([str(allowed / "nope")])
    with pytest.raises(ValueError, match="is not a folder"):
        resolve_folders([str(allowed / "todo.txt")])
