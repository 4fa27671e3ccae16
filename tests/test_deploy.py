"""deploy/piagent.service: systemd accepts it, and it keeps the promises docs/pi.md makes about it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from piagent.server import SPARE_DESCRIPTORS
from piagent.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "piagent.service"
EXEC = "/opt/piagent/.venv/bin/piagent"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def megabytes(size: str) -> float:
    units = {"K": 1 / 1024, "M": 1, "G": 1024}
    return float(size[:-1]) * units[size[-1]] if size[-1] in units else float(size) / 2**20


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]


def test_it_runs_piagent_as_its_own_user_with_the_env_file(service: dict[str, list[str]]) -> None:
    assert service["User"] == ["piagent"]
    assert service["Group"] == ["piagent"]
    assert service["ExecStart"] == [f"{EXEC} serve"]
    assert service["EnvironmentFile"] == ["/etc/piagent/piagent.env"]
    assert service["WorkingDirectory"] == ["/var/lib/piagent"]
    assert service["StateDirectory"] == ["piagent"]


def test_it_tells_systemd_when_it_is_ready_and_has_a_watchdog(service: dict[str, list[str]]) -> None:
    assert service["Type"] == ["notify"]
    (watchdog,) = service["WatchdogSec"]
    # piagent pings every half of it from its event loop; long enough for a busy Pi, short enough to matter.
    assert 10 <= int(watchdog) <= 120


def test_it_restarts_on_failure_within_a_memory_limit_fit_for_a_pi(service: dict[str, list[str]]) -> None:
    assert service["Restart"] == ["on-failure"]
    (limit,) = service["MemoryMax"]
    # Above what piagent uses (about 40 MB idle), far below a 512 MB Pi Zero 2's RAM.
    assert 96 <= megabytes(limit) <= 256
    assert megabytes(service["MemoryHigh"][0]) < megabytes(limit)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("NoNewPrivileges", "yes", id="no-new-privileges"),
        pytest.param("ProtectSystem", "strict", id="read-only-system"),
        pytest.param("ProtectHome", "yes", id="no-home"),
        pytest.param("PrivateTmp", "yes", id="private-tmp"),
        pytest.param("PrivateDevices", "yes", id="no-devices"),
        pytest.param("CapabilityBoundingSet", "", id="no-capabilities"),
        pytest.param("RestrictSUIDSGID", "yes", id="no-setuid"),
    ],
)
def test_it_is_hardened(service: dict[str, list[str]], key: str, value: str) -> None:
    assert service[key] == [value]


def test_its_open_file_limit_fits_the_connection_cap_the_upstream_pool_and_spares(
    service: dict[str, list[str]],
) -> None:
    (limit,) = service["LimitNOFILE"]
    defaults = Settings()
    assert int(limit) >= defaults.max_open_connections + defaults.max_connections + SPARE_DESCRIPTORS


def test_it_is_enabled_for_boot() -> None:
    assert parse_unit(UNIT.read_text(encoding="utf-8"))["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # the key checks above still ran; systemd (and so this) exists on Debian and on a Pi
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart exists; everything else is checked as written.
    copy = tmp_path / "piagent.service"
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(EXEC, "/bin/true"), encoding="utf-8")
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # It does find a real mistake: the check is not empty.
    copy.write_text(copy.read_text(encoding="utf-8").replace("ProtectSystem=", "ProtectSytem="), encoding="utf-8")
    broken = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'ProtectSytem'" in broken.stderr
