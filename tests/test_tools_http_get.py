"""`http_get` against a real loopback server: prefixes, address rules, redirects and caps, each escape refused
before any connection is made."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest

from piagent.tools import ToolLimits, ToolResult, run_tool
from piagent.tools.addresses import address_problem, parse_prefix
from piagent.tools.http_get import HttpGet, new_client, resolve_host
from tests.web_server import LoopbackOnly, WebServer

pytestmark = pytest.mark.anyio

LIMITS = ToolLimits(timeout=10, output_max_bytes=1 << 20)


@pytest.fixture
def web() -> Iterator[WebServer]:
    with WebServer() as server:
        yield server


@pytest.fixture
async def client(web: WebServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, transport=LoopbackOnly(web.port)) as http:
        yield http


class Resolver:
    """A DNS stand-in: names the test decides, and a count of every lookup."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(-2, "Name or service not known")
        return self.answers[host]


def tool(client: httpx.AsyncClient, *prefixes: str, resolve: Any = None, **options: Any) -> HttpGet:
    extra = {"resolve": resolve} if resolve is not None else {}
    return HttpGet(client, [parse_prefix(prefix) for prefix in prefixes], **options, **extra)


async def get(http_get: HttpGet, url: str, limits: ToolLimits = LIMITS) -> ToolResult:
    return await run_tool(http_get, {"url": url}, limits)


async def test_text_under_an_allowed_prefix_is_fetched(web: WebServer, client: httpx.AsyncClient) -> None:
    http_get = tool(client, f"{web.origin}/api/", allow_private=True)
    result = await get(http_get, f"{web.origin}/api/sensors?room=kitchen")
    assert result == ToolResult(
        ok=True,
        text=f"HTTP 200 OK, text/plain; charset=utf-8, from {web.origin}/api/sensors?room=kitchen\n\n"
        "hello from /api/sensors",
    )
    assert (await get(http_get, f"{web.origin}/api/json")).text.endswith('\n\n{"temperature": 21.5}')
    assert (await get(http_get, f"{web.origin}/api/latin1")).text.endswith("\n\ncafé")


