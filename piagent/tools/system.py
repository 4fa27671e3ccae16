"""The `clock` and `system_status` tools: what time it is, and how the machine piagent runs on is doing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from piagent.tools.base import ToolError, ToolResult

# Kernel pseudo-files are a few hundred bytes; a cap keeps a strange mount from feeding us megabytes.
_MAX_PSEUDO_FILE_BYTES = 65536
# The thermal folder of a Pi has one or two zones; a cap keeps a machine with hundreds quick.
_MAX_THERMAL_ZONES = 16


class Clock:
    """Tells the date, time and time zone, since a model has no clock of its own."""

    name = "clock"
    description = "The current date, time, weekday and time zone; optionally in another IANA time zone."
    parameters: dict[str, Any] = {  # noqa: RUF012 - read-only, the same for every instance
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "An IANA time zone such as Europe/Berlin or America/New_York; default: the server's.",
                "maxLength": 64,
                # IANA names are letters, digits, '_', '+', '-' and '/' separated parts: no '.', so no '..'.
                "pattern": r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*",
            }
        },
        "additionalProperties": False,
    }

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        # Injected in tests; an aware datetime in the server's own zone otherwise.
        self._now = now or (lambda: datetime.now().astimezone())

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The time, in the asked zone or the server's."""
        now = self._now()
        zone_name = arguments.get("timezone")
        if zone_name:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                now = now.astimezone(ZoneInfo(zone_name))
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ToolError(f"unknown time zone {zone_name!r}") from exc
        label = zone_name or now.tzname() or "local"
        offset = now.strftime("%z")
        text = f"{now.strftime('%A %Y-%m-%d %H:%M:%S')} {label} (UTC{offset[:3]}:{offset[3:]}); ISO {now.isoformat()}"
        return ToolResult(ok=True, text=text)


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            return file.read(_MAX_PSEUDO_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # not reached; keeps mypy sure of a return


def read_temperatures(root: Path) -> list[str]:
    """Each thermal zone as `name: 48.3 °C`, from `sys/class/thermal` under `root`."""
    folder = root / "sys/class/thermal"
    try:
        zones = sorted(path for path in folder.iterdir() if path.name.startswith("thermal_zone"))
    except OSError:
        return []
    lines = []
    for zone in zones[:_MAX_THERMAL_ZONES]:
        raw = _read(zone / "temp")
        try:
            celsius = int((raw or "").strip()) / 1000
        except ValueError:
            continue
        kind = (_read(zone / "type") or zone.name).strip()
        lines.append(f"{kind}: {celsius:.1f} °C")
    return lines


def read_load(root: Path) -> str | None:
    """The 1, 5 and 15 minute load averages, from `proc/loadavg` under `root`."""
    parts = (_read(root / "proc/loadavg") or "").split()
    if len(parts) < 3:
        return None
    return f"{parts[0]} {parts[1]} {parts[2]} (1, 5, 15 min; {os.cpu_count() or '?'} CPUs)"


def read_memory(root: Path) -> str | None:
    """Available and total memory (and swap in use), from `proc/meminfo` under `root`."""
    fields: dict[str, int] = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name] = int(value[0]) * 1024
    total, available = fields.get("MemTotal"), fields.get("MemAvailable")
    if not total or available is None:
        return None
    text = f"{_size(available)} available of {_size(total)} ({100 * (total - available) / total:.0f}% used)"
    swap_total, swap_free = fields.get("SwapTotal", 0), fields.get("SwapFree", 0)
    if swap_total:
        text += f"; swap {_size(swap_total - swap_free)} used of {_size(swap_total)}"
    return text


def read_disk(path: str) -> str | None:
    """Free and total space of the filesystem holding `path`."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    total, free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    if not total:
        return None
    used = total - stat.f_bfree * stat.f_frsize
    return f"{_size(free)} free of {_size(total)} ({100 * used / total:.0f}% used)"


def read_uptime(root: Path) -> str | None:
    """Time since boot, from `proc/uptime` under `root`."""
    parts = (_read(root / "proc/uptime") or "").split()
    try:
        seconds = float(parts[0])
    except (IndexError, ValueError):
        return None
    return str(timedelta(seconds=int(seconds)))


class SystemStatus:
    """Reports CPU temperature, load, memory, disk and uptime: what a Pi owner asks first."""

    name = "system_status"
    description = "The machine's CPU temperature, load average, memory, disk space and uptime."
    parameters: dict[str, Any] = {  # noqa: RUF012 - read-only, the same for every instance
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }

    def __init__(self, disk_paths: Sequence[str] = ("/",), root: Path = Path("/")) -> None:
        # `root` is where /sys and /proc are looked for, so tests can lay out fake kernel files.
        self._disk_paths = tuple(disk_paths)
        self._root = root

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """One line per reading; a reading the machine does not offer says `unavailable`."""
        temperatures = read_temperatures(self._root)
        lines = [f"cpu temperature: {'; '.join(temperatures) if temperatures else 'unavailable'}"]
        lines.append(f"load average: {read_load(self._root) or 'unavailable'}")
        lines.append(f"memory: {read_memory(self._root) or 'unavailable'}")
        lines.extend(f"disk {path}: {read_disk(path) or 'unavailable'}" for path in self._disk_paths)
        lines.append(f"uptime: {read_uptime(self._root) or 'unavailable'}")
        return ToolResult(ok=True, text="\n".join(lines))
