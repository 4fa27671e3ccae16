"""piagent.deferred's stand-ins, in this process: a module loads on first use, uvicorn.main's names behave as its own.

tests/test_imports.py checks the same in a fresh `piagent` process, where the stand-ins are actually installed.
"""

from __future__ import annotations

import importlib
import sys

import click
import pytest
import uvicorn
import uvicorn.server

from piagent import deferred

# A small standard-library module to stand in for.
NAME = "colorsys"


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> deferred._Deferred:
    module = deferred._Deferred(NAME)
    monkeypatch.setitem(sys.modules, NAME, module)  # whatever was there comes back afterwards
    return module


def test_a_stand_in_loads_its_module_on_first_use_and_gives_way_to_it(stand_in: deferred._Deferred) -> None:
    imported = importlib.import_module(NAME)
    assert imported is stand_in  # importing it loads nothing yet
    assert "__file__" not in vars(stand_in)
    assert stand_in.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    real = sys.modules[NAME]
    assert real is not stand_in
    assert "__file__" in vars(real)
    assert stand_in.hls_to_rgb is real.hls_to_rgb  # the stand-in kept elsewhere still answers, from the module


def test_from_import_through_a_stand_in_gets_the_real_names(stand_in: deferred._Deferred) -> None:
    from colorsys import hsv_to_rgb  # looks up __path__ first: a plain module has none, and nothing loads for it

    assert hsv_to_rgb(0.0, 1.0, 1.0) == (1, 0.0, 0.0)
    assert "__file__" in vars(sys.modules[NAME])


def test_a_stand_in_answers_the_import_systems_probes_without_loading(stand_in: deferred._Deferred) -> None:
    with pytest.raises(AttributeError):
        _ = stand_in.__path__
    assert sys.modules[NAME] is stand_in


def test_uvicorn_mains_stand_in_gives_uvicorns_own_server_main_and_run() -> None:
    stand_in = deferred._UvicornMain("uvicorn.main")  # not installed: uvicorn is already imported here
    assert stand_in.Server is uvicorn.server.Server
    assert stand_in.STARTUP_FAILURE == sys.modules["uvicorn.main"].STARTUP_FAILURE
    run, main = stand_in.run, stand_in.main
    assert run.__name__ == "run"  # an attribute read goes to the real function
    assert repr(main) == "<uvicorn.main.main, loaded on first use>"
    assert isinstance(uvicorn.main, click.Command)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])  # a call is the real command's
    assert exited.value.code == 0


def test_deferring_after_uvicorn_was_imported_changes_nothing() -> None:
    modules = dict(sys.modules)
    deferred.defer_unused_modules()
    assert dict(sys.modules) == modules
    assert uvicorn.run is sys.modules["uvicorn.main"].run