async def test_loopback_is_refused_unless_private_addresses_are_allowed(
    web: WebServer, client: httpx.AsyncClient
) -> None:
    result = await get(tool(client, f"{web.origin}/"), f"{web.origin}/status")
    assert result == ToolResult(
        ok=False, text=f"http_get: refused {web.origin}/status: 127.0.0.1 is a loopback address"
    )
    assert web.connections == 0


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        pytest.param("/api", True, id="the-prefix-itself"),
        pytest.param("/api/v1/x", True, id="below"),
        pytest.param("/api?x=1", True, id="query"),
        pytest.param("/apix", False, id="not-a-segment-boundary"),
        pytest.param("/ap", False, id="shorter"),
        pytest.param("/api/../admin", False, id="dot-dot-normalized-out"),
        pytest.param("/api/%2e%2e/admin", False, id="encoded-dot-dot"),
        pytest.param("/api/%2E%2e%2fadmin", False, id="encoded-dot-dot-slash"),
        pytest.param("/api%2f..%2fadmin", False, id="encoded-slash"),
        pytest.param("/API", False, id="case"),
    ],
)
async def test_a_prefix_matches_on_whole_path_segments(
    web: WebServer, client: httpx.AsyncClient, path: str, allowed: bool
) -> None:
    result = await get(tool(client, f"{web.origin}/api", allow_private=True), web.origin + path)
    assert result.ok is allowed, result.text
    assert web.connections == (1 if allowed else 0)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:{port}x/api", id="other-port-text"),
        pytest.param("http://127.0.0.1:1/api/", id="other-port"),
        pytest.param("https://127.0.0.1:{port}/api/", id="other-scheme"),
        pytest.param("http://127.0.0.2:{port}/api/", id="other-host"),
        pytest.param("http://localhost:{port}/api/", id="same-address-other-name"),
        pytest.param("http://user:pw@127.0.0.1:{port}/api/", id="userinfo"),
        pytest.param("http://127.0.0.1:{port}@evil.test/api/", id="userinfo-trick"),
        pytest.param("http://127.0.0.1.evil.test:{port}/api/", id="suffix-host"),
        pytest.param("ftp://127.0.0.1:{port}/api/", id="ftp"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("http://127.0.0.1:{port}\\@evil.test/api/", id="backslash"),
        pytest.param("http://127.0.0.1:{port}/api/\nHost: evil", id="header-injection"),
        pytest.param("//127.0.0.1:{port}/api/", id="scheme-relative"),
    ],
)
async def test_a_url_outside_the_prefixes_is_refused_before_connecting(
    web: WebServer, client: httpx.AsyncClient, url: str
) -> None:
    result = await get(tool(client, f"{web.origin}/api/", allow_private=True), url.format(port=web.port))
    assert not result.ok
    assert result.text.startswith("http_get: refused ")
    assert web.connections == 0


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        pytest.param("127.0.0.1", "a loopback address", id="loopback"),
        pytest.param("127.3.4.5", "a loopback address", id="loopback-range"),
        pytest.param("169.254.169.254", "a link-local address", id="cloud-metadata"),
        pytest.param("10.1.2.3", "a private address", id="ten"),
        pytest.param("192.168.1.1", "a private address", id="home-router"),
        pytest.param("172.16.0.1", "a private address", id="172-16"),
        pytest.param("100.64.0.1", "a private address", id="carrier-grade-nat"),
        pytest.param("0.0.0.0", "the unspecified address", id="unspecified"),
        pytest.param("224.0.0.1", "a multicast address", id="multicast"),
        pytest.param("255.255.255.255", "a reserved address", id="broadcast"),
        pytest.param("[::1]", "a loopback address", id="ipv6-loopback"),
        pytest.param("[::]", "the unspecified address", id="ipv6-unspecified"),
        pytest.param("[fe80::1]", "a link-local address", id="ipv6-link-local"),
        pytest.param("[fd00::1]", "a private address", id="ipv6-unique-local"),
        pytest.param("[::ffff:127.0.0.1]", "a loopback address", id="ipv4-mapped-loopback"),
        pytest.param("[::ffff:169.254.169.254]", "a link-local address", id="ipv4-mapped-metadata"),
        pytest.param("[64:ff9b::a00:1]", "a private address", id="nat64-private"),
        pytest.param("[2002:7f00:1::]", "a loopback address", id="6to4-loopback"),
        pytest.param("[ff02::1]", "a multicast address", id="ipv6-multicast"),
    ],
)
async def test_an_address_that_is_not_public_is_refused_before_connecting(
    client: httpx.AsyncClient, host: str, reason: str
) -> None:
    url = f"http://{host}/x"
    result = await get(tool(client, url), url)
    assert not result.ok
    assert result.text.endswith(f"is {reason}")


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("2130706433", id="decimal"),
        pytest.param("0x7f.1", id="hex"),
        pytest.param("0x7f000001", id="hex-whole"),
        pytest.param("017700000001", id="octal"),
        pytest.param("127.1", id="short"),
        pytest.param("0", id="zero"),
        pytest.param("0177.0.0.1", id="octal-dotted"),
    ],
)
async def test_numeric_shortcuts_for_an_address_are_refused_in_urls_and_in_prefixes(
    web: WebServer, client: httpx.AsyncClient, host: str
) -> None:
    result = await get(tool(client, f"{web.origin}/", allow_private=True), f"http://{host}:{web.port}/")
    assert not result.ok
    assert result.text.startswith("http_get: refused ")
    with pytest.raises(ValueError, match=r"not a canonical IP address|Invalid IPv4 address"):
        parse_prefix(f"http://{host}/")
    assert web.connections == 0


