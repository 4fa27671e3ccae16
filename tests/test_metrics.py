"""`/metrics` (PIAGENT_METRICS=true): requests, generations, tokens, readings; off, nothing of it is imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from piagent.hardware import Readings
from piagent.http.auth import owner_id
from tests.conftest import MakeSettings
from tests.servers import serve_app

KEY = "alpha-0123456789-abcdefghij"
ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_generations_tokens_and_read_the_machine(
    make_settings: MakeSettings, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    (tmp_path / "meminfo").write_text("MemAvailable:    204800 kB\n")
    (tmp_path / "temp").write_text("55500\n")
    machine = Readings(32, 80, meminfo=tmp_path / "meminfo", thermal_zone=tmp_path / "temp")
    app = create_app(make_settings(metrics=True, api_keys=(KEY,)), machine=machine)
    auth = {"Authorization": f"Bearer {KEY}"}
    with serve_app(app) as served, httpx.Client(base_url=served.url, headers=auth, timeout=10) as client:
        assert httpx.get(f"{served.url}/metrics").status_code == 401  # behind the keys
        fake_ollama.script = Script(tokens=["Hello", "!"], prompt_eval_count=7)
        assert client.post("/chat", json={"message": "hi"}).status_code == 200
        with client.stream("POST", "/chat", json={"message": "hi", "stream": True, "agent": "pirate"}) as response:
            assert response.read() == b"Hello!"
        conversation = client.post("/chat", json={"message": "again"}).json()["conversation_id"]
        assert client.get(f"/conversations/{conversation}").status_code == 200
        assert client.get("/nowhere/at/all").status_code == 404
        scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    seen = samples(scrape.text)
    owner = owner_id(KEY)

    def value(name: str, **labels: str) -> float:
        return seen[(name, tuple(sorted(labels.items())))]

    assert value("piagent_requests_total", route="/chat", status="200") == 3
    assert value("piagent_requests_total", route="/conversations/{conversation_id}", status="200") == 1
    assert value("piagent_requests_total", route="unmatched", status="404") == 1
    assert value("piagent_requests_total", route="unmatched", status="401") == 1  # refused before routing
    assert value("piagent_reply_duration_seconds_count", agent="general") == 2
    assert value("piagent_reply_duration_seconds_count", agent="pirate") == 1
    assert value("piagent_time_to_first_token_seconds_count", agent="pirate") == 1  # streamed
    assert value("piagent_time_to_first_token_seconds_count", agent="general") == 2  # whole: told by the chat
    assert value("piagent_tokens_total", agent="general", owner=owner, direction="in") == 14
    assert value("piagent_tokens_total", agent="general", owner=owner, direction="out") == 4
    assert value("piagent_tokens_total", agent="pirate", owner=owner, direction="out") == 2
    assert value("piagent_generations_running") == 0
    assert value("piagent_generations_queued") == 0
    assert value("piagent_machine_available_megabytes") == 200
    assert value("piagent_machine_temperature_celsius") == 55.5
    assert KEY not in scrape.text


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_off_the_metrics_module_and_prometheus_client_are_never_imported(prompts_dir: Path) -> None:
    code = f"""
import sys
from starlette.testclient import TestClient
from piagent import create_app
from piagent.settings import Settings
app = create_app(Settings(prompts_dir={str(prompts_dir)!r}, min_available_mb=0, max_temperature_c=0))
with TestClient(app, base_url="http://127.0.0.1") as client:
    assert client.get("/health").status_code == 200
    print(client.get("/metrics").status_code)
print(sorted(name for name in sys.modules if "prometheus" in name or name.startswith("piagent.http.metrics")))
"""
    assert _run(code).split("\n")[:2] == ["404", "[]"]


def test_on_without_the_extra_start_up_says_what_to_install(prompts_dir: Path) -> None:
    code = f"""
import sys
sys.modules["prometheus_client"] = None  # as if the extra were not installed
from piagent import create_app
from piagent.exceptions import SettingsError
from piagent.settings import Settings
try:
    create_app(Settings(prompts_dir={str(prompts_dir)!r}, metrics=True))
except SettingsError as exc:
    print(exc.message)
"""
    assert "pip install 'piagent[metrics]'" in _run(code)
