"""The incremental line splitter: bytes split on b"\\n" only, any chunking gives the same lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piagent.exceptions import UpstreamError
from piagent.providers.lines import iter_lines, sse_data
from tests.upstream import cut, iterate, ollama_lines, openai_events

pytestmark = pytest.mark.anyio

# Characters str.splitlines() would split on, and multi-byte UTF-8 of every length.
TRICKY = ["a\u2028b", "c\u0085d", "\u2029", "\x0b\x0c\x1c\x1d\x1e", "é", "€", "🥧", "line\\nbreak", " "]


async def collect(chunks: list[bytes], limit: int = 1 << 20) -> list[bytes]:
    return [line async for line in iter_lines(iterate(chunks), limit, "ollama")]


async def test_every_single_cut_position_gives_the_same_lines() -> None:
    body = ollama_lines(TRICKY)
    expected = body.split(b"\n")[:-1]
    for position in range(len(body) + 1):
        assert await collect(cut(body, [position])) == expected, position


async def test_one_byte_at_a_time_gives_the_same_lines() -> None:
    body = ollama_lines(TRICKY)
    assert await collect([body[i : i + 1] for i in range(len(body))]) == body.split(b"\n")[:-1]


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.text(max_size=12), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
async def test_any_split_of_any_valid_stream_gives_the_same_lines(tokens: list[str], cuts: list[int]) -> None:
    body = ollama_lines(tokens)
    assert await collect(cut(body, [c for c in cuts if c <= len(body)])) == body.split(b"\n")[:-1]


async def test_blank_lines_are_skipped_and_a_last_line_without_newline_is_kept() -> None:
    assert await collect([b"\n\n{}\n  \n", b'{"a":1}']) == [b"{}", b'{"a":1}']


async def test_a_line_over_the_cap_is_an_upstream_error_not_unbounded_memory() -> None:
    with pytest.raises(UpstreamError, match="longer than 1024 bytes"):
        await collect([b"x" * 600, b"x" * 600, b"\n"], limit=1024)
    with pytest.raises(UpstreamError, match="longer than 1024 bytes"):
        await collect([b"x" * 2000 + b"\n{}\n"], limit=1024)
    assert await collect([b"x" * 1024 + b"\n"], limit=1024) == [b"x" * 1024]


async def collect_sse(chunks: list[bytes], limit: int = 1 << 20) -> list[bytes]:
    payloads = [sse_data(line, "openai") async for line in iter_lines(iterate(chunks), limit, "openai")]
    return [data for data in payloads if data is not None]


def sse_payloads(body: bytes) -> list[bytes]:
    """The data payloads of a well-formed body, found the slow, obvious way (events split on blank lines)."""
    events = body.replace(b"\r\n", b"\n").split(b"\n\n")
    return [event.removeprefix(b"data: ") for event in events if event.startswith(b"data: ")]


@pytest.mark.parametrize("end", [pytest.param(b"\n", id="lf"), pytest.param(b"\r\n", id="crlf")])
async def test_every_single_cut_of_an_event_stream_gives_the_same_payloads(end: bytes) -> None:
    body = openai_events(TRICKY, end=end)
    expected = sse_payloads(body)
    for position in range(len(body) + 1):
        got = await collect_sse(cut(body, [position]))
        assert [data.rstrip(b"\r") for data in got] == expected, position


@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.text(max_size=12), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
    crlf=st.booleans(),
)
async def test_any_split_of_any_valid_event_stream_gives_the_same_payloads(
    tokens: list[str], cuts: list[int], crlf: bool
) -> None:
    body = openai_events(tokens, end=b"\r\n" if crlf else b"\n")
    got = await collect_sse(cut(body, [c for c in cuts if c <= len(body)]))
    assert [data.rstrip(b"\r") for data in got] == sse_payloads(body)


async def test_comments_and_other_fields_are_skipped_and_data_needs_no_space() -> None:
    body = [b": keep-alive\r\n\r\nevent: message\nid: 3\nretry: 100\ndata:{}\n\ndata:  x\n\ndata: [DONE]\n\n"]
    assert await collect_sse(body) == [b"{}", b" x", b"[DONE]"]


async def test_bare_json_where_events_belong_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="openai sent JSON where server-sent events were expected"):
        await collect_sse([b'{"choices": []}\n'])
