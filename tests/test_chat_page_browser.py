"""The chat page in a real browser: Debian's chromium, headless, driven by Playwright, against a fake Ollama.

Screenshots go to artifacts/ (git-ignored). These tests never skip: without /usr/bin/chromium they fail
and say how to install it (`.ci/run` does).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import free_socket, serve_in_thread
from tests.test_disconnects import send_raw_request
from tests.test_limits import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000

NewPage = Callable[..., Page]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[NewPage]:
    """Open pages in fresh browser contexts; any console error (a CSP refusal, a script error) fails the test."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def open_page(viewport: dict[str, int] = DESKTOP, **options: Any) -> Page:
        context = browser.new_context(viewport=viewport, **options)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(f"console: {message.text}") if _is_problem(message.type, message.text) else None
            ),
        )
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert problems == []


def _is_problem(kind: str, text: str) -> bool:
    # Chromium logs every non-2xx fetch as a console error; the tests provoke those on purpose.
    return kind == "error" and "Failed to load resource" not in text


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


def open_chat(page: Page, url: str) -> None:
    page.goto(url)
    # Loaded: the agents are listed and the log shows the conversation (or its absence). Waits use
    # selectors only: the page's CSP forbids the eval() that Playwright's wait_for_function needs.
    page.locator("#agent option").first.wait_for(state="attached")
    page.locator("#log > :not(.loading)").first.wait_for(state="attached")


def send(page: Page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")


def wait_for_reply(page: Page) -> str:
    """Wait until the newest reply is complete (its meta line shows); its text."""
    page.locator("#log article.assistant:last-of-type .meta").wait_for()
    page.locator("#log[aria-busy=false]").wait_for(state="attached")
    return page.locator("#log .msg.assistant .bubble").last.inner_text()


WATCH_REPLY = """() => {
  window.seen = [];
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll('#log .msg.assistant .bubble');
    const text = bubbles.length ? bubbles[bubbles.length - 1].textContent : '';
    if (text && window.seen[window.seen.length - 1] !== text) window.seen.push(text);
  }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
}"""


def test_tokens_arrive_in_order_and_the_conversation_survives_a_reload(
    server: str, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    tokens = ["Counting", ":", " one", ",", " two", ",", " three", "."]
    fake_ollama.script = Script(tokens=tokens, delay=0.2)
    page = new_page()
    open_chat(page, server + "/")
    assert page.locator("#agent").input_value() == "general"
    page.evaluate(WATCH_REPLY)
    send(page, "Count to three")
    # While the reply streams, the log is busy and the button stops it.
    page.wait_for_selector("#log[aria-busy=true]")
    assert page.locator("#send").inner_text() == "Stop"
    assert wait_for_reply(page) == "Counting: one, two, three."
    seen: list[str] = page.evaluate("window.seen")
    full = "".join(tokens)
    assert seen[-1] == full
    assert all(later.startswith(earlier) and later != earlier for earlier, later in itertools.pairwise(seen))
    assert len(seen) >= 4, f"the reply did not arrive token by token: {seen}"
    assert page.locator("#log").get_attribute("aria-busy") == "false"
    assert "8 tokens" in page.locator("#log .msg.assistant .meta").inner_text()

    conversation_id = page.evaluate("localStorage.getItem('piagent:/:conversation:general')")
    assert conversation_id
    page.reload()
    open_chat(page, server + "/")
    # The history comes back from GET /conversations/{id}.
    assert page.locator("#log .msg.user .bubble").first.inner_text() == "Count to three"
    assert page.locator("#log .msg.assistant .bubble").first.inner_text() == full

    fake_ollama.script = Script(tokens=["Three", ", two, one."])
    send(page, "And back?")
    assert wait_for_reply(page) == "Three, two, one."
    messages = fake_ollama.chat_requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "Count to three"),
        ("assistant", full),
        ("user", "And back?"),
    ]
    assert page.evaluate("localStorage.getItem('piagent:/:conversation:general')") == conversation_id
    screenshot(page, "chat-desktop.png")


