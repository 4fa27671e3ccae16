"""uvicorn without its command line until something uses it: idle memory `piagent serve` never needs.

`import uvicorn` runs `from uvicorn.main import Server, main, run`, and uvicorn.main imports click, the reload and
worker supervisors and multiprocessing (~1.2 MiB of idle RSS and 27 modules, bench/imports.py) only for
`uvicorn.main` (the command line) and `uvicorn.run`, which piagent's own process never calls: it builds a
`uvicorn.Config` and a Server. `defer_uvicorn_cli()` puts a stand-in for uvicorn.main in sys.modules first; the
`piagent` command calls it in its own process only, before uvicorn is imported, so a host app that mounts piagent
keeps uvicorn exactly as it is. The stand-in hands out uvicorn.server's `Server` (the class uvicorn.main
re-exports) and loads the real module on first use of anything else; `uvicorn.main` and `uvicorn.run` stay
callable and become the real ones then.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_MODULE = "uvicorn.main"


def defer_uvicorn_cli() -> None:
    """Before uvicorn is first imported: uvicorn.main (click, multiprocessing) loads on first use, not at import."""
    if "uvicorn" not in sys.modules and _MODULE not in sys.modules:
        sys.modules[_MODULE] = _DeferredMain(_MODULE)


def _load() -> types.ModuleType:
    """The real uvicorn.main, imported in the stand-in's place if it is still there."""
    if not isinstance(sys.modules.get(_MODULE), _DeferredMain):
        return importlib.import_module(_MODULE)
    del sys.modules[_MODULE]
    module = importlib.import_module(_MODULE)
    # The import bound `uvicorn.main` to the module; uvicorn/__init__ rebinds the names to the command and
    # `run` right after its own import of it, so do the same.
    package = sys.modules["uvicorn"]
    setattr(package, "main", module.main)  # noqa: B010  # a module's attributes, set as its __init__ would
    setattr(package, "run", module.run)  # noqa: B010
    return module


class _DeferredMain(types.ModuleType):
    """Stands in for uvicorn.main until something other than `Server` is read from it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # `from uvicorn.main import ...` looks up `__path__` first: a plain module has none, nothing to load.
            raise AttributeError(name)
        if name == "Server":
            from uvicorn.server import Server

            return Server
        if name in ("main", "run"):
            return _Deferred(name)
        return getattr(_load(), name)


class _Deferred:
    """`uvicorn.main` or `uvicorn.run` before uvicorn.main is loaded: a call or an attribute read loads it."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the real `main` or `run`."""
        return getattr(_load(), self._name)(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(getattr(_load(), self._name), attribute)

    def __repr__(self) -> str:
        return f"<uvicorn.main.{self._name}, loaded on first use>"
