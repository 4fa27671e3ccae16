"""The package's public names are exactly what `__all__` lists, sorted."""

from __future__ import annotations

import piagent


def test_all_lists_every_public_name_sorted() -> None:
    public = {name for name in vars(piagent) if not name.startswith("_") and name not in {"annotations"}}
    modules = {name for name in public if type(getattr(piagent, name)).__name__ == "module"}
    assert set(piagent.__all__) == (public - modules) | {"__version__"}
    assert piagent.__all__ == sorted(piagent.__all__)
