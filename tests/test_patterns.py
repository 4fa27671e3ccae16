"""Every pattern a wire schema checks matches the whole string: a trailing newline is never let through."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

import piagent
from bench.fakemodel import FakeModel
from piagent.http.openapi import build_openapi
from piagent.http.routes import API

# One string each pattern is meant to accept; a new pattern needs its sample here (the test says so).
SAMPLES = ("abc", "a-b_1", "OPENAI_KEY")


def _types_in_piagent() -> list[Any]:
    """Every Struct defined in piagent, and the type of every module-level decoder."""
    found: list[Any] = []
    for module_info in pkgutil.walk_packages(piagent.__path__, "piagent."):
        if module_info.name == "piagent.__main__":  # runs the command line when imported
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, msgspec.Struct) and value.__module__ == module.__name__:
                found.append(value)
            elif isinstance(value, msgspec.json.Decoder):
                found.append(value.type)
    return found


def _patterns(info: Any, seen: set[type]) -> Iterator[str]:
    """Walk msgspec's description of a type (its nodes are Structs themselves) for string patterns."""
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in seen:
            return
        seen.add(info.cls)
    if isinstance(info, msgspec.inspect.StrType) and info.pattern is not None:
        yield info.pattern
    if isinstance(info, msgspec.Struct):
        for name in info.__struct_fields__:
            yield from _patterns(getattr(info, name), seen)
    elif isinstance(info, tuple):
        for item in info:
            yield from _patterns(item, seen)


def all_patterns() -> set[str]:
    seen: set[type] = set()
    return {
        pattern for info in msgspec.inspect.multi_type_info(_types_in_piagent()) for pattern in _patterns(info, seen)
    }


def test_the_walk_finds_the_known_patterns() -> None:
    found = all_patterns()
    assert len(found) >= 3  # conversation id, agent name, an agent file's api_key_env
    assert r"\A[A-Za-z0-9_-]{1,64}\Z" in found


@pytest.mark.parametrize("pattern", sorted(all_patterns()))
def test_every_pattern_rejects_a_trailing_newline(pattern: str) -> None:
    accepted = [sample for sample in SAMPLES if re.search(pattern, sample)]
    assert accepted, f"add a string {pattern!r} accepts to SAMPLES"
    for sample in accepted:
        for hostile in (sample + "\n", "\n" + sample, sample + "\nx"):
            assert re.search(pattern, hostile) is None, (pattern, hostile)


def test_openapi_spells_the_patterns_for_json_schema() -> None:
    published = re.findall(r'"pattern":("(?:[^"\\]|\\.)*")', msgspec.json.encode(build_openapi(API, "t", "1")).decode())
    assert published
    for text in published:
        pattern = msgspec.json.decode(text)
        assert pattern.startswith("^"), pattern
        assert pattern.endswith("$"), pattern
        assert "\\A" not in pattern, pattern


def test_a_conversation_id_with_a_trailing_newline_is_422_and_nothing_happens(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    response = client.post("/chat", json={"message": "hi", "conversation_id": "abc\n"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "$.conversation_id" in response.json()["error"]["message"]
    assert fake_ollama.chat_requests == []
    assert client.get("/conversations").json()["conversations"] == []
    assert client.post("/chat", json={"message": "hi", "conversation_id": "abc"}).status_code == 200
