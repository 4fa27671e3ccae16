"""The machine's state for admission: available memory and SoC temperature, read from Linux's files, cached briefly.

A Pi that is out of memory or throttling should refuse a generation rather than start one it cannot finish:
the kernel's OOM killer picks the model server (the biggest process), and a throttled SoC generates at a
fraction of its speed while it heats further. So before a generation is admitted the chat service asks a
`Readings` for `MemAvailable` (`/proc/meminfo`: what can be had without swapping, page cache included) and
the temperature of thermal zone 0 (`/sys/class/thermal/thermal_zone0/temp`, in millidegrees: the SoC's
`cpu-thermal` on every Raspberry Pi; other zones, where a board has them, are other chips).

A reading is taken at most once a `ttl` (1 s), so admission costs a clock call per generation, never a file
read per request under load. A file that does not exist (not Linux, a container without /sys) turns its
check off, as a limit of 0 does (neither is then read); one that cannot be parsed counts as no reading,
never as a refusal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from piagent.exceptions import LowMemory, TooHot
from piagent.schemas import MachineHealth

MEMINFO = Path("/proc/meminfo")
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
# Retry-After of each refusal: memory frees when a generation ends (seconds); a hot SoC cools in tens of seconds.
LOW_MEMORY_RETRY_AFTER = 10
TOO_HOT_RETRY_AFTER = 30


def read_available_mb(path: Path) -> int | None:
    """`MemAvailable` of a meminfo file in MiB; None when the file or the line is missing or malformed."""
    try:
        with path.open("rb") as file:
            for line in file:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) // 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_temperature_c(path: Path) -> float | None:
    """A thermal zone's temperature in °C (the file holds millidegrees); None when missing or malformed."""
    try:
        return int(path.read_bytes().strip()) / 1000
    except (OSError, ValueError):
        return None


class Readings:
    """Admission by the machine's state: `admit()` raises LowMemory or TooHot; a limit of 0 turns its check off."""

    def __init__(
        self,
        min_available_mb: int,
        max_temperature_c: float,
        *,
        meminfo: Path = MEMINFO,
        thermal_zone: Path = THERMAL_ZONE,
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_available_mb = min_available_mb
        self.max_temperature_c = max_temperature_c
        # A check that is off, or whose file is not there at start-up, is never read.
        self._meminfo = meminfo if min_available_mb and meminfo.exists() else None
        self._thermal_zone = thermal_zone if max_temperature_c and thermal_zone.exists() else None
        self._ttl = ttl
        self._clock = clock
        self._taken = -float("inf")
        self._reading = MachineHealth()

    @property
    def enabled(self) -> bool:
        """Whether any check can refuse (its limit is set and its file exists)."""
        return self._meminfo is not None or self._thermal_zone is not None

    def read(self) -> MachineHealth:
        """The machine's state, read again only when the last reading is older than the ttl."""
        now = self._clock()
        if now - self._taken >= self._ttl:
            self._taken = now
            self._reading = MachineHealth(
                read_available_mb(self._meminfo) if self._meminfo is not None else None,
                read_temperature_c(self._thermal_zone) if self._thermal_zone is not None else None,
            )
        return self._reading

    def admit(self) -> None:
        """Raise LowMemory or TooHot when the machine is past a limit; return when a generation may start."""
        if not self.enabled:
            return
        reading = self.read()
        available, temperature = reading.available_mb, reading.temperature_c
        if self.min_available_mb and available is not None and available < self.min_available_mb:
            raise LowMemory(
                f"the machine is low on memory: {available} MiB available, under the "
                f"{self.min_available_mb} MiB PIAGENT_MIN_AVAILABLE_MB keeps free; retry later",
                LOW_MEMORY_RETRY_AFTER,
            )
        if self.max_temperature_c and temperature is not None and temperature > self.max_temperature_c:
            raise TooHot(
                f"the machine is too hot: {temperature:.1f} °C, over the {self.max_temperature_c:g} °C of "
                "PIAGENT_MAX_TEMPERATURE_C; retry once it has cooled",
                TOO_HOT_RETRY_AFTER,
            )
