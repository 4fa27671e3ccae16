"""Browser-borne requests: another site's page and a rebound Host name get 403; piagent's own page and curl do not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent.http.browsers import AllowedHosts, is_own_origin

OLLAMA_CHAT = {"model": "general", "messages": [{"role": "user", "content": "hi"}], "stream": False}


@pytest.mark.parametrize(
    ("host", "allowed_hosts", "allowed"),
    [
        pytest.param("127.0.0.1:8000", (), True, id="ipv4"),
        pytest.param("[::1]:8000", (), True, id="ipv6"),
        pytest.param("192.168.1.20", (), True, id="lan-address"),
        pytest.param("localhost:8000", (), True, id="localhost"),
        pytest.param("LocalHost.", (), True, id="localhost-case-and-dot"),
        pytest.param("app.localhost:8000", (), True, id="localhost-subdomain"),
        pytest.param("evil.example", (), False, id="rebound-name"),
        pytest.param("raspberrypi.local:8000", (), False, id="mdns-name-unlisted"),
        pytest.param("raspberrypi.local:8000", ("raspberrypi.local",), True, id="mdns-name-listed"),
        pytest.param("RaspberryPi.local.", ("raspberrypi.local",), True, id="listed-case-and-dot"),
        pytest.param("other.local", ("raspberrypi.local",), False, id="another-name"),
        pytest.param("pi.home.arpa", ("*.home.arpa",), True, id="wildcard-subdomain"),
        pytest.param("home.arpa", ("*.home.arpa",), False, id="wildcard-not-the-parent"),
        pytest.param("evilhome.arpa", ("*.home.arpa",), False, id="wildcard-needs-the-dot"),
        pytest.param("anything.example", ("*",), True, id="any"),
        pytest.param("127.0.0.1.evil.example", (), False, id="address-looking-name"),
        pytest.param("2130706433", (), False, id="integer-address"),
    ],
)
def test_allowed_hosts(host: str, allowed_hosts: tuple[str, ...], allowed: bool) -> None:
    assert AllowedHosts(allowed_hosts).allows(host) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "own"),
    [
        pytest.param("http://127.0.0.1:8000", "127.0.0.1:8000", True, id="same"),
        pytest.param("http://pi.local", "pi.local:80", True, id="default-port"),
        pytest.param("https://pi.local", "pi.local", True, id="behind-tls-proxy"),
        pytest.param("HTTP://PI.LOCAL:8000", "pi.local:8000", True, id="case"),
        pytest.param("http://[::1]:8000", "[::1]:8000", True, id="ipv6"),
        pytest.param("http://127.0.0.1:3000", "127.0.0.1:8000", False, id="other-port"),
        pytest.param("http://localhost:8000", "127.0.0.1:8000", False, id="other-name"),
        pytest.param("null", "127.0.0.1:8000", False, id="null"),
        pytest.param("http://pi.local", "", False, id="no-host"),
    ],
)
def test_own_origin(origin: str, host: str, own: bool) -> None:
    assert is_own_origin(origin, host) is own


def refused(response: httpx.Response) -> bool:
    return response.status_code == 403


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        pytest.param("/agents", lambda body: body["error"]["code"] == "forbidden", id="native"),
        pytest.param("/v1/models", lambda body: body["error"]["type"] == "permission_error", id="openai"),
        pytest.param("/api/tags", lambda body: isinstance(body["error"], str), id="ollama"),
        pytest.param("/health", lambda body: body["error"]["code"] == "forbidden", id="health"),
        pytest.param("/", lambda body: body["error"]["code"] == "forbidden", id="chat-page"),
    ],
)
def test_an_unlisted_host_name_is_403_in_the_doors_shape(client: httpx.Client, path: str, shape: Any) -> None:
    response = client.get(path, headers={"Host": "evil.example:8000"})
    assert refused(response)
    assert shape(response.json())
    assert "'evil.example:8000'" in response.text
    assert "PIAGENT_ALLOWED_HOSTS" in response.text
    assert client.get(path).status_code == 200


def test_a_listed_host_name_is_served(serve: Any) -> None:
    with serve(allowed_hosts=("raspberrypi.local",)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/agents", headers={"Host": "raspberrypi.local:8000"}).status_code == 200
        assert refused(client.get("/agents", headers={"Host": "other.local:8000"}))


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        pytest.param({}, True, id="no-browser-headers"),
        pytest.param({"Origin": "{own}"}, True, id="own-origin"),
        pytest.param({"Origin": "{own}", "Sec-Fetch-Site": "same-origin"}, True, id="own-page"),
        pytest.param({"Origin": "http://evil.example"}, False, id="another-site"),
        pytest.param({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, False, id="cross-site"),
        pytest.param({"Origin": "http://127.0.0.1:1"}, False, id="another-port"),
        pytest.param({"Origin": "null"}, False, id="null-origin"),
        pytest.param({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, False, id="no-cors-no-origin"),
        pytest.param({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"}, False, id="same-site"),
        pytest.param({"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}, True, id="typed-url"),
    ],
)
def test_a_chat_from_another_sites_page_is_refused_before_the_model(
    server: str, fake_ollama: FakeModel, headers: dict[str, str], allowed: bool
) -> None:
    headers = {name: value.format(own=server) for name, value in headers.items()}
    with httpx.Client(base_url=server) as client:
        response = client.post("/api/chat", json=OLLAMA_CHAT, headers=headers)
    if allowed:
        assert response.status_code == 200
        assert len(fake_ollama.chat_requests) == 1
    else:
        assert refused(response)
        assert "PIAGENT_CORS_ORIGINS" in response.json()["error"]
        assert fake_ollama.chat_requests == []


def test_a_link_from_another_site_still_opens_the_page(client: httpx.Client) -> None:
    navigation = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert client.get("/", headers=navigation).status_code == 200
    assert refused(client.post("/chat", json={"message": "hi"}, headers=navigation))


def test_a_listed_origin_is_served(serve: Any, fake_ollama: FakeModel) -> None:
    page = "http://pi.local:8080"
    with serve(cors_origins=(page,)) as url, httpx.Client(base_url=url) as client:
        response = client.post("/api/chat", json=OLLAMA_CHAT, headers={"Origin": page, "Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == page
        assert refused(client.post("/api/chat", json=OLLAMA_CHAT, headers={"Origin": "http://pi.local:9090"}))


def test_an_origin_in_the_error_is_clipped(client: httpx.Client) -> None:
    response = client.get("/agents", headers={"Origin": "http://" + "x" * 5000})
    assert refused(response)
    assert len(response.json()["error"]["message"]) < 200
