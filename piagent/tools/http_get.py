"""The `http_get` tool: text from URLs under the owner's prefixes, never from an address the rules refuse.

Each hop (the first request and every redirect) is checked the same way before any connection: the URL
against the prefixes (see `addresses`), then every address its host resolves to against the address rules.
The request then goes to the checked address itself, with the original `Host` header (and TLS server name),
so a DNS answer that changes between the check and the connect (rebinding) cannot send it elsewhere.
Redirects are followed here, one hop at a time, never by httpx. Bodies are read raw (no decompression, so a
small compressed body cannot grow into a huge one) and reading stops at the byte cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from piagent.tools.addresses import Prefix, Target, address_problem, parse_target
from piagent.tools.base import ToolError, ToolResult, decode_prefix

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/x-ndjson")
_TEXT_SUFFIXES = ("+json", "+xml")


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the event loop's resolver (a worker thread, not a block)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def new_client(https: bool = True) -> httpx.AsyncClient:
    """A client fit for `http_get`: no proxy from the environment, no redirects, no cookies kept between calls.

    `https=False` (no allowed prefix is https) skips loading the CA bundle, which costs start-up time and memory.
    The caller owns the client and closes it (the lifespan, with `async with`).
    """
    return httpx.AsyncClient(
        trust_env=False,
        verify=https,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=0),
    )


def is_text(content_type: str) -> bool:
    """Whether a Content-Type names text the model can read (text/*, JSON, XML, JavaScript)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith("text/") or kind in _TEXT_TYPES or kind.endswith(_TEXT_SUFFIXES)


def _decode(body: bytes, charset: str | None, truncated: bool) -> str:
    """The body as text in its declared charset; an unknown one, or a codec that is not a text encoding
    (`rot13`, `base64`: the server names it), reads as UTF-8."""
    encoding = charset or "utf-8"
    try:
        b"x".decode(encoding, "replace")  # LookupError for both (an empty input would skip the check)
    except LookupError:
        encoding = "utf-8"
    return decode_prefix(body, encoding) if truncated else body.decode(encoding, "replace")


class HttpGet:
    """Fetches text from URLs the owner allows."""

    name = "http_get"

    def __init__(
        self,
        client: httpx.AsyncClient,
        prefixes: Sequence[Prefix],
        *,
        allow_private: bool = False,
        max_bytes: int = 262144,
        max_redirects: int = 3,
        timeout: float = 10.0,
        resolve: Resolver = resolve_host,
    ) -> None:
        if client.trust_env:
            # A proxy from HTTPS_PROXY would make the connection, and the address checks would be moot.
            raise ValueError("http_get needs a client made with trust_env=False")
        if not prefixes:
            raise ValueError("http_get needs at least one allowed URL prefix")
        self._client = client
        self._prefixes = tuple(prefixes)
        self._allow_private = allow_private
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._timeout = httpx.Timeout(timeout)
        self._resolve = resolve
        shown = ", ".join(str(prefix) for prefix in self._prefixes)
        self.description = (
            f"GET a URL and return its text (at most {max_bytes} bytes). Only URLs starting with one of these "
            f"prefixes are allowed: {shown}"
        )
        self.parameters: dict[str, Any] = {
            "type": "object",
            "properties": {"url": {"type": "string", "maxLength": 4096, "description": "The full URL to fetch."}},
            "required": ["url"],
            "additionalProperties": False,
        }

    async def _check(self, text: str) -> tuple[Target, str]:
        """The target and the one address to connect to, or `ToolError` before any connection is made."""
        try:
            target = parse_target(text)
        except ValueError as exc:
            raise ToolError(f"refused {text[:200]}: {exc}") from exc
        if not any(prefix.allows(target) for prefix in self._prefixes):
            raise ToolError(f"refused {target}: not under an allowed prefix")
        try:
            addresses = [ipaddress.ip_address(target.host)]
        except ValueError:
            try:
                found = await self._resolve(target.host, target.port)
            except OSError as exc:
                raise ToolError(f"cannot resolve {target.host}: {exc.strerror or exc}") from exc
            addresses = [ipaddress.ip_address(address.partition("%")[0]) for address in found]
        if not addresses:
            raise ToolError(f"cannot resolve {target.host}")
        for address in addresses:
            # Every address must pass: a name with one public and one private address could be either.
            problem = address_problem(address, self._allow_private)
            if problem is not None:
                raise ToolError(f"refused {target}: {target.host} is {problem}")
        return target, str(addresses[0])

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """The body as text, after the status line and the content type; a redirect is followed if allowed."""
        url = str(arguments["url"])
        for _ in range(self._max_redirects + 1):
            target, address = await self._check(url)
            headers = {
                "Host": target.url.netloc.decode("ascii"),
                "Accept": "text/*, application/json, application/xml;q=0.9",
                "Accept-Encoding": "identity",
                "User-Agent": "piagent-http_get",
            }
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = self._client.build_request(
                "GET",
                target.url.copy_with(host=address),
                headers=headers,
                timeout=self._timeout,
                extensions=extensions,
            )
            try:
                response = await self._client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise ToolError(f"cannot fetch {target}: {type(exc).__name__} {exc}".strip()) from exc
            try:
                location = response.headers.get("location")
                if response.status_code not in _REDIRECTS or location is None:
                    return await self._read(target, response)
                url = str(target.url.join(location))
            finally:
                await response.aclose()
        raise ToolError(f"more than {self._max_redirects} redirects")

    async def _read(self, target: Target, response: httpx.Response) -> ToolResult:
        content_type = response.headers.get("content-type", "")
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if not is_text(content_type):
            raise ToolError(f"{status} from {target}: {content_type or 'no content type'} is not text")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ToolError(f"{status} from {target}: a {encoding} compressed body is not accepted")
        body = bytearray()
        truncated = False
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self._max_bytes:
                truncated = True  # stop reading: the rest never leaves the socket
                del body[self._max_bytes :]
                break
        text = _decode(bytes(body), response.charset_encoding, truncated)
        if truncated:
            text += f"\n[truncated: more than {self._max_bytes} bytes]"
        ok = response.status_code < 400
        return ToolResult(ok=ok, text=f"{status}, {content_type}, from {target}\n\n{text}", truncated=truncated)
