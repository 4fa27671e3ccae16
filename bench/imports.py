"""Resident memory import by import, so a regression in idle RSS names the import that brought it.

``python bench/imports.py`` starts one fresh interpreter (the one running this script) that imports piagent's
start-up chain step by step, reading VmRSS from /proc after each step, and prints a Markdown table: RSS after the
step, what the step added, how many modules it loaded, and the notable standard-library modules among them (the
ones a lean server would rather not load: urllib.request, http.client, email, click, ...). Steps are cumulative,
so each row is what that import costs on top of everything above it. ``--json`` prints the raw figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# piagent's start-up chain in the order it is imported; later steps pay only for what earlier ones did not load.
STEPS = (
    "asyncio",
    "ssl",
    "uvloop",
    "msgspec",
    "anyio",
    "httptools",
    "httpx",
    "starlette.applications",
    "uvicorn",
    "piagent.settings",
    "piagent.transport",
    "piagent.providers.factory",
    "piagent.stores.memory",
    "piagent.chat",
    "piagent.http.app",
    "piagent.server",
    "piagent.cli",
)
NOTABLE = (
    "urllib.request",
    "http.client",
    "http.cookiejar",
    "email",
    "click",
    "multiprocessing",
    "logging.config",
    "pickle",
    "argparse",
    "websockets",
    "wsproto",
    "zipfile",
    "rich",
    "pygments",
    "h11",
    "httpcore",
)

_PROBE = r"""
import importlib, importlib.util, json, os, sys
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
rows = [{"step": "(interpreter)", "rss_kib": rss(), "modules": len(sys.modules), "new": []}]
before = set(sys.modules)
# What piagent/__init__.py does before anything imports httpx: httpx's command-line tool is never loaded.
sys.modules.setdefault("httpx._main", None)
# What `piagent serve` does before it imports uvicorn (piagent/deferred.py, run from its file so that piagent's
# package is not imported yet): uvicorn's command line (click, multiprocessing) and logging.config (logging.handlers,
# pickle, socketserver) load on first use only.
folder = importlib.util.find_spec("piagent").submodule_search_locations[0]
spec = importlib.util.spec_from_file_location("_piagent_deferred", os.path.join(folder, "deferred.py"))
deferred = importlib.util.module_from_spec(spec)
spec.loader.exec_module(deferred)
deferred.defer_unused_modules()
def loaded():
    # A stand-in of piagent.deferred (no __spec__) is no module loaded: only its real import would be.
    return {name for name, module in sys.modules.items() if module is None or vars(module).get("__spec__") is not None}
rows.append({"step": "(piagent's import guards, logging)", "rss_kib": rss(), "modules": len(sys.modules),
             "new": sorted(loaded() - before)})
for name in json.loads(sys.argv[1]):
    before = loaded()
    importlib.import_module(name)
    rows.append({"step": name, "rss_kib": rss(), "modules": len(sys.modules), "new": sorted(loaded() - before)})
print(json.dumps(rows))
"""


def compile_bytecode(python: str) -> None:
    """Write piagent's .pyc files first, as `pip install` does (bench/run.py does the same before a run)."""
    where = "import importlib.util; print(importlib.util.find_spec('piagent').submodule_search_locations[0])"
    folder = subprocess.run([python, "-c", where], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", folder], check=True)


def measure(python: str) -> list[dict[str, object]]:
    """One fresh interpreter importing every step in turn."""
    out = subprocess.run([python, "-c", _PROBE, json.dumps(STEPS)], capture_output=True, text=True, check=True)
    rows: list[dict[str, object]] = json.loads(out.stdout)
    return rows


def render(rows: list[dict[str, object]]) -> str:
    """The Markdown table."""
    lines = ["| import | RSS after (MiB) | added (MiB) | modules added | notable among them |", "|---|---|---|---|---|"]
    previous = None
    for row in rows:
        rss = int(str(row["rss_kib"])) / 1024
        added = "" if previous is None else f"{rss - previous:+.1f}"
        new = [str(name) for name in row["new"]]  # type: ignore[attr-defined]
        tops = {name.split(".")[0] for name in new}
        notable = sorted({name for name in new if name in NOTABLE} | tops & set(NOTABLE))
        shown = ", ".join(notable)
        count = "" if previous is None else str(len(new))
        lines.append(f"| `{row['step']}` | {rss:.1f} | {added} | {count} | {shown} |")
        previous = rss
    return "\n".join(lines)


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure (with piagent installed)")
    parser.add_argument("--json", action="store_true", help="print the raw figures")
    parser.add_argument("--source-only", action="store_true", help="do not compile piagent's bytecode first")
    args = parser.parse_args()
    if not args.source_only:
        compile_bytecode(args.python)
    rows = measure(args.python)
    print(json.dumps(rows, indent=1) if args.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
