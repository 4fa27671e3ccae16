"""The `read_file` tool: text files inside the folders the owner names, and nothing outside them.

A path is resolved (symlinks followed) and must land inside an allowed folder; then the file is opened one
path component at a time from the folder's own descriptor with `O_NOFOLLOW`, so a symlink or folder swapped
in after the check fails instead of leading outside. Only regular files are read (checked before opening,
so a device or a fifo is never opened, and again with `fstat` on what was opened), at most a byte cap of
them, and a file with NUL bytes counts as binary and is refused.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from piagent.tools.base import ToolError, ToolResult

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR_FLAGS = _OPEN_FLAGS | os.O_DIRECTORY


def resolve_folders(folders: Sequence[str]) -> tuple[Path, ...]:
    """Each folder as an absolute, symlink-free path; `ValueError` names one that is missing or not a folder."""
    resolved = []
    for folder in folders:
        try:
            path = Path(folder).expanduser().resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"{folder!r} does not exist") from exc
        if not path.is_dir():
            raise ValueError(f"{folder!r} is not a folder")
        resolved.append(path)
    return tuple(resolved)


def _open_inside(folder: Path, relative: Path) -> int:
    """A descriptor for `folder/relative`, walking from the folder with no symlink followed on the way."""
    fd = os.open(folder, _DIR_FLAGS)
    try:
        for index, part in enumerate(relative.parts):
            last = index == len(relative.parts) - 1
            next_fd = os.open(part, _OPEN_FLAGS if last else _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_capped(fd: int, max_bytes: int) -> tuple[bytes, int]:
    """Up to `max_bytes` of the file, and its whole size: 0 if that was all, -1 if more follows of unknown size."""
    chunks: list[bytes] = []
    have = 0
    while have < max_bytes:
        chunk = os.read(fd, min(65536, max_bytes - have))
        if not chunk:
            return b"".join(chunks), 0
        chunks.append(chunk)
        have += len(chunk)
    size = os.fstat(fd).st_size
    if size > have:
        return b"".join(chunks), size
    # A size of 0 is what /proc-like files report: one more read tells whether anything follows.
    return b"".join(chunks), -1 if os.read(fd, 1) else 0


def _text(data: bytes, size: int) -> tuple[str, bool]:
    """The bytes as text; when the file goes on, without a character cut in half and with a marker."""
    if not size:
        return data.decode("utf-8", "replace"), False
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final=False)
    shown = len(data) - len(decoder.getstate()[0])
    marker = f"[truncated: {size - shown} bytes more]" if size > 0 else f"[truncated after {shown} bytes]"
    return f"{text}\n{marker}", True


class ReadFile:
    """Reads a text file from the owner's allowed folders."""

    name = "read_file"

    def __init__(self, folders: Sequence[Path], max_bytes: int = 65536) -> None:
        if not folders:
            raise ValueError("read_file needs at least one folder")
        self._folders = tuple(folders)
        self._max_bytes = max_bytes
        shown = ", ".join(str(folder) for folder in self._folders)
        self.description = (
            f"Read a UTF-8 text file (at most {max_bytes} bytes) from these folders: {shown}. "
            f"A relative path is taken from {self._folders[0]}."
        )
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "The file's path."}
            },
            "required": ["path"],
            "additionalProperties": False,
        }

    def _locate(self, asked: str) -> tuple[Path, Path]:
        """The allowed folder holding the asked file and the file's path relative to it."""
        if "\x00" in asked:
            raise ToolError("a path cannot contain NUL")
        candidate = Path(asked).expanduser() if asked.startswith("~") else Path(asked)
        if not candidate.is_absolute():
            candidate = self._folders[0] / candidate
        try:
            resolved = candidate.resolve(strict=True)
        except FileNotFoundError as exc:
            raise ToolError(f"no such file: {asked}") from exc
        except (OSError, RuntimeError) as exc:
            raise ToolError(f"cannot read {asked}: {getattr(exc, 'strerror', None) or 'bad path'}") from exc
        for folder in self._folders:
            if resolved.is_relative_to(folder):
                return folder, resolved.relative_to(folder)
        raise ToolError(f"{asked} is outside the folders this tool may read")

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The file's text, cut at the byte cap with a marker."""
        asked = str(arguments["path"])
        folder, relative = self._locate(asked)
        if not relative.parts:
            raise ToolError(f"{asked} is a folder, not a file")
        try:
            # lstat first: a device or a fifo is refused without being opened (opening one can have effects).
            if not stat.S_ISREG(os.lstat(folder / relative).st_mode):
                raise ToolError(f"{asked} is not a regular file")
            fd = _open_inside(folder, relative)
        except OSError as exc:
            raise ToolError(f"cannot read {asked}: {exc.strerror or 'refused'}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ToolError(f"{asked} is not a regular file")
            data, size = _read_capped(fd, self._max_bytes)
        except OSError as exc:
            raise ToolError(f"cannot read {asked}: {exc.strerror or 'refused'}") from exc
        finally:
            os.close(fd)
        if b"\x00" in data:
            raise ToolError(f"{asked} is a binary file, not text")
        text, truncated = _text(data, size)
        return ToolResult(ok=True, text=text, truncated=truncated)
