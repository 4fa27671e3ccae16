"""CORS: off unless origins are configured, and never `*` (nor any origin) together with credentials."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import serve_in_thread

KEY = "alpha-0123456789-abcdefghij"
PAGE = "http://pi.local:8080"
PREFLIGHT = {"Origin": PAGE, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}


@contextmanager
def app_client(make_settings: MakeSettings, **overrides: Any) -> Iterator[httpx.Client]:
    with serve_in_thread(create_app(make_settings(**overrides))) as url, httpx.Client(base_url=url) as client:
        yield client


def cors_headers(headers: Any) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.startswith("access-control-")}


def test_without_configured_origins_no_cors_header_is_ever_sent(make_settings: MakeSettings) -> None:
    with app_client(make_settings) as client:
        assert cors_headers(client.get("/agents", headers={"Origin": PAGE}).headers) == {}
        preflight = client.options("/chat", headers=PREFLIGHT)
        assert preflight.status_code == 403  # another site's page: refused before routing
        assert preflight.json()["error"]["code"] == "forbidden"
        assert cors_headers(preflight.headers) == {}


def test_a_configured_origin_is_allowed_and_others_are_not(make_settings: MakeSettings) -> None:
    with app_client(make_settings, cors_origins=(PAGE,)) as client:
        preflight = client.options("/chat", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == PAGE
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        response = client.get("/agents", headers={"Origin": PAGE})
        assert response.headers["access-control-allow-origin"] == PAGE
        assert "x-conversation-id" in response.headers["access-control-expose-headers"].lower()
        elsewhere = client.get("/agents", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in elsewhere.headers
        refused = client.options("/chat", headers={**PREFLIGHT, "Origin": "http://evil.example"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert cors_headers(refused.headers) == {}


@pytest.mark.parametrize("origins", [pytest.param(("*",), id="any-origin"), pytest.param((PAGE,), id="one-origin")])
def test_credentials_are_never_allowed(make_settings: MakeSettings, origins: tuple[str, ...]) -> None:
    with app_client(make_settings, cors_origins=origins) as client:
        responses = [
            client.options("/chat", headers=PREFLIGHT),
            client.get("/agents", headers={"Origin": PAGE}),
            client.get("/agents", headers={"Origin": PAGE, "Cookie": "session=1"}),
        ]
    for response in responses:
        assert "access-control-allow-credentials" not in response.headers
        assert response.headers["access-control-allow-origin"] in ("*", PAGE)
    if origins == ("*",):
        assert responses[1].headers["access-control-allow-origin"] == "*"


def test_with_keys_a_preflight_needs_none_and_a_401_is_readable_by_the_page(make_settings: MakeSettings) -> None:
    with app_client(make_settings, cors_origins=(PAGE,), api_keys=(KEY,)) as client:
        preflight = client.options("/chat", headers=PREFLIGHT)
        assert preflight.status_code == 200
        refused = client.post("/chat", json={"message": "hi"}, headers={"Origin": PAGE})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == PAGE
        allowed = client.get("/agents", headers={"Origin": PAGE, "Authorization": f"Bearer {KEY}"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == PAGE


def test_a_refused_preflight_answers_in_the_routes_json_error_shape(make_settings: MakeSettings) -> None:
    with app_client(make_settings, cors_origins=(PAGE,)) as client:
        native = client.options("/chat", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-evil"})
        openai = client.options("/v1/chat/completions", headers={**PREFLIGHT, "Access-Control-Request-Method": "PUT"})
    assert native.status_code == 400
    assert native.headers["content-type"] == "application/json"
    assert native.json()["error"]["code"] == "cors_refused"
    assert "Disallowed CORS headers" in native.json()["error"]["message"]
    assert native.headers["access-control-allow-origin"] == PAGE  # so the page can read why
    assert openai.status_code == 400
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert "Disallowed CORS method" in openai.json()["error"]["message"]
