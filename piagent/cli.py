"""The `piagent` command: serve (the default), list the agents, show the configuration, check the set-up."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from piagent.exceptions import PiagentError
from piagent.settings import Settings
from piagent.version import __version__

if TYPE_CHECKING:
    from piagent.agents import Agents
    from piagent.http.requests import Runtime

logger = logging.getLogger("piagent.check")


def _log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's own logging set-up, with piagent's loggers printed the same way (as JSON lines with `json`)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["piagent"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    # Every line logged while serving a request carries its id (piagent.logs), uvicorn's own lines included.
    config["filters"] = {"request_id": {"()": "piagent.logs.RequestIdFilter"}}
    for name in ("default", "access"):
        config["handlers"][name]["filters"] = ["request_id"]
        if log_format == "json":
            config["formatters"][name] = {"()": "piagent.logs.JsonFormatter"}
        else:
            config["formatters"][name]["fmt"] += "%(request_tag)s"
    return config


def serve(settings: Settings) -> int:
    """Run piagent under uvicorn (httptools and uvloop when installed) until SIGTERM or Ctrl+C.

    On the signal it stops accepting, gives running generations `PIAGENT_SHUTDOWN_GRACE` seconds,
    ends the rest cleanly and closes the upstream client (see piagent.server).
    """
    from piagent.deferred import defer_uvicorn_cli

    defer_uvicorn_cli()  # this process never uses uvicorn's command line: click and multiprocessing stay unloaded
    import uvicorn

    from piagent.http.app import create_app
    from piagent.server import build_server, edge_limits, edge_protocol

    app = create_app(settings)
    limits = edge_limits(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # With JSON logs, piagent writes the access line itself (piagent.http.requestids), with the request id.
        access_log=settings.access_log and settings.log_format == "text",
        log_config=_log_config(settings.log_level, settings.log_format),
        server_header=False,
        # piagent serves no WebSocket: "auto" would import websockets or wsproto whenever one is installed.
        ws="none",
        # Heads, slow clients and the connection cap are bounded in piagent's protocol classes.
        http=edge_protocol(limits),
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
    notifier = watchdog = None
    if "NOTIFY_SOCKET" in os.environ:  # started by systemd with Type=notify
        from piagent.systemd import Notifier, watchdog_interval

        notifier = Notifier.from_env(os.environ)
        watchdog = watchdog_interval(os.environ, os.getpid())

    async def check_upstream_once_serving() -> None:
        await warn_upstream(settings, server.runtime())

    after_start = check_upstream_once_serving if settings.startup_check else None
    server = build_server(config, settings.shutdown_grace, notifier, watchdog, after_start)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl+C forces the exit: no traceback for it
            server.run()
    finally:
        if notifier is not None:
            notifier.close()
    return 0 if server.started else 3


async def warn_upstream(settings: Settings, runtime: Runtime | None = None) -> None:
    """Once serving, check the model servers as `piagent check` does and log each problem with its fix.

    A Pi owner who runs piagent before the model server then reads why in the log at once, instead of a
    bare connection error on the first request. It runs beside serving, so start-up never waits for it.
    With the server's `runtime` it asks through the server's own upstream client, about the agents it serves.
    """
    from piagent.checks import Report, check_upstream

    report = Report()
    agents = runtime.agents if runtime is not None else _agents_or_none(settings)
    # A client of the check's own would be httpx's default transport: httpcore, h11, certifi and a TLS context
    # loaded for one check, ~2.3 MiB of idle RSS for the life of the process.
    client = runtime.client if runtime is not None else None
    await check_upstream(settings, agents, report, client=client)
    for problem in report.problems:
        logger.warning("%s (`piagent check` says more)", problem)


def _agents_or_none(settings: Settings) -> Agents | None:
    from piagent.agents import load_agents

    try:
        return load_agents(
            settings.prompts_dir, settings.default_agent, settings.model, settings.memory_max_turns, settings.provider
        )
    except PiagentError:  # already refused at start-up; never here in practice
        return None


def list_agents(settings: Settings) -> int:
    """Print each agent with its model and description."""
    from piagent.agents import load_agents

    agents = load_agents(
        settings.prompts_dir, settings.default_agent, settings.model, settings.memory_max_turns, settings.provider
    )
    width = max(len(name) for name in agents)
    for agent in agents.values():
        default = " (default)" if agent.name == agents.default else ""
        print(f"{agent.name:<{width}}  {agent.model:<20}  {agent.description}{default}")
    return 0


def list_tools(settings: Settings) -> int:
    """Print every tool the owner made available and what it can reach, then each agent's tools."""
    from piagent.agents import load_agents, tool_names
    from piagent.tools.registry import describe_tools

    rows = describe_tools(settings)
    width = max(len(name) for name, _, _ in rows)
    print("Available tools:")
    for name, kind, reach in rows:
        print(f"  {name:<{width}}  {kind:<8}  {reach}")
    agents = load_agents(
        settings.prompts_dir, settings.default_agent, settings.model, settings.memory_max_turns, settings.provider
    )
    print("Agents:")
    for agent in agents.values():
        print(f"  {agent.name}: {', '.join(tool_names(agent)) or 'no tools'}")
    return 0


def show_config(settings: Settings) -> int:
    """Print every setting as it was resolved from config.env and the environment."""
    for key, value in settings.describe():
        print(f"{key}={value}")
    return 0


def run_checks(settings: Settings) -> int:
    """Check the set-up (settings, agents, model server, memory store); non-zero with one line per problem."""
    from piagent.checks import check

    return check(settings, sys.stdout, sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `piagent` and `python -m piagent`."""
    parser = argparse.ArgumentParser(prog="piagent", description="A small, fast agent server in front of a local LLM.")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=("serve", "agents", "tools", "config", "check"),
        help="serve (default): run the server; agents: list the agents; tools: list the tools and each agent's; "
        "config: print the settings (secrets masked); check: try the settings, agents, tools, model server and "
        "memory store, and say what to fix",
    )
    parser.add_argument("--version", action="version", version=f"piagent {__version__}")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        commands = {
            "serve": serve,
            "agents": list_agents,
            "tools": list_tools,
            "config": show_config,
            "check": run_checks,
        }
        return commands[args.command](settings)
    except PiagentError as exc:
        print(f"piagent: {exc.message}", file=sys.stderr)
        return 2
