"""API keys: a pure ASGI middleware that lets only known bearers in and tags each request with its owner.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which runs the app in a separate task and
breaks streaming and client-disconnect semantics. Keys are compared as SHA-256 digests with
`hmac.compare_digest`, against every key without stopping at a match, so neither the timing nor
the length of a wrong key tells anything. A key is never logged, echoed or stored in the scope:
the owner id is a hash of it, stable across restarts (conversations may outlive the process).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
from collections.abc import Iterable
from pathlib import Path

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from piagent.exceptions import SettingsError, Unauthorized
from piagent.http.requests import OWNER_SCOPE_KEY, route_path, wants_deep_health
from piagent.http.responses import error_response_for
from piagent.settings import Settings, check_api_key

logger = logging.getLogger("piagent.http.auth")

# Presented keys longer than this are refused before hashing; real keys are far shorter.
_MAX_PRESENTED = 1024


def owner_id(key: str) -> str:
    """The non-secret, stable id of a key: 16 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(b"piagent-owner\x00" + key.encode()).hexdigest()[:16]


class ApiKeys:
    """The accepted keys, held only as digests, each with its owner id."""

    def __init__(self, keys: Iterable[str]) -> None:
        unique = dict.fromkeys(keys)
        if not unique:
            raise ValueError("at least one API key is needed")
        self._entries = [(hashlib.sha256(key.encode()).digest(), owner_id(key)) for key in unique]

    def __len__(self) -> int:
        return len(self._entries)

    def owner_of(self, presented: str) -> str | None:
        """The owner id of `presented` if it is one of the keys, else None; constant time in the key."""
        digest = hashlib.sha256(presented.encode(errors="surrogateescape")).digest()
        owner = None
        for known, known_owner in self._entries:
            if hmac.compare_digest(digest, known):  # no break: every key is compared, whatever matches
                owner = known_owner
        return owner


def _read_key_file(path: Path) -> list[str]:
    name = f"PIAGENT_API_KEYS_FILE={str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{name} is not allowed: expected a readable file of keys ({type(exc).__name__})") from exc
    # Group access is fine (root:piagent 0640, as for the service's env file); everyone's is not.
    if mode & stat.S_IRWXO:
        logger.warning("%s can be read by every user; chmod o-rwx it (600, or 640 for the service's group)", name)
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        try:
            keys.append(check_api_key(key))
        except ValueError as exc:
            raise SettingsError(f"{name} is not allowed: line {number}: expected {exc}") from exc
    return keys


def load_api_keys(settings: Settings) -> ApiKeys | None:
    """The keys from `PIAGENT_API_KEYS` and `PIAGENT_API_KEYS_FILE`, or None when there are none (auth off)."""
    keys = list(settings.api_keys)
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        keys.extend(_read_key_file(path))
        if len(keys) == len(settings.api_keys):
            raise SettingsError(f"PIAGENT_API_KEYS_FILE={str(path)!r} is not allowed: it holds no key")
    return ApiKeys(keys) if keys else None


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _is_open(scope: Scope) -> bool:
    """`GET /health` is open to monitors, and `GET /` (the chat page: static, it asks for the key itself).

    `/health?deep=1` reaches the upstream and shows its version and errors, so it needs a key.
    """
    if scope["method"] not in ("GET", "HEAD"):
        return False
    path = route_path(scope)
    return path == "/" or (path == "/health" and not wants_deep_health(QueryParams(scope["query_string"])))


class ApiKeyMiddleware:
    """Answers 401 to any request without a known bearer key (but `GET /health` and `/`); sets the owner id."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and _is_open(scope)):
            await self.app(scope, receive, send)
            return
        token = _bearer_token(scope)
        owner = self.keys.owner_of(token) if token and len(token) <= _MAX_PRESENTED else None
        if owner is not None:
            scope[OWNER_SCOPE_KEY] = owner
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
        else:
            message = (
                "this server needs an API key: send 'Authorization: Bearer <key>'"
                if not token
                else "the API key is not valid"
            )
            # In the error shape of the route's clients (OpenAI's under /v1/, Ollama's under /api/).
            await error_response_for(Request(scope), Unauthorized(message))(scope, receive, send)