async def test_a_name_is_judged_by_every_address_it_resolves_to(web: WebServer, client: httpx.AsyncClient) -> None:
    resolver = Resolver({"nas.test": ["10.0.0.5"], "mixed.test": ["8.8.8.8", "10.0.0.5"], "metadata.test": ["fe80::1"]})
    http_get = tool(client, "http://nas.test/", "http://mixed.test/", "http://metadata.test/", resolve=resolver)
    assert (await get(http_get, "http://nas.test/")).text.endswith("nas.test is a private address")
    assert (await get(http_get, "http://mixed.test/")).text.endswith("mixed.test is a private address")
    assert (await get(http_get, "http://metadata.test/")).text.endswith("metadata.test is a link-local address")
    assert (await get(http_get, "http://nas.test.:80/x")).text.endswith("nas.test is a private address")
    assert web.connections == 0


async def test_a_name_that_does_not_resolve_is_an_error_result(client: httpx.AsyncClient) -> None:
    http_get = tool(client, "http://gone.test/", resolve=Resolver({}))
    result = await get(http_get, "http://gone.test/")
    assert result == ToolResult(ok=False, text="http_get: cannot resolve gone.test: Name or service not known")


async def test_the_checked_address_is_the_one_connected_to_with_the_name_kept(
    web: WebServer, client: httpx.AsyncClient
) -> None:
    # A second lookup (DNS rebinding) would fail here: only the first, checked answer is ever used.
    resolver = Resolver({"pi.test": ["8.8.8.8"]})
    http_get = tool(client, f"http://pi.test:{web.port}/", resolve=resolver)
    result = await get(http_get, f"http://pi.test:{web.port}/host")
    assert result.text.endswith(f"\n\npi.test:{web.port}")
    assert resolver.lookups == ["pi.test"]
    assert web.connections == 1


async def test_redirects_are_followed_inside_the_prefixes_and_checked_at_each_hop(
    web: WebServer, client: httpx.AsyncClient
) -> None:
    resolver = Resolver({"public.test": ["8.8.8.8"], "inside.test": ["10.0.0.7"]})
    base = f"http://public.test:{web.port}"
    http_get = tool(client, f"{base}/api/", f"http://inside.test:{web.port}/", resolve=resolver, max_redirects=2)
    followed = await get(http_get, f"{base}/api/redirect?to=/api/final")
    assert followed.ok
    assert followed.text.endswith("hello from /api/final")
    assert [path for path, _ in web.requests] == ["/api/redirect", "/api/final"]

    out_of_prefix = await get(http_get, f"{base}/api/redirect?to=/admin")
    assert out_of_prefix.text == f"http_get: refused {base}/admin: not under an allowed prefix"
    to_private = await get(http_get, f"{base}/api/redirect?to=http://inside.test:{web.port}/")
    assert to_private.text.endswith("inside.test is a private address")
    to_metadata = await get(http_get, f"{base}/api/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert to_metadata.text.endswith("not under an allowed prefix")
    assert [path for path, _ in web.requests][2:] == ["/api/redirect"] * 3

    loop = f"{base}/api/redirect?to=/api/redirect%3Fto%3D/api/x"
    assert (await get(http_get, loop)).ok
    too_many = await get(tool(client, f"{base}/api/", resolve=resolver, max_redirects=1), loop)
    assert too_many == ToolResult(ok=False, text="http_get: more than 1 redirects")


async def test_a_huge_body_is_cut_and_the_rest_never_read(web: WebServer, client: httpx.AsyncClient) -> None:
    http_get = tool(client, f"{web.origin}/", allow_private=True, max_bytes=100_000)
    result = await get(http_get, f"{web.origin}/huge")
    assert result.ok
    assert result.truncated
    assert result.text.endswith("x" * 1000 + "\n[truncated: more than 100000 bytes]")
    assert len(result.text) < 100_200
    assert web.body_bytes_sent < 16 * 1024 * 1024  # of 64 MiB: reading stopped, the socket closed


async def test_a_slow_server_is_cut_off_at_the_call_limit(web: WebServer, client: httpx.AsyncClient) -> None:
    http_get = tool(client, f"{web.origin}/", allow_private=True)
    result = await get(http_get, f"{web.origin}/slow", ToolLimits(timeout=0.5))
    assert result == ToolResult(ok=False, text="http_get timed out after 0.5 s")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("/image", "image/png is not text", id="binary"),
        pytest.param("/untyped", "no content type is not text", id="untyped"),
        pytest.param("/gzip", "a gzip compressed body is not accepted", id="compressed"),
    ],
)
async def test_only_plain_text_is_read(web: WebServer, client: httpx.AsyncClient, path: str, message: str) -> None:
    result = await get(tool(client, f"{web.origin}/", allow_private=True), web.origin + path)
    assert not result.ok
    assert result.text.endswith(message)


