"""The chat page shows an agent's tool steps, collapsed, live and from history (real chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser

from bench.fakemodel import FakeModel, Script, ToolCall
from piagent import Settings, create_app
from tests.servers import serve_in_thread
from tests.test_chat_page_browser import NewPage, browser, new_page, open_chat, screenshot, send, wait_for_reply

__all__ = ["browser", "new_page"]  # the fixtures, shared with the browser tests

AGENT = "---\ndescription: Does sums.\ntools: [calculator, clock]\n---\nYou do sums.\n"


@pytest.fixture
def acting_server(tmp_path: Path, fake_ollama: FakeModel) -> object:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "general.md").write_text(AGENT, encoding="utf-8")
    settings = Settings(ollama_url=fake_ollama.url, prompts_dir=str(folder), model="test-model", read_timeout=10.0)
    return serve_in_thread(create_app(settings))


def test_a_tool_step_is_shown_collapsed_live_and_after_a_reload(
    acting_server: object, fake_ollama: FakeModel, new_page: NewPage, browser: Browser
) -> None:
    fake_ollama.queue = [
        Script(
            tokens=[],
            tool_calls=[ToolCall("calculator", {"expression": "6 * 7"}), ToolCall("calculator", {"expression": "1/0"})],
        ),
        Script(tokens=["Six times seven", " is 42."], delay=0.05),
    ]
    with acting_server as url:  # type: ignore[attr-defined]
        page = new_page()
        open_chat(page, url + "/")
        send(page, "What is 6 * 7?")
        assert wait_for_reply(page) == "Six times seven is 42."
        steps = page.locator("#log .msg.assistant .step")
        assert steps.count() == 2
        assert steps.nth(0).locator("summary").inner_text() == "Used calculator"
        assert steps.nth(1).locator("summary").inner_text() == "calculator failed"
        assert not steps.nth(0).evaluate("(node) => node.open")  # collapsed by default
        assert not steps.nth(0).locator(".result").is_visible()
        steps.nth(0).locator("summary").click()
        assert steps.nth(0).locator(".result").inner_text() == "42"
        steps.nth(1).locator("summary").click()
        assert "zero" in steps.nth(1).locator(".result").inner_text()
        screenshot(page, "tool-steps.png")

        page.reload()
        page.locator("#log .msg.assistant .step").first.wait_for()
        history = page.locator("#log .msg.assistant")
        assert history.count() == 1  # the steps and the reply in one message
        assert history.locator(".step").count() == 2
        assert history.locator(".bubble").inner_text() == "Six times seven is 42."
        history.locator(".step summary").first.click()
        assert history.locator(".step .result").first.inner_text() == "42"
