"""What piagent loads: nothing of httpx's or uvicorn's command-line tools, no WebSocket library, whatever is installed;
and a host app that imports piagent keeps uvicorn as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.fakemodel import FakeModel
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_importing_piagent_loads_no_cli_of_httpx() -> None:
    # rich and pygments are installed here (test tools need them), so httpx would import them for its CLI.
    code = (
        "import sys, importlib.util\n"
        "assert importlib.util.find_spec('rich') is not None and importlib.util.find_spec('pygments') is not None\n"
        "import piagent, piagent.cli, httpx\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'rich', 'pygments'}), httpx.Client.__name__)\n"
    )
    assert _run(code).split() == ["[]", "Client"]


# A started `piagent` (the shipped agents and tools file: the `pi` agent has tools) that, once it answers /health,
# the chat page and one chat reply, and its start-up check has warned of the model not pulled, prints the
# top-level names of what it has loaded and exits.
_STARTED = """
import json, logging, os, socket, sys, threading, time

warned = threading.Event()

def note_warning(record):
    if "is not pulled" in record.getMessage():
        warned.set()
    return True

# A filter, not a handler: uvicorn's logging set-up keeps the logger and its filters but drops its handlers.
logging.getLogger("piagent.check").addFilter(note_warning)

def get(path, body=None):
    with socket.create_connection(("127.0.0.1", int(os.environ["PIAGENT_PORT"])), timeout=5) as sock:
        head = f"{'POST' if body else 'GET'} {path} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n"
        if body:
            head += f"Content-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n"
        sock.sendall(head.encode() + b"\\r\\n" + (body or b""))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b" ", 2)[1]

def probe():
    for _ in range(300):
        try:
            if get("/health") == b"200":
                break
        except OSError:
            pass
        time.sleep(0.05)
    statuses = [get("/").decode(), get("/chat", b'{"message": "How hot is it?", "agent": "pi"}').decode()]
    warned.wait(10)
    loaded = sorted(name for name, module in sys.modules.items() if module is not None and "__file__" in vars(module))
    print(json.dumps({"statuses": statuses, "warned": warned.is_set(), "loaded": loaded}))
    sys.stdout.flush()
    os._exit(0)

threading.Thread(target=probe, daemon=True).start()
sys.argv = ["piagent"]
from piagent.cli import main
main()
"""


def test_a_started_server_loads_no_websocket_library_no_cli_no_second_http_stack_and_no_zipfile(
    fake_ollama: FakeModel, tmp_path: Path
) -> None:
    code = "import importlib.util; print(importlib.util.find_spec('websockets') is not None)"
    assert _run(code) == "True\n", "websockets is installed here (a test dependency needs it), so uvicorn would load it"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    env.update(
        PIAGENT_PORT=str(free_port()),
        PIAGENT_OLLAMA_URL=fake_ollama.url,
        PIAGENT_PROMPTS_DIR=str(ROOT / "prompts"),
        PIAGENT_TOOLS_FILE=str(ROOT / "prompts" / "tools.toml"),
        PIAGENT_MODEL="not-pulled:1b",
        PIAGENT_STARTUP_CHECK="true",
    )
    report = json.loads(_run(_STARTED, env, tmp_path).strip().split("\n")[-1])
    assert report["statuses"] == ["200", "200"]
    assert report["warned"]
    loaded = set(report["loaded"])  # modules loaded from a file (a stand-in of piagent.deferred is none)
    tops = {name.split(".")[0] for name in loaded}
    assert {"piagent", "uvicorn", "starlette", "httpx", "logging"} <= tops
    assert tops.isdisjoint({"websockets", "wsproto", "click", "multiprocessing", "zipfile", "pickle", "socketserver"})
    assert tops.isdisjoint({"argparse", "gettext"})  # `piagent` alone needs no parser
    assert loaded.isdisjoint({"uvicorn.main", "uvicorn.protocols.websockets", "logging.config", "logging.handlers"})
    # The start-up check asked through the server's own client: httpx's default transport was never loaded.
    assert tops.isdisjoint({"httpcore", "h11", "h2", "certifi"})


def test_after_piagent_serve_defers_uvicorns_command_line_and_logging_config_both_still_work() -> None:
    code = """
import os, signal, socket, sys, threading
import logging
from piagent.deferred import defer_unused_modules
defer_unused_modules()
import uvicorn
import uvicorn.server
assert "click" not in sys.modules and "multiprocessing" not in sys.modules and "pickle" not in sys.modules
assert uvicorn.Server is uvicorn.server.Server

async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"up"})

listener = socket.create_server(("127.0.0.1", 0))  # bound here: no other process can take the port meanwhile

def stop_when_served():
    with socket.create_connection(listener.getsockname(), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        print(sock.recv(1024).split(b"\\r\\n")[0].decode(), flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # uvicorn shuts down (and may raise it again once its handler is gone)

signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the parent left SIGINT ignored
threading.Thread(target=stop_when_served, daemon=True).start()
try:
    uvicorn.run(app, fd=listener.fileno(), log_level="warning")
except KeyboardInterrupt:
    pass
import click
from uvicorn.main import STARTUP_FAILURE
assert isinstance(uvicorn.main, click.Command) and uvicorn.run is sys.modules["uvicorn.main"].run
import logging.config
logging.config.dictConfig({"version": 1, "loggers": {"deferred": {"level": "ERROR"}}})
assert logging.getLogger("deferred").level == logging.ERROR and "__file__" in vars(sys.modules["logging.config"])
try:
    uvicorn.main(["--help"])
except SystemExit as exc:
    print("exit", exc.code)
"""
    output = _run(code)
    assert output.startswith("HTTP/1.1 200 OK\n")
    assert "Usage: " in output
    assert output.endswith("exit 0\n")


def test_a_host_app_that_imports_piagent_gets_uvicorn_as_it_is() -> None:
    code = """
import sys, types
import piagent, piagent.cli, piagent.http.app
import click, uvicorn, uvicorn.config
assert type(sys.modules["uvicorn.main"]) is types.ModuleType and type(sys.modules["logging.config"]) is types.ModuleType
assert isinstance(uvicorn.main, click.Command) and uvicorn.run is sys.modules["uvicorn.main"].run
print("ok")
"""
    assert _run(code) == "ok\n"
