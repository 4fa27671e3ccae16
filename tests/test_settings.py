"""Settings: config.env then the environment, one clear line for a wrong value, every key documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from piagent.exceptions import SettingsError
from piagent.settings import KEYS, MASK, Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_without_any_file_or_variable(empty_dir: Path) -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.host, settings.port, settings.ollama_url) == ("127.0.0.1", 8000, "http://127.0.0.1:11434")
    assert settings.prompts_dir == "prompts"


def test_every_key_shows_a_default_that_parses_back_to_the_struct_default(empty_dir: Path) -> None:
    settings = Settings.from_env({})
    for key in KEYS:
        assert getattr(settings, key.field) == getattr(Settings(), key.field), key.env
    assert {key.field for key in KEYS} == set(Settings.__struct_fields__)


def test_config_env_is_read_and_the_environment_wins(empty_dir: Path) -> None:
    (empty_dir / "config.env").write_text("PIAGENT_PORT=9000\nPIAGENT_MODEL=from-file\n# comment\n")
    settings = Settings.from_env({"PIAGENT_MODEL": "from-env"})
    assert settings.port == 9000
    assert settings.model == "from-env"


def test_piagent_config_names_another_file(empty_dir: Path) -> None:
    (empty_dir / "config.env").write_text("PIAGENT_PORT=9000\n")
    other = empty_dir / "other.env"
    other.write_text("PIAGENT_PORT=9100\nPIAGENT_CORS_ORIGINS=http://a.local, https://b.local/\n")
    settings = Settings.from_env({"PIAGENT_CONFIG": str(other)})
    assert settings.port == 9100
    assert settings.cors_origins == ("http://a.local", "https://b.local")


def test_a_missing_piagent_config_file_is_an_error(empty_dir: Path) -> None:
    with pytest.raises(SettingsError, match=r"PIAGENT_CONFIG='nope\.env': no such file"):
        Settings.from_env({"PIAGENT_CONFIG": "nope.env"})


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        pytest.param("PIAGENT_PORT", "eighty", "an integer from 1 to 65535", id="port-not-a-number"),
        pytest.param("PIAGENT_PORT", "70000", "an integer from 1 to 65535", id="port-out-of-range"),
        pytest.param("PIAGENT_OLLAMA_URL", "localhost:11434", "an http:// or https:// URL", id="url-without-scheme"),
        pytest.param("PIAGENT_MEMORY_ENABLED", "maybe", "true or false", id="bool"),
        pytest.param("PIAGENT_READ_TIMEOUT", "-1", "a number of seconds from 0.01 to 86400", id="negative-timeout"),
        pytest.param("PIAGENT_READ_TIMEOUT", "nan", "a number of seconds", id="nan-timeout"),
        pytest.param("PIAGENT_LOG_LEVEL", "loud", "one of critical, error, warning, info, debug", id="log-level"),
        pytest.param("PIAGENT_CORS_ORIGINS", "pi.local", "a comma-separated list of origins", id="origin"),
        pytest.param("PIAGENT_MODEL", "", "a non-empty value", id="empty-model"),
        pytest.param("PIAGENT_MEMORY_URL", "postgres://db/x", "memory://, sqlite:///<path> or redis://", id="store"),
        pytest.param("PIAGENT_MEMORY_URL", "sqlite:///", "memory://, sqlite:///<path>", id="sqlite-without-path"),
        pytest.param("PIAGENT_MEMORY_URL", "redis:///0", "redis://host:port/db", id="redis-without-host"),
        pytest.param("PIAGENT_MAX_CONCURRENT", "0", "an integer from 1 to 1000", id="no-generation-slot"),
        pytest.param("PIAGENT_MAX_QUEUE", "-1", "an integer from 0 to 100000", id="negative-queue"),
        pytest.param("PIAGENT_RATE_LIMIT", "fast", "an integer from 0 to 1000000", id="rate-limit"),
        pytest.param("PIAGENT_SHUTDOWN_GRACE", "nan", "a number of seconds from 0 to 3600", id="grace"),
        pytest.param("PIAGENT_FIRST_TOKEN_TIMEOUT", "0", "a number of seconds", id="first-token-timeout"),
        pytest.param("PIAGENT_PROVIDER", "claude", "one of ollama, openai", id="provider"),
        pytest.param("PIAGENT_OLLAMA_URL", "http://a:1,b:2", "an http:// or https:// URL", id="second-url-bad"),
        pytest.param("PIAGENT_OLLAMA_URL", "http://a:1,http://a:1/", "each once", id="url-twice"),
        pytest.param("PIAGENT_UPSTREAM_COOLOFF", "-1", "a number of seconds", id="cooloff"),
    ],
)
def test_a_wrong_value_names_the_key_the_value_and_what_is_allowed(
    empty_dir: Path, key: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({key: value})
    message = caught.value.message
    assert message.startswith(f"{key}={value!r} is not allowed: expected ")
    assert allowed in message
    assert "\n" not in message


def test_the_configuration_doc_documents_every_key_with_its_default() -> None:
    table = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for key in KEYS:
        default = f"`{key.default}`" if key.default else "(empty)"
        assert f"| `{key.env}` | {default} |" in table, key.env


def test_the_shipped_config_env_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert Settings.from_env({}).port == 8000


def test_several_upstream_urls_are_read_normalized(empty_dir: Path) -> None:
    settings = Settings.from_env(
        {"PIAGENT_OLLAMA_URL": " http://a:11434/ , http://b:11434", "PIAGENT_PROVIDER": "OpenAI"}
    )
    assert settings.ollama_url == "http://a:11434,http://b:11434"
    assert settings.provider == "openai"
    assert settings.default_urls("openai") == "http://127.0.0.1:8080"


def test_describe_never_prints_the_api_key() -> None:
    rows = dict(Settings(openai_api_key="sk-secret").describe())
    assert rows["PIAGENT_OPENAI_API_KEY"] == MASK
    assert "sk-secret" not in repr(Settings(openai_api_key="sk-secret").describe())
    assert dict(Settings().describe())["PIAGENT_OPENAI_API_KEY"] == ""


def test_describe_lists_every_key_once() -> None:
    rows = Settings(cors_origins=("http://a", "http://b")).describe()
    assert [key for key, _ in rows] == [key.env for key in KEYS]
    assert ("PIAGENT_CORS_ORIGINS", "http://a,http://b") in rows
    assert ("PIAGENT_MEMORY_ENABLED", "true") in rows


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("memory://", id="memory"),
        pytest.param("sqlite:///piagent.db", id="sqlite-relative"),
        pytest.param("sqlite:////var/lib/piagent/piagent.db", id="sqlite-absolute"),
        pytest.param("redis://127.0.0.1:6379/0", id="redis"),
        pytest.param("rediss://user:secret@redis.lan:6380/2?socket_timeout=2", id="redis-tls-with-password"),
    ],
)
def test_memory_urls_of_every_backend_are_accepted(empty_dir: Path, url: str) -> None:
    assert Settings.from_env({"PIAGENT_MEMORY_URL": url}).memory_url == url


def test_describe_hides_a_store_password() -> None:
    rows = dict(Settings(memory_url="redis://user:secret@redis.lan:6379/0").describe())
    assert rows["PIAGENT_MEMORY_URL"] == "redis://user:***@redis.lan:6379/0"


def test_more_generation_slots_than_upstream_connections_is_refused(empty_dir: Path) -> None:
    with pytest.raises(SettingsError, match=r"PIAGENT_MAX_CONCURRENT=5 is not allowed: expected at most"):
        Settings.from_env({"PIAGENT_MAX_CONCURRENT": "5", "PIAGENT_MAX_CONNECTIONS": "4"})
    assert Settings.from_env({"PIAGENT_MAX_CONCURRENT": "4", "PIAGENT_MAX_CONNECTIONS": "4"}).max_concurrent == 4
