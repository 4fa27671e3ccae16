"""`GET /`: the built-in chat page as HTTP sees it (the browser tests are in test_chat_page_browser.py)."""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from piagent.http.page import ChatPage, content_security_policy, load_chat_page

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "piagent" / "static" / "index.html"


def test_the_page_is_served_as_html_with_a_strict_policy(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == PAGE.read_bytes()
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    for directive in ("script-src", "style-src"):
        assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", policy[directive]), directive
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "if_none_match",
    [
        pytest.param("{etag}", id="same-tag"),
        pytest.param('"old", {etag}', id="in-a-list"),
        pytest.param("W/{etag}", id="weak-form"),
        pytest.param("*", id="star"),
    ],
)
def test_an_unchanged_page_is_a_bodiless_304(client: httpx.Client, if_none_match: str) -> None:
    etag = client.get("/").headers["etag"]
    response = client.get("/", headers={"If-None-Match": if_none_match.format(etag=etag)})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag


def test_another_version_gets_the_whole_page(client: httpx.Client) -> None:
    response = client.get("/", headers={"If-None-Match": '"an-older-page"'})
    assert response.status_code == 200
    assert response.content == PAGE.read_bytes()


def test_the_etag_follows_the_content() -> None:
    assert ChatPage(b"<p>one</p>").etag != ChatPage(b"<p>two</p>").etag
    assert ChatPage(b"<p>one</p>").etag == ChatPage(b"<p>one</p>").etag


def test_the_policy_allows_each_inline_script_and_style_by_its_hash() -> None:
    def digest(content: bytes) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'"

    html = b'<style>p{}</style><script type="module">a()</script><script>b()</script>'
    policy = content_security_policy(html)
    assert f"script-src {digest(b'a()')} {digest(b'b()')};" in policy
    assert f"style-src {digest(b'p{}')};" in policy
    assert "script-src 'none'" in content_security_policy(b"<p>no script</p>")


def test_head_answers_without_a_body(client: httpx.Client) -> None:
    response = client.head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_the_setting_turns_the_page_off(serve: Any) -> None:
    with serve(chat_page=False) as url, httpx.Client(base_url=url) as http:
        response = http.get("/")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert http.get("/agents").status_code == 200


def test_the_page_is_small_and_self_contained() -> None:
    html = load_chat_page().body
    assert len(html) < 30 * 1024
    assert b"http://" not in html
    assert b"https://" not in html
    assert re.search(rb"<(script|link)[^>]*\s(src|href)=\"(?!data:)", html) is None
    # Model output must only ever reach the page as text.
    assert b"innerHTML" not in html
    assert b"insertAdjacentHTML" not in html
    assert b"document.write" not in html


def test_the_page_ships_as_package_data() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "piagent.static" in setuptools["packages"]
    assert any(Path("index.html").match(pattern) for pattern in setuptools["package-data"]["piagent.static"])