def test_new_conversation_starts_without_history(server: str, fake_ollama: FakeModel, new_page: NewPage) -> None:
    page = new_page()
    open_chat(page, server + "/")
    send(page, "first")
    wait_for_reply(page)
    page.click("#new")
    assert page.locator("#log .msg").count() == 0
    assert page.evaluate("localStorage.getItem('piagent:/:conversation:general')") is None
    send(page, "second")
    wait_for_reply(page)
    assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == ["second"]


def test_each_agent_keeps_its_own_conversation(server: str, fake_ollama: FakeModel, new_page: NewPage) -> None:
    page = new_page()
    open_chat(page, server + "/")
    send(page, "hello general")
    wait_for_reply(page)
    page.select_option("#agent", "pirate")
    page.wait_for_selector("#log .empty")
    assert "pirate-model" in page.locator("#agent-info").inner_text()
    send(page, "ahoy")
    wait_for_reply(page)
    assert fake_ollama.chat_requests[-1]["model"] == "pirate-model"
    stored = page.evaluate(
        "[localStorage.getItem('piagent:/:conversation:general'), "
        "localStorage.getItem('piagent:/:conversation:pirate')]"
    )
    assert stored[0]
    assert stored[1]
    assert stored[0] != stored[1]
    page.reload()
    open_chat(page, server + "/")
    assert page.locator("#agent").input_value() == "pirate"


