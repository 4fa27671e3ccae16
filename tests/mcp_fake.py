"""A hand-written stdio MCP server that misbehaves on purpose: `python tests/mcp_fake.py <mode>`.

It answers `initialize` properly (unless the mode is about the handshake) and lists one tool, `go`;
calling `go` shows the misbehaviour, calling `cancelled` lists the request ids the client cancelled.
Modes: ok, crash, env, grow, hang, garbage, long, wrong-id, version, silent, pages, ping,
oversize-tool, bad-schema.
"""

from __future__ import annotations

import json
import os
import sys


def send(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def tool(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "description": f"The {name} tool.", "inputSchema": {"type": "object"}, **extra}


def list_tools(mode: str, params: dict[str, object], grown: bool) -> dict[str, object]:
    if mode == "pages":
        # Three pages of two tools, then a page that repeats its cursor (a loop piagent must not follow).
        page = int(str(params.get("cursor", "0")))
        result: dict[str, object] = {"tools": [tool(f"t{page * 2}"), tool(f"t{page * 2 + 1}")]}
        result["nextCursor"] = str(page + 1) if page < 3 else "3"
        return result
    if mode == "oversize-tool":
        return {"tools": [tool("big", description="x" * 5000), tool("go"), tool("dotted.name/x")]}
    if mode == "bad-schema":
        return {"tools": [{"name": "go", "inputSchema": "not an object"}]}
    if mode == "grow" and grown:
        return {"tools": [tool("go"), tool("extra")]}
    return {"tools": [tool("go")]}


def main() -> None:
    mode = sys.argv[1]
    pending: object = None  # the call waiting for the client's replies (mode ping)
    replies: dict[object, dict[str, object]] = {}
    cancelled: list[object] = []  # request ids the client gave up on, told by notifications/cancelled
    grown = False  # mode grow: calling `go` adds a tool and says so
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if method is None:
            # The client's replies to the two requests of mode `ping`; the call is answered once both came.
            replies[request_id] = message
            if pending is not None and {"srv-1", "srv-2"} <= replies.keys():
                text = f"pong: {replies['srv-1'].get('result')}; sampling: {replies['srv-2'].get('error')}"
                send({"jsonrpc": "2.0", "id": pending, "result": {"content": [{"type": "text", "text": text}]}})
            continue
        if method == "notifications/cancelled":
            cancelled.append(message["params"]["requestId"])
        if request_id is None:
            continue
        if method == "initialize":
            if mode == "silent":
                continue
            version = "1999-01-01" if mode == "version" else message["params"]["protocolVersion"]
            info = {"name": "fake", "version": "0"}
            send({"jsonrpc": "2.0", "id": request_id, "result": {"protocolVersion": version, "serverInfo": info}})
        elif method == "tools/list":
            result = list_tools(mode, message.get("params") or {}, grown)
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "tools/call" and message["params"]["name"] == "cancelled":
            content = [{"type": "text", "text": json.dumps(cancelled)}]
            send({"jsonrpc": "2.0", "id": request_id, "result": {"content": content}})
        elif method == "tools/call":
            if mode == "garbage":
                sys.stdout.write("this is not json\n")
            elif mode == "long":
                content = [{"type": "text", "text": "x" * 100_000}]
                send({"jsonrpc": "2.0", "id": request_id, "result": {"content": content}})
            elif mode == "grow":
                grown = True
                send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                send({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": "ok"}]}})
            elif mode == "crash":
                os._exit(3)
            elif mode == "env":
                content = [{"type": "text", "text": json.dumps(dict(os.environ), sort_keys=True)}]
                send({"jsonrpc": "2.0", "id": request_id, "result": {"content": content}})
            elif mode == "hang":
                pass  # never answers
            elif mode == "wrong-id":
                send({"jsonrpc": "2.0", "id": 999, "result": {"content": []}})
            elif mode == "ping":
                pending = request_id
                send({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"})
                send({"jsonrpc": "2.0", "id": "srv-2", "method": "sampling/createMessage", "params": {}})
                send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}})
            else:
                send({"jsonrpc": "2.0", "id": request_id, "result": {"content": [{"type": "text", "text": "ok"}]}})
            sys.stdout.flush()


if __name__ == "__main__":
    main()
