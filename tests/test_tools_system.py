"""`clock` and `system_status`: real readings from the kernel's files, laid out under a fake root in tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from piagent.tools import ToolLimits, ToolResult, run_tool
from piagent.tools.system import Clock, SystemStatus

pytestmark = pytest.mark.anyio

LIMITS = ToolLimits(timeout=5)
NOON = datetime(2026, 3, 29, 12, 0, 0, tzinfo=UTC)

MEMINFO = """MemTotal:        1000000 kB
MemFree:          100000 kB
MemAvailable:     250000 kB
SwapTotal:        102400 kB
SwapFree:          51200 kB
"""


def fake_root(tmp_path: Path) -> Path:
    """The files a Raspberry Pi 4 offers, with known values."""
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("48312\n")
    (zone / "type").write_text("cpu-thermal\n")
    (tmp_path / "sys/class/thermal/cooling_device0").mkdir()
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "loadavg").write_text("0.52 0.31 0.20 1/123 4567\n")
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "uptime").write_text("273906.25 1000000.00\n")
    return tmp_path


async def test_clock_tells_the_time_in_the_server_zone() -> None:
    result = await run_tool(Clock(now=lambda: NOON), {}, LIMITS)
    assert result == ToolResult(
        ok=True, text="Sunday 2026-03-29 12:00:00 UTC (UTC+00:00); ISO 2026-03-29T12:00:00+00:00"
    )


async def test_clock_converts_to_an_asked_zone_with_its_summer_time() -> None:
    result = await run_tool(Clock(now=lambda: NOON), '{"timezone": "Europe/Berlin"}', LIMITS)
    assert result.ok
    assert result.text.startswith("Sunday 2026-03-29 14:00:00 Europe/Berlin (UTC+02:00)")


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        pytest.param("Mars/Olympus", "unknown time zone 'Mars/Olympus'", id="unknown"),
        pytest.param("../../../etc/passwd", "must match the pattern", id="traversal"),
        pytest.param("/etc/localtime", "must match the pattern", id="absolute"),
        pytest.param("Europe/Berlin\n", "must match the pattern", id="trailing-newline"),
        pytest.param("A" * 65, "at most 64 characters", id="long"),
    ],
)
async def test_clock_refuses_a_zone_that_is_not_an_iana_name(zone: str, message: str) -> None:
    result = await run_tool(Clock(now=lambda: NOON), {"timezone": zone}, LIMITS)
    assert not result.ok
    assert message in result.text


async def test_system_status_reports_every_reading(tmp_path: Path) -> None:
    result = await run_tool(SystemStatus(disk_paths=[str(tmp_path)], root=fake_root(tmp_path)), {}, LIMITS)
    lines = result.text.splitlines()
    assert result.ok
    assert lines[0] == "cpu temperature: cpu-thermal: 48.3 °C"
    assert lines[1].startswith("load average: 0.52 0.31 0.20 (1, 5, 15 min; ")
    assert lines[2] == "memory: 244.1 MiB available of 976.6 MiB (75% used); swap 50.0 MiB used of 100.0 MiB"
    assert lines[3].startswith(f"disk {tmp_path}: ")
    assert "free of" in lines[3]
    assert lines[4] == "uptime: 3 days, 4:05:06"


async def test_system_status_says_unavailable_for_what_the_machine_lacks(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("garbage\n")
    (tmp_path / "proc/uptime").write_text("not-a-number")
    status = SystemStatus(disk_paths=[str(tmp_path / "missing")], root=tmp_path)
    result = await run_tool(status, {}, LIMITS)
    assert result.text.splitlines() == [
        "cpu temperature: unavailable",
        "load average: unavailable",
        "memory: unavailable",
        f"disk {tmp_path / 'missing'}: unavailable",
        "uptime: unavailable",
    ]


async def test_system_status_takes_no_arguments() -> None:
    result = await run_tool(SystemStatus(), '{"path": "/etc"}', LIMITS)
    assert not result.ok
    assert "$.path: is not a parameter of this tool" in result.text


async def test_system_status_reads_this_machine() -> None:
    result = await run_tool(SystemStatus(), {}, LIMITS)
    assert result.ok
    assert "memory: " in result.text
    assert "available of" in result.text
    assert "disk /: " in result.text
    assert "free of" in result.text
