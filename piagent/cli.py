"""The `piagent` command: serve (the default), list the agents, show the configuration, check the set-up."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from piagent.exceptions import PiagentError
from piagent.settings import Settings
from piagent.version import __version__

if TYPE_CHECKING:
    from piagent.agents import Agents
    from piagent.http.requests import Runtime

logger = logging.getLogger("piagent.check")


def configure_logging(level: str, log_format: str = "text") -> None:
    """uvicorn's own logging set-up (its LOGGING_CONFIG), with piagent's loggers printed the same way.

    Every line logged while serving a request carries its id (piagent.logs), uvicorn's own lines included;
    with `json` each line is a JSON object. Set up here rather than by uvicorn's dictConfig, whose
    logging.config would bring logging.handlers, pickle and socketserver (piagent.deferred).
    """
    from uvicorn.logging import AccessFormatter, DefaultFormatter

    from piagent.logs import JsonFormatter, RequestIdFilter

    default: logging.Formatter
    access: logging.Formatter
    if log_format == "json":
        default, access = JsonFormatter(), JsonFormatter()
    else:
        default = DefaultFormatter("%(levelprefix)s %(message)s%(request_tag)s", use_colors=None)
        access = AccessFormatter('%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s%(request_tag)s')
    request_ids = RequestIdFilter()
    handlers: dict[str, logging.Handler] = {}
    for name, stream, formatter in (("default", sys.stderr, default), ("access", sys.stdout, access)):
        handlers[name] = handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(request_ids)
    for name, handler_name, logger_level in (
        ("uvicorn", "default", "INFO"),
        ("uvicorn.error", None, "INFO"),
        ("uvicorn.access", "access", "INFO"),
        ("piagent", "default", level.upper()),
    ):
        configured = logging.getLogger(name)
        configured.handlers = [handlers[handler_name]] if handler_name else []
        configured.setLevel(logger_level)
        configured.propagate = handler_name is None


def serve(settings: Settings) -> int:
    """Run piagent under uvicorn (httptools and uvloop when installed) until SIGTERM or Ctrl+C.

    On the signal it stops accepting, gives running generations `PIAGENT_SHUTDOWN_GRACE` seconds,
    ends the rest cleanly and closes the upstream client (see piagent.server).
    """
    from piagent.deferred import defer_unused_modules

    # This process never uses uvicorn's command line nor logging.config: click, multiprocessing, pickle stay out.
    defer_unused_modules()
    import uvicorn

    from piagent.http.app import create_app
    from piagent.server import build_server, edge_limits, edge_protocol

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    limits = edge_limits(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # With JSON logs, piagent writes the access line itself (piagent.http.requestids), with the request id.
        access_log=settings.access_log and settings.log_format == "text",
        log_config=None,  # set up by configure_logging above
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


COMMANDS = ("serve", "agents", "tools", "config", "check")


def _parse(argv: Sequence[str]) -> str:
    """The command named in `argv`, by argparse: `--help`, `--version` and a wrong word are answered here."""
    import argparse

    parser = argparse.ArgumentParser(prog="piagent", description="A small, fast agent server in front of a local LLM.")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=COMMANDS,
        help="serve (default): run the server; agents: list the agents; tools: list the tools and each agent's; "
        "config: print the settings (secrets masked); check: try the settings, agents, tools, model server and "
        "memory store, and say what to fix",
    )
    parser.add_argument("--version", action="version", version=f"piagent {__version__}")
    command: str = parser.parse_args(argv).command
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `piagent` and `python -m piagent`."""
    args = sys.argv[1:] if argv is None else list(argv)
    # `piagent` and `piagent serve` (as systemd runs it) need no parser: argparse and gettext, 0.24 MiB of the
    # server's idle RSS, are imported only for anything else.
    command = "serve" if args in ([], ["serve"]) else _parse(args)
    try:
        settings = Settings.from_env()
        commands = {
            "serve": serve,
            "agents": list_agents,
            "tools": list_tools,
            "config": show_config,
            "check": run_checks,
        }
        return commands[command](settings)
    except PiagentError as exc:
        print(f"piagent: {exc.message}", file=sys.stderr)
        return 2
