"""Tokens that arrive in one upstream read leave in one write, in every format and door; none waits for another."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from tests.servers import Served

HI = [{"role": "user", "content": "hi"}]
DOORS = [
    pytest.param("/chat", {"message": "hi", "stream": True}, "", id="chat-plain"),
    pytest.param("/chat", {"message": "hi", "stream": True}, "text/event-stream", id="chat-sse"),
    pytest.param("/chat", {"message": "hi", "stream": True}, "application/x-ndjson", id="chat-ndjson"),
    pytest.param("/v1/chat/completions", {"model": "general", "messages": HI, "stream": True}, "", id="openai"),
    pytest.param("/api/chat", {"model": "general", "messages": HI}, "", id="ollama"),
]


def body_chunks(url: str, path: str, body: dict[str, Any], accept: str) -> list[bytes]:
    """POST on a raw socket and return the response's HTTP chunks as sent: one per write of the server's."""
    parts = urlsplit(url)
    payload = msgspec.json.encode(body)
    extra = f"Accept: {accept}\r\n" if accept else ""
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n{extra}".encode()
            + f"Connection: close\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        data = b""
        while block := sock.recv(65536):
            data += block
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


@pytest.mark.parametrize(("path", "body", "accept"), DOORS)
def test_a_burst_from_one_upstream_read_leaves_in_one_write(
    served: Served, fake_ollama: FakeModel, path: str, body: dict[str, Any], accept: str
) -> None:
    tokens = [f"w{i} " for i in range(40)]
    fake_ollama.batch_writes = True  # the whole reply in one upstream write
    fake_ollama.script = Script(tokens=tokens)
    chunks = body_chunks(served.url, path, body, accept)
    # The first token leaves at once, alone; the rest of the burst and the reply's end follow together (a
    # read boundary inside the burst may split them once). One write per token would be 41 chunks or more.
    assert 2 <= len(chunks) <= 3, chunks
    assert b"w0 " in chunks[0]
    assert b"w1 " not in chunks[0]
    joined = b"".join(chunks)
    for token in tokens:
        assert token.encode() in joined


@pytest.mark.parametrize(("path", "body", "accept"), DOORS)
def test_tokens_that_trickle_leave_one_write_each_without_waiting(
    served: Served, fake_ollama: FakeModel, path: str, body: dict[str, Any], accept: str
) -> None:
    tokens = ["a1 ", "b2 ", "c3 ", "d4 "]
    fake_ollama.script = Script(tokens=tokens, delay=0.05)
    chunks = body_chunks(served.url, path, body, accept)
    carrying = [[token for token in tokens if token.encode() in chunk] for chunk in chunks]
    assert [found for found in carrying if found] == [[token] for token in tokens]
