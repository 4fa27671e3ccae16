"""API keys: who gets in, whose conversations they see, and that a key is never shown anywhere."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent.exceptions import SettingsError
from piagent.http import auth
from piagent.http.auth import ApiKeys, load_api_keys, owner_id
from piagent.settings import Settings

KEY_A = "alpha-0123456789-abcdefghij"
KEY_B = "bravo-0123456789-abcdefghij"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# Each: the method and path, the request's headers, and what the 401 says.
REFUSED = [
    ("GET", "/agents", {}, "needs an API key"),
    ("POST", "/chat", {}, "needs an API key"),
    ("GET", "/nowhere", {}, "needs an API key"),
    ("GET", "/health?deep=1", {}, "needs an API key"),
    ("POST", "/chat", bearer("wrong-0123456789-abcdefghij"), "not valid"),
    ("POST", "/chat", bearer(KEY_A[:-1]), "not valid"),
    ("POST", "/chat", bearer(KEY_A + "x" * 2000), "not valid"),
    ("POST", "/chat", {"Authorization": f"Basic {KEY_A}"}, "needs an API key"),
    ("POST", "/chat", {"Authorization": "Bearer"}, "needs an API key"),
]


def test_a_request_without_a_known_key_is_401_with_www_authenticate(serve: Any, fake_ollama: FakeModel) -> None:
    with serve(api_keys=(KEY_A, KEY_B)) as url, httpx.Client(base_url=url) as client:
        for method, path, headers, message in REFUSED:
            response = client.request(method, path, json={"message": "hi"}, headers=headers)
            case = (method, path, headers)
            assert response.status_code == 401, case
            assert response.headers["www-authenticate"] == "Bearer", case
            assert response.json()["error"]["code"] == "unauthorized", case
            assert message in response.json()["error"]["message"], case
            assert KEY_A not in response.text, case
    assert fake_ollama.requests == []


def test_health_stays_open_and_a_known_key_opens_everything_else(serve: Any, fake_ollama: FakeModel) -> None:
    with serve(api_keys=(KEY_A, KEY_B)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/health").status_code == 200
        assert client.head("/health").status_code == 200
        page = client.get("/")  # the chat page asks for the key itself
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert client.post("/", json={}).status_code == 401
        assert client.get("/health?deep=0").status_code == 200
        for key in (KEY_A, KEY_B):
            assert client.get("/health?deep=1", headers=bearer(key)).json()["upstreams"][0]["status"] == "ok"
            assert client.get("/agents", headers=bearer(key)).status_code == 200
            assert client.post("/chat", json={"message": "hi"}, headers=bearer(key)).status_code == 200
            assert client.get("/nowhere", headers=bearer(key)).status_code == 404
        assert client.post("/chat", json={"message": "hi"}, headers={"authorization": f"bearer  {KEY_A}"}).is_success


def test_keys_come_from_the_environment_and_a_key_file_with_comments(
    tmp_path: Path, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the kitchen tablet\n{KEY_B}\n\n   # old phone, revoked\n", encoding="utf-8")
    keys_file.chmod(0o644)
    with serve(api_keys=(KEY_A,), api_keys_file=str(keys_file)) as url, httpx.Client(base_url=url) as client:
        for key in (KEY_A, KEY_B):
            assert client.get("/agents", headers=bearer(key)).status_code == 200
        assert client.get("/agents", headers=bearer("old-phone-0123456789")).status_code == 401
    assert "can be read by every user; chmod o-rwx it" in caplog.text


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param("# only a comment\n", "it holds no key", id="no-key"),
        pytest.param(f"{KEY_A}\nshort\n", "line 2: expected keys of at least 16", id="short-key"),
        pytest.param(f"{KEY_A} and more\n", "line 1: expected keys of at least 16", id="spaces"),
    ],
)
def test_a_bad_key_file_stops_start_up_without_showing_a_key(tmp_path: Path, content: str, error: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(content, encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_api_keys(Settings(api_keys_file=str(keys_file)))
    assert error in caught.value.message
    assert "short" not in caught.value.message.replace("keys of at least", "")
    assert KEY_A not in caught.value.message


def test_a_missing_key_file_stops_start_up() -> None:
    with pytest.raises(SettingsError, match=r"PIAGENT_API_KEYS_FILE='/nonexistent/keys' is not allowed"):
        load_api_keys(Settings(api_keys_file="/nonexistent/keys"))


def test_no_keys_means_auth_is_off() -> None:
    assert load_api_keys(Settings()) is None


def test_a_short_key_in_the_environment_is_refused_without_repeating_it() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PIAGENT_API_KEYS": f"{KEY_A},tooshort"})
    assert caught.value.message.startswith("PIAGENT_API_KEYS=<hidden> is not allowed: expected keys of at least 16")
    assert "tooshort" not in caught.value.message
    assert KEY_A not in caught.value.message


def test_keys_are_hidden_from_describe_and_repr() -> None:
    settings = Settings.from_env({"PIAGENT_API_KEYS": f" {KEY_A} , {KEY_B} ,"})
    assert settings.api_keys == (KEY_A, KEY_B)
    assert ("PIAGENT_API_KEYS", "***") in settings.describe()
    assert ("PIAGENT_MAX_TOKENS", "1024") in settings.describe()  # a "TOKEN" in a name is no secret here
    assert ("PIAGENT_API_KEYS", "") in Settings().describe()
    assert KEY_A not in repr(settings)
    assert "max_tokens=1024" in repr(settings)


def test_the_owner_id_is_a_stable_non_secret_digest_of_the_key() -> None:
    assert owner_id(KEY_A) == hashlib.sha256(b"piagent-owner\x00" + KEY_A.encode()).hexdigest()[:16]
    assert owner_id(KEY_A) != owner_id(KEY_B)
    assert KEY_A not in owner_id(KEY_A)
    keys = ApiKeys([KEY_A, KEY_B])
    assert keys.owner_of(KEY_B) == owner_id(KEY_B)
    assert keys.owner_of(KEY_B + "x") is None


@pytest.mark.parametrize("presented", [pytest.param(KEY_A, id="first-key-matches"), pytest.param("x" * 20, id="miss")])
def test_every_key_is_compared_in_constant_time_without_stopping_at_a_match(
    monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    keys = ApiKeys([KEY_A, KEY_B, "charlie-0123456789-abc"])
    keys.owner_of(presented)
    assert len(compared) == 3
    assert all(len(a) == len(b) == 32 for a, b in compared)  # digests: a key's length never shows


def test_the_same_conversation_id_under_two_keys_is_two_conversations(serve: Any, fake_ollama: FakeModel) -> None:
    with serve(api_keys=(KEY_A, KEY_B)) as url, httpx.Client(base_url=url) as client:
        started = client.post("/chat", json={"message": "mine"}, headers=bearer(KEY_A))
        conversation = started.json()["conversation_id"]
        # B cannot tell A's id from an unused one: both start B's own conversation under that id.
        for stream, conversation_id in ((False, conversation), (True, "never-used-by-anyone")):
            response = client.post(
                "/chat",
                json={"message": "hello from b", "conversation_id": conversation_id, "stream": stream},
                headers=bearer(KEY_B),
            )
            assert response.status_code == 200
            assert response.headers["x-conversation-id"] == conversation_id
            assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == ["hello from b"]
        client.post("/chat", json={"message": "still mine", "conversation_id": conversation}, headers=bearer(KEY_A))
        assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == [
            "mine",
            "Hello, world!",
            "still mine",
        ]
        client.post("/chat", json={"message": "again", "conversation_id": conversation}, headers=bearer(KEY_B))
        assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == [
            "hello from b",
            "Hello, world!",
            "again",
        ]
        a_turns = client.get(f"/conversations/{conversation}", headers=bearer(KEY_A)).json()["turns"]
        b_turns = client.get(f"/conversations/{conversation}", headers=bearer(KEY_B)).json()["turns"]
        assert [t["text"] for t in a_turns][::2] == ["mine", "still mine"]
        assert [t["text"] for t in b_turns][::2] == ["hello from b", "again"]


def test_the_conversation_endpoints_show_each_key_only_its_own(serve: Any) -> None:
    with serve(api_keys=(KEY_A, KEY_B)) as url, httpx.Client(base_url=url) as client:
        mine = client.post("/chat", json={"message": "mine"}, headers=bearer(KEY_A)).json()["conversation_id"]
        theirs = client.post("/chat", json={"message": "theirs"}, headers=bearer(KEY_B)).json()["conversation_id"]
        listed = client.get("/conversations", headers=bearer(KEY_A)).json()["conversations"]
        assert [c["id"] for c in listed] == [mine]
        assert client.get("/conversations").status_code == 401
        for method in ("GET", "DELETE"):
            response = client.request(method, f"/conversations/{theirs}", headers=bearer(KEY_A))
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "conversation_not_found"
        assert client.get(f"/conversations/{theirs}", headers=bearer(KEY_B)).json()["turns"][0]["text"] == "theirs"
        assert client.delete(f"/conversations/{mine}", headers=bearer(KEY_A)).status_code == 204


def test_a_mounted_piagent_keeps_its_health_open_under_the_prefix(make_settings: Any, fake_ollama: FakeModel) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from piagent import create_app
    from tests.servers import serve_in_thread

    pi = create_app(make_settings(api_keys=(KEY_A,)))
    host = Starlette(routes=[Mount("/pi", app=pi)], lifespan=pi.router.lifespan_context)
    with serve_in_thread(host) as url, httpx.Client(base_url=url) as client:
        assert client.get("/pi/health").status_code == 200
        assert client.get("/pi/agents").status_code == 401
        assert client.get("/pi/agents", headers=bearer(KEY_A)).status_code == 200
