"""Pi-aware admission: low memory or a hot SoC refuses a generation with 503 and Retry-After, in every door's shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent import create_app
from piagent.exceptions import LowMemory, TooHot
from piagent.hardware import Readings, read_available_mb, read_temperature_c
from piagent.schemas import MachineHealth
from tests.conftest import MakeSettings
from tests.servers import Served, serve_app

MEMINFO = "MemTotal:         512000 kB\nMemFree:           20000 kB\nMemAvailable:    {available} kB\n"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Machine:
    """Fake /proc/meminfo and thermal zone files the test writes."""

    def __init__(self, folder: Path) -> None:
        self.meminfo = folder / "meminfo"
        self.thermal_zone = folder / "temp"
        self.set(available_mb=300, temperature_c=50)

    def set(self, available_mb: int, temperature_c: float) -> None:
        self.meminfo.write_text(MEMINFO.format(available=available_mb * 1024))
        self.thermal_zone.write_text(f"{round(temperature_c * 1000)}\n")

    def readings(self, min_available_mb: int = 32, max_temperature_c: int = 80, **kwargs: Any) -> Readings:
        return Readings(
            min_available_mb, max_temperature_c, meminfo=self.meminfo, thermal_zone=self.thermal_zone, **kwargs
        )


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


def test_the_files_are_read_as_linux_writes_them(machine: Machine, tmp_path: Path) -> None:
    machine.set(available_mb=123, temperature_c=61.324)
    assert read_available_mb(machine.meminfo) == 123
    assert read_temperature_c(machine.thermal_zone) == 61.324
    assert read_available_mb(tmp_path / "absent") is None
    (tmp_path / "garbage").write_text("MemAvailable: lots\n")
    assert read_available_mb(tmp_path / "garbage") is None
    assert read_temperature_c(tmp_path / "garbage") is None
    (tmp_path / "short").write_text("MemTotal: 1 kB\n")
    assert read_available_mb(tmp_path / "short") is None


def test_a_reading_is_cached_for_its_ttl_then_read_again(machine: Machine) -> None:
    clock = Clock()
    readings = machine.readings(clock=clock)
    assert readings.read().available_mb == 300
    machine.set(available_mb=10, temperature_c=90)
    clock.now += 0.99
    assert readings.read().available_mb == 300  # within the ttl: no file read
    readings.admit()
    clock.now += 0.01
    assert readings.read().available_mb == 10
    assert readings.read().temperature_c == 90


@pytest.mark.parametrize(
    ("available_mb", "temperature_c", "refusal", "retry_after"),
    [
        pytest.param(31, 50, LowMemory, "10", id="low-memory"),
        pytest.param(300, 80.1, TooHot, "30", id="too-hot"),
        pytest.param(31, 90, LowMemory, "10", id="both-memory-first"),
    ],
)
def test_past_a_limit_admission_refuses_with_its_reason(
    machine: Machine, available_mb: int, temperature_c: float, refusal: type[Exception], retry_after: str
) -> None:
    machine.set(available_mb, temperature_c)
    with pytest.raises(refusal) as caught:
        machine.readings().admit()
    assert caught.value.headers == {"Retry-After": retry_after}  # type: ignore[attr-defined]


def test_at_the_limits_a_generation_is_admitted(machine: Machine) -> None:
    machine.set(available_mb=32, temperature_c=80)
    machine.readings().admit()


def test_a_limit_of_zero_or_a_missing_file_turns_its_check_off(machine: Machine, tmp_path: Path) -> None:
    machine.set(available_mb=1, temperature_c=120)
    machine.readings(min_available_mb=0, max_temperature_c=0).admit()
    assert not machine.readings(min_available_mb=0, max_temperature_c=0).enabled
    absent = Readings(32, 80, meminfo=tmp_path / "no-meminfo", thermal_zone=tmp_path / "no-zone")
    assert not absent.enabled
    absent.admit()
    assert absent.read().available_mb is None
    heat_only = machine.readings(min_available_mb=0)
    assert heat_only.read() == MachineHealth(available_mb=None, temperature_c=120)  # a check off is never read
    with pytest.raises(TooHot):
        heat_only.admit()


def test_an_unreadable_file_is_no_reading_never_a_refusal(machine: Machine) -> None:
    machine.meminfo.write_text("nonsense")
    machine.thermal_zone.write_text("")
    readings = machine.readings()
    assert readings.enabled
    readings.admit()


@pytest.fixture
def served_on(make_settings: MakeSettings, machine: Machine) -> Iterator[Served]:
    app = create_app(make_settings(), machine=machine.readings(ttl=0))
    with serve_app(app) as served:
        yield served


DOORS = [
    pytest.param("/chat", {"message": "hi"}, id="native"),
    pytest.param("/chat", {"message": "hi", "stream": True}, id="native-stream"),
    pytest.param(
        "/v1/chat/completions", {"model": "general", "messages": [{"role": "user", "content": "hi"}]}, id="openai"
    ),
    pytest.param(
        "/v1/chat/completions",
        {"model": "general", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        id="openai-stream",
    ),
    pytest.param("/api/chat", {"model": "general", "messages": [{"role": "user", "content": "hi"}]}, id="ollama"),
    pytest.param("/api/generate", {"model": "general", "prompt": "hi", "stream": False}, id="ollama-generate"),
]


@pytest.mark.parametrize(("path", "body"), DOORS)
def test_every_door_refuses_on_a_hot_or_full_machine_in_its_own_shape(
    served_on: Served, machine: Machine, fake_ollama: FakeModel, path: str, body: dict[str, Any]
) -> None:
    with httpx.Client(base_url=served_on.url, timeout=10) as client:
        for available_mb, temperature_c, code, retry_after in (
            (20, 50, "low_memory", "10"),
            (300, 85, "too_hot", "30"),
        ):
            machine.set(available_mb, temperature_c)
            response = client.post(path, json=body)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == retry_after
            error = response.json()["error"]
            if path.startswith("/api/"):  # Ollama's shape: the error is a string
                assert "the machine is" in error
            else:  # piagent's and OpenAI's: an object with the code
                assert error["code"] == code
                assert "the machine is" in error["message"]
        assert fake_ollama.chat_requests == []  # nothing reached the model server
        machine.set(300, 50)
        assert client.post(path, json=body).status_code == 200


def test_health_shows_the_readings_and_is_never_refused(served_on: Served, machine: Machine) -> None:
    machine.set(available_mb=20, temperature_c=91.5)
    with httpx.Client(base_url=served_on.url, timeout=10) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["machine"] == {"available_mb": 20, "temperature_c": 91.5}


def test_health_leaves_the_machine_out_where_neither_file_exists(make_settings: MakeSettings, tmp_path: Path) -> None:
    absent = Readings(32, 80, meminfo=tmp_path / "no-meminfo", thermal_zone=tmp_path / "no-zone")
    with serve_app(create_app(make_settings(), machine=absent)) as served:
        assert "machine" not in httpx.get(f"{served.url}/health").json()
