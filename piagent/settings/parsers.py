"""Reading one setting's text: each parser returns the value or raises ValueError saying what is allowed."""

from __future__ import annotations

from collections.abc import Callable

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
PROVIDERS = ("ollama", "openai")


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return parse


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high or value != value:
            raise ValueError(f"a number of seconds from {low:g} to {high:g}")
        return value

    return parse


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _url(text: str) -> str:
    url = text.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or " " in rest:
        raise ValueError("an http:// or https:// URL")
    return url


def _memory_url(text: str) -> str:
    url = text.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    allowed = "memory://, sqlite:///<path> or redis://host:port/db"
    if not sep or " " in url:
        raise ValueError(allowed)
    if scheme == "memory" and not rest:
        return "memory://"
    if scheme == "sqlite" and rest.startswith("/") and rest.strip("/"):
        return url
    if scheme in ("redis", "rediss") and rest and not rest.startswith("/"):
        return url
    raise ValueError(allowed)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and `piagent config`.

    A user name alone is hidden too: `https://<token>@host` carries the secret there.
    """
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user + ':' if colon else ''}***@{host}{slash}{path}"


def parse_urls(text: str) -> str:
    """One or more comma-separated http(s) URLs, normalized (no trailing slash) and joined by commas."""
    urls = [_url(part) for part in text.split(",")]
    if len(set(urls)) != len(urls):
        raise ValueError("comma-separated http:// or https:// URLs, each once")
    return ",".join(urls)


def split_urls(text: str) -> tuple[str, ...]:
    """The URLs of a value `parse_urls` produced (a setting or an agent's `url:`)."""
    return tuple(text.split(",")) if text else ()


def _word(text: str) -> str:
    value = text.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ValueError("a non-empty value without spaces")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value

    return parse


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError("a comma-separated list of origins like https://pi.local:8000, or *")
    return origins


def _host_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip().rstrip(".").lower() for part in text.split(",") if part.strip())
    for name in names:
        bare = name.removeprefix("*.")
        if name != "*" and (not bare or not all(ch.isalnum() or ch in "-._" for ch in bare)):
            raise ValueError("a comma-separated list of host names like raspberrypi.local or *.home.arpa, or *")
    return names


def _text(text: str) -> str:
    return text.strip()


def _items(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _url_prefixes(text: str) -> tuple[str, ...]:
    prefixes = _items(text)
    if not all(prefix.startswith(("http://", "https://")) for prefix in prefixes):
        raise ValueError("comma-separated URL prefixes like http://192.168.1.20/api/")
    return prefixes


# Shorter keys could be guessed, and the owner id derived from a key would let a guess be checked offline.
MIN_KEY_LENGTH = 16


def check_api_key(key: str) -> str:
    """`key` if it is long enough and has no spaces; the error never repeats the key."""
    if len(key) < MIN_KEY_LENGTH or any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ValueError(
            f"keys of at least {MIN_KEY_LENGTH} printable characters without spaces "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def _api_keys(text: str) -> tuple[str, ...]:
    return tuple(check_api_key(part.strip()) for part in text.split(",") if part.strip())


def show_value(value: object) -> str:
    """A setting's value spelled as in the environment (`true`, `5`, `a,b`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)