def test_a_phone_screen_shows_code_and_markup_as_text(server: str, fake_ollama: FakeModel, new_page: NewPage) -> None:
    fake_ollama.script = Script(
        tokens=[
            "Free memory:\n\n```bash\n",
            "free -h\n",
            "```\n",
            "Look at **available**. ",
            "<img src=x onerror=alert(1)>",
        ],
        delay=0.05,
    )
    page = new_page(PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    open_chat(page, server + "/")
    send(page, "How much memory is free on my Pi? Please keep the answer short, it is a small screen.")
    wait_for_reply(page)
    reply = page.locator("#log .msg.assistant .bubble")
    assert reply.locator("pre code").inner_text() == "free -h"
    assert reply.locator("pre").get_attribute("data-lang") == "bash"
    assert reply.locator("strong").inner_text() == "available"
    assert "<img src=x onerror=alert(1)>" in reply.inner_text()
    assert page.locator("#log img").count() == 0
    # Nothing is wider than the screen, and every control is on it.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for selector in ("#agent", "#new", "#message", "#send"):
        box = page.locator(selector).bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"], selector
    screenshot(page, "chat-phone.png")


def test_an_unreachable_model_server_is_explained(serve: Any, new_page: NewPage) -> None:
    closed = free_socket()  # bound but never listening: connections are refused
    try:
        with serve(ollama_url=f"http://127.0.0.1:{closed.getsockname()[1]}") as url:
            page = new_page()
            open_chat(page, url + "/")
            send(page, "Are you there?")
            alert = page.locator("#log [role=alert]")
            alert.wait_for()
            assert alert.locator("strong").inner_text() == "The model server (ollama) is not reachable. Is it running?"
            assert page.locator("#log .msg.assistant").count() == 0
            assert "Not sent" in page.locator("#log .msg.user").inner_text()
            # The words are not lost: they are back in the box, ready to send again.
            assert page.locator("#message").input_value() == "Are you there?"
            assert page.locator("#send").inner_text() == "Send"
            screenshot(page, "chat-upstream-down.png")
    finally:
        closed.close()


def test_an_error_in_the_middle_of_a_reply_keeps_the_partial_text(
    server: str, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    fake_ollama.script = Script(tokens=["The answer", " is", " forty"], error_after=2, error="model runner crashed")
    page = new_page()
    open_chat(page, server + "/")
    send(page, "What is the answer?")
    alert = page.locator("#log [role=alert]")
    alert.wait_for()
    assert alert.locator("strong").inner_text() == "The model server (ollama) answered with an error."
    assert alert.locator(".detail").inner_text() == "ollama: model runner crashed"
    assert page.locator("#log .msg.assistant .bubble").inner_text() == "The answer is"


def test_a_missing_model_says_how_to_pull_it(server: str, fake_ollama: FakeModel, new_page: NewPage) -> None:
    fake_ollama.strict_models = True
    fake_ollama.models = []
    page = new_page()
    open_chat(page, server + "/")
    send(page, "hi")
    alert = page.locator("#log [role=alert] strong")
    alert.wait_for()
    assert (
        alert.inner_text() == "The model test-model is not installed. On the model server, run: ollama pull test-model"
    )


def test_stop_ends_the_reply_and_the_server_keeps_what_was_said(
    server: str, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    fake_ollama.script = Script(tokens=["one", " two", " three", " four", " five"], delay=0.5)
    page = new_page()
    open_chat(page, server + "/")
    send(page, "count slowly")
    page.locator("#log .msg.assistant:not(.pending) .bubble").wait_for()
    page.click("#send")
    page.wait_for_selector("#log .msg.assistant .meta")
    assert page.locator("#log .msg.assistant .meta").inner_text() == "Stopped"
    assert fake_ollama.wait_for_client_close(timeout=5, after=0) is not None
    fake_ollama.script = Script(tokens=["ok"])
    send(page, "go on")
    wait_for_reply(page)
    history = fake_ollama.chat_requests[-1]["messages"]
    assert history[2]["role"] == "assistant"
    assert history[2]["content"].startswith("one")


class RequireKey:
    """A stand-in for piagent's API keys (built in parallel), following their contract: Bearer, 401, open /."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in ("/", "/health"):
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
            self.seen.append(authorization)
            if authorization != f"Bearer {self.key}":
                body = {"error": {"code": "unauthorized", "message": "a valid API key is required"}}
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def test_a_server_with_api_keys_asks_for_one_and_remembers_it(
    make_settings: MakeSettings, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    guarded = RequireKey(create_app(make_settings()), "pi-key-123")
    with serve_in_thread(guarded) as url:
        page = new_page()
        page.goto(url + "/")
        dialog = page.locator("#key-dialog")
        dialog.wait_for()
        assert "kept only in this browser" in dialog.inner_text()
        screenshot(page, "chat-api-key.png")
        page.fill("#key-input", "wrong-key")
        page.press("#key-input", "Enter")
        page.locator("#key-note", has_text="did not accept").wait_for()
        page.fill("#key-input", "pi-key-123")
        page.click("#key-dialog button[type=submit]")
        page.wait_for_selector("#log .empty")
        assert page.evaluate("localStorage.getItem('piagent:/:apiKey')") == "pi-key-123"
        send(page, "hello")
        assert wait_for_reply(page) == "Hello, world!"
        assert guarded.seen[-1] == "Bearer pi-key-123"
        page.reload()
        open_chat(page, url + "/")
        assert not dialog.is_visible()
        assert page.locator("#key").is_visible()


def test_cancelling_the_key_dialog_explains_why_nothing_works(
    make_settings: MakeSettings, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    with serve_in_thread(RequireKey(create_app(make_settings()), "k")) as url:
        page = new_page()
        page.goto(url + "/")
        page.locator("#key-dialog").wait_for()
        page.click("#key-cancel")
        alert = page.locator("#log [role=alert] strong")
        alert.wait_for()
        assert alert.inner_text() == "This server needs an API key. Use the “API key” button to enter it."


def with_conversations(app: ASGIApp, turns: list[dict[str, Any]]) -> Starlette:
    """piagent behind a stand-in `GET /conversations/{id}` that follows the contract (the API is built in parallel)."""

    async def conversation(request: Request) -> JSONResponse:
        conversation_id = request.path_params["conversation_id"]
        if conversation_id != "known-id":
            body = {"error": {"code": "conversation_not_found", "message": f"no conversation {conversation_id!r}"}}
            return JSONResponse(body, status_code=404)
        return JSONResponse({"id": conversation_id, "agent": "general", "updated_at": 1.0e9, "turns": turns})

    return Starlette(
        routes=[Route("/conversations/{conversation_id}", conversation), Mount("/", app=app)],
        lifespan=app.router.lifespan_context,  # type: ignore[attr-defined]
    )


def test_without_the_conversations_api_the_conversation_still_goes_on(
    make_settings: MakeSettings, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    pi = create_app(make_settings())

    async def no_such_route(request: Request) -> JSONResponse:
        return JSONResponse({"error": {"code": "not_found", "message": "no route"}}, status_code=404)

    # An older piagent (or a proxy that passes only /chat): GET /conversations/{id} is a plain 404.
    host = Starlette(
        routes=[Route("/conversations/{conversation_id}", no_such_route), Mount("/", app=pi)],
        lifespan=pi.router.lifespan_context,
    )
    with serve_in_thread(host) as url:
        page = new_page()
        open_chat(page, url + "/")
        send(page, "remember me")
        wait_for_reply(page)
        page.reload()
        open_chat(page, url + "/")
        assert "does not show earlier messages" in page.locator("#log .notice").inner_text()
        send(page, "do you?")
        wait_for_reply(page)
        assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == [
            "remember me",
            "Hello, world!",
            "do you?",
        ]


def test_the_history_of_a_conversation_is_shown_as_text(
    make_settings: MakeSettings, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    turns = [
        {"role": "user", "text": "What is <b>bold</b>?", "at": 1.0e9, "interrupted": False},
        {"role": "assistant", "text": "It is markup, cut", "at": 1.0e9, "interrupted": True},
    ]
    with serve_in_thread(with_conversations(create_app(make_settings()), turns)) as url:
        page = new_page()
        page.add_init_script("localStorage.setItem('piagent:/:conversation:general', 'known-id')")
        open_chat(page, url + "/")
        assert page.locator("#log .msg.user .bubble").inner_text() == "What is <b>bold</b>?"
        assert page.locator("#log b").count() == 0
        assistant = page.locator("#log .msg.assistant")
        assert assistant.locator(".bubble").inner_text() == "It is markup, cut"
        assert assistant.locator(".meta").inner_text() == "Interrupted"
        send(page, "go on")
        wait_for_reply(page)
        assert fake_ollama.chat_requests[-1]["messages"][-1]["content"] == "go on"


def test_a_forgotten_conversation_starts_anew(
    make_settings: MakeSettings, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    with serve_in_thread(with_conversations(create_app(make_settings()), [])) as url:
        page = new_page()
        page.add_init_script(
            "if (!sessionStorage.getItem('seeded')) {"
            " sessionStorage.setItem('seeded', '1');"
            " localStorage.setItem('piagent:/:conversation:general', 'expired-id'); }"
        )
        open_chat(page, url + "/")
        assert "no longer on the server" in page.locator("#log .notice").inner_text()
        assert page.evaluate("localStorage.getItem('piagent:/:conversation:general')") is None


def test_the_page_works_mounted_under_a_prefix(
    make_settings: MakeSettings, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    pi = create_app(make_settings())
    host = Starlette(routes=[Mount("/pi", app=pi)], lifespan=pi.router.lifespan_context)
    with serve_in_thread(host) as url:
        page = new_page()
        open_chat(page, url + "/pi/")
        send(page, "hi")
        assert wait_for_reply(page) == "Hello, world!"
        assert page.evaluate("localStorage.getItem('piagent:/pi/:conversation:general')")


SSE_SPLITS = """(stream) => {
  const run = (chunks) => {
    const events = [];
    const push = window.piagent.createSSEParser((type, data) => events.push([type, data]));
    chunks.forEach(push);
    return JSON.stringify(events);
  };
  const whole = run([stream]);
  const broken = [];
  for (let i = 0; i <= stream.length; i++) {
    for (let j = i; j <= stream.length; j += 7) {
      const got = run([stream.slice(0, i), stream.slice(i, j), stream.slice(j)]);
      if (got !== whole) broken.push([i, j, got]);
    }
  }
  return {whole: JSON.parse(whole), broken: broken.slice(0, 3)};
}"""


def test_the_sse_parser_gives_the_same_events_however_the_stream_is_cut(server: str, new_page: NewPage) -> None:
    page = new_page()
    open_chat(page, server + "/")
    stream = (
        'event: token\r\ndata: {"event":"token","text":"a\\nb"}\r\n\r\n'
        ": a comment\n\n"
        'event: token\rdata: {"text":"é😀"}\r\r'
        "data: first line\ndata: second line\n\n"
        "event: done\ndata:no-space\n\n"
        "event: ignored-without-data\n\n"
    )
    result = page.evaluate(SSE_SPLITS, stream)
    assert result["broken"] == []
    assert result["whole"] == [
        ["token", json.dumps({"event": "token", "text": "a\nb"}, separators=(",", ":"))],
        ["token", '{"text":"é😀"}'],
        ["message", "first line\nsecond line"],
        ["done", "no-space"],
    ]


def test_the_page_has_labels_for_every_control(server: str, new_page: NewPage) -> None:
    page = new_page()
    open_chat(page, server + "/")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('select, textarea, input, button')]
             .filter((el) => !(el.labels && el.labels.length))
             .filter((el) => !el.getAttribute('aria-label') && !el.textContent.trim())
             .map((el) => el.id)"""
    )
    assert unlabelled == []
    assert page.locator("#log").get_attribute("role") == "log"
    assert page.locator("#log").get_attribute("aria-live") == "polite"


ATTACK = """async (target) => {
  const body = new Blob([JSON.stringify({model: 'general', messages: [{role: 'user', content: 'hi'}], stream: false})]);
  const outcomes = [];
  for (const path of ['/api/chat', '/v1/chat/completions', '/chat']) {
    try {
      await fetch(target + path, {method: 'POST', mode: 'no-cors', body});
      outcomes.push('sent');
    } catch (error) {
      outcomes.push('failed');
    }
  }
  return outcomes;
}"""


def test_another_sites_page_cannot_make_piagent_call_the_model(
    server: str, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    """A page on another origin posts bodies without a Content-Type (no preflight) to every door."""
    elsewhere = Starlette(routes=[Route("/", lambda request: HTMLResponse("<p>a page elsewhere</p>"))])
    with serve_in_thread(elsewhere) as url:
        page = new_page()
        page.goto(url.replace("127.0.0.1", "localhost") + "/")
        outcomes = page.evaluate(ATTACK, server)
    assert outcomes == ["sent", "sent", "sent"]  # opaque answers: the page learns nothing either way
    assert fake_ollama.chat_requests == []
    # The same body from piagent's own page is served: the guard refused the origin, not the request.
    page = new_page()
    open_chat(page, server + "/")
    assert page.evaluate(ATTACK, server) == ["sent", "sent", "sent"]
    assert len(fake_ollama.chat_requests) == 2  # /api/chat and /v1/chat/completions; /chat wants `message`


def test_a_reply_waiting_for_the_model_shows_its_place_in_line(
    serve_full: Any, fake_ollama: FakeModel, new_page: NewPage
) -> None:
    fake_ollama.script = Script(stall_after=0)
    with serve_full(max_concurrent=1, max_queue=3) as served:
        limiter = served.runtime.chat.limiter
        running = send_raw_request(served.url, {"message": "running", "stream": True})
        assert fake_ollama.wait_for_requests(1, timeout=5)
        ahead = [send_raw_request(served.url, {"message": f"queued {n}", "stream": True}) for n in (1, 2)]
        wait_for(lambda: limiter.waiting == 2)
        page = new_page()
        open_chat(page, served.url + "/")
        send(page, "my turn?")
        waiting = page.locator("#log .msg.assistant .meta.queued")
        waiting.filter(has_text="waiting, 2 ahead").wait_for()
        screenshot(page, "chat-queued.png")
        ahead[0].close()
        waiting.filter(has_text="waiting, 1 ahead").wait_for()
        ahead[1].close()
        waiting.filter(has_text="waiting, next in line").wait_for()
        fake_ollama.script = Script(tokens=["Your", " turn."])
        running.close()
        assert wait_for_reply(page) == "Your turn."
        assert waiting.count() == 0
