"""What start-up built is moved out of the cyclic collector's way by piagent's server, never by the app alone."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import httpx
import pytest

from piagent import create_app
from piagent.server import build_server
from tests.conftest import MakeSettings
from tests.servers import serve_app


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the rest of the test session collects as before


@pytest.mark.usefixtures("unfrozen")
def test_piagents_server_freezes_what_start_up_built(make_settings: MakeSettings) -> None:
    app = create_app(make_settings())
    with serve_app(app, server_class=lambda config: build_server(config, 1.0)) as served:
        deadline = time.monotonic() + 5
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.get_freeze_count() > 10_000  # the modules, routes and agents: start-up's objects
        assert httpx.get(f"{served.url}/health").status_code == 200


@pytest.mark.usefixtures("unfrozen")
def test_a_host_server_running_the_app_keeps_its_collector_as_it_is(make_settings: MakeSettings) -> None:
    app = create_app(make_settings())
    with serve_app(app) as served:  # uvicorn's own server, as a host would run the app
        assert httpx.get(f"{served.url}/health").status_code == 200
        assert gc.get_freeze_count() == 0