async def test_an_error_status_is_an_error_result_with_its_text(web: WebServer, client: httpx.AsyncClient) -> None:
    result = await get(tool(client, f"{web.origin}/", allow_private=True), f"{web.origin}/missing")
    assert result == ToolResult(
        ok=False, text=f"HTTP 404 Not Found, text/plain, from {web.origin}/missing\n\nno such sensor"
    )


async def test_the_own_client_keeps_no_cookies_and_follows_no_proxy(
    web: WebServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    async with new_client(https=False) as own:
        http_get = tool(own, f"{web.origin}/", allow_private=True)
        assert (await get(http_get, f"{web.origin}/cookie")).ok
        assert (await get(http_get, f"{web.origin}/again")).ok
    assert "Cookie" not in web.requests[1][1]
    assert web.requests[1][1]["Host"] == f"127.0.0.1:{web.port}"


def test_a_client_that_reads_proxies_from_the_environment_is_refused() -> None:
    with pytest.raises(ValueError, match="trust_env=False"):
        HttpGet(httpx.AsyncClient(), [parse_prefix("http://example.test/")])
    with pytest.raises(ValueError, match="at least one allowed URL prefix"):
        HttpGet(httpx.AsyncClient(trust_env=False), [])


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        pytest.param("http://example.test/api?x=1", "cannot have a query", id="query"),
        pytest.param("http://user@example.test/", "user name or password", id="userinfo"),
        pytest.param("gopher://example.test/", "only http:// and https://", id="scheme"),
        pytest.param("http:///x", "no host", id="no-host"),
    ],
)
def test_a_bad_prefix_is_refused_with_its_reason(prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_prefix(prefix)


async def test_the_real_resolver_answers_with_addresses() -> None:
    assert "127.0.0.1" in await resolve_host("127.0.0.1", 80)


@pytest.mark.parametrize(
    ("address", "private_allowed"),
    [
        pytest.param("127.0.0.1", True, id="loopback"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("10.0.0.1", True, id="private"),
        pytest.param("fe80::1", True, id="link-local"),
        pytest.param("8.8.8.8", True, id="public"),
        pytest.param("0.0.0.0", False, id="unspecified"),
        pytest.param("240.0.0.1", False, id="reserved"),
        pytest.param("239.1.2.3", False, id="multicast"),
        pytest.param("2001::1", False, id="teredo"),
    ],
)
def test_allowing_private_addresses_never_allows_unspecified_multicast_or_reserved(
    address: str, private_allowed: bool
) -> None:
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip, allow_private=True) is None) is private_allowed
    assert (address_problem(ip, allow_private=False) is not None) is (address != "8.8.8.8")


async def test_a_server_that_is_not_there_is_an_error_result(client: httpx.AsyncClient) -> None:
    with WebServer() as gone:
        url = f"{gone.origin}/"
    result = await get(tool(client, url, allow_private=True), url)
    assert not result.ok
    assert result.text.startswith(f"http_get: cannot fetch {url}: ConnectError")


@pytest.mark.parametrize("charset", ["rot13", "base64", "no-such-charset", "utf-16"])
async def test_a_declared_charset_that_is_unknown_or_not_text_reads_as_utf8(
    web: WebServer, client: httpx.AsyncClient, charset: str
) -> None:
    result = await get(
        tool(client, f"{web.origin}/", allow_private=True), f"{web.origin}/odd-charset?charset={charset}"
    )
    assert result.ok
    expected = "plain words" if charset != "utf-16" else b"plain words".decode("utf-16", "replace")
    assert result.text.endswith("\n\n" + expected)
