"""Modules `piagent serve` never uses, loaded on first use instead of at import: idle memory it need not pay.

`import uvicorn` runs `from uvicorn.main import Server, main, run`, and uvicorn.main imports click, the reload and
worker supervisors and multiprocessing (~1.2 MiB of idle RSS and 27 modules, bench/imports.py) only for
`uvicorn.main` (the command line) and `uvicorn.run`; uvicorn.config's `import logging.config` brings
logging.handlers, pickle and socketserver (~0.7 MiB) for a dictConfig piagent does without (piagent.cli sets
its handlers up itself). Neither is called in piagent's own process: it builds a `uvicorn.Config` and a Server.

`defer_unused_modules()` puts a stand-in for each in sys.modules first; the `piagent` command calls it in its
own process only, before uvicorn is imported, so a host app that mounts piagent keeps both exactly as they are.
A stand-in loads the real module on the first read of any attribute but a dunder (the import system's probes);
uvicorn.main's hands out uvicorn.server's `Server` (the class it re-exports) without loading, and its `main` and
`run` stay callable and become the real ones then.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any

_UVICORN_MAIN = "uvicorn.main"
_LOGGING_CONFIG = "logging.config"


def defer_unused_modules() -> None:
    """Before uvicorn is first imported: uvicorn.main and logging.config load on first use, not at import."""
    if "uvicorn" in sys.modules:
        return
    if _UVICORN_MAIN not in sys.modules:
        sys.modules[_UVICORN_MAIN] = _UvicornMain(_UVICORN_MAIN)
    if _LOGGING_CONFIG not in sys.modules:
        stand_in = _Deferred(_LOGGING_CONFIG)
        sys.modules[_LOGGING_CONFIG] = stand_in
        # `import logging.config` finds the stand-in in sys.modules and binds nothing: code then reads the
        # package's attribute, as the import of the real module would have set it.
        logging.config = stand_in  # the stand-in until first use; the import of the real module rebinds it


def _load(name: str) -> types.ModuleType:
    """The real module, imported in its stand-in's place if that is still there."""
    if not isinstance(sys.modules.get(name), _Deferred):
        return importlib.import_module(name)
    del sys.modules[name]
    module = importlib.import_module(name)  # binds the package's attribute to it, as any first import does
    if name == _UVICORN_MAIN:
        # uvicorn/__init__ rebinds `main` to the command and adds `run` right after its own import of it.
        package = sys.modules["uvicorn"]
        setattr(package, "main", module.main)  # noqa: B010
        setattr(package, "run", module.run)  # noqa: B010
    return module


class _Deferred(types.ModuleType):
    """Stands in for a module until an attribute of it is read."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # The import system probes (`from x import y` looks up `__path__`): nothing to load for those.
            raise AttributeError(name)
        return getattr(_load(self.__name__), name)


class _UvicornMain(_Deferred):
    """uvicorn.main's stand-in: `Server` without loading it, `main` and `run` as callables that load it."""

    def __getattr__(self, name: str) -> Any:
        if name == "Server":
            from uvicorn.server import Server

            return Server
        if name in ("main", "run"):
            return _Callable(name)
        return super().__getattr__(name)


class _Callable:
    """`uvicorn.main` or `uvicorn.run` before uvicorn.main is loaded: a call or an attribute read loads it."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the real `main` or `run`."""
        return getattr(_load(_UVICORN_MAIN), self._name)(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(getattr(_load(_UVICORN_MAIN), self._name), attribute)

    def __repr__(self) -> str:
        return f"<uvicorn.main.{self._name}, loaded on first use>"
