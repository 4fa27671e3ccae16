"""One configuration key: its environment name, its Settings field, its parser and its meaning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from piagent.settings.parsers import show_value


class _Key(NamedTuple):
    """One configuration key: its environment name, the Settings field, parser and meaning.

    Its default is the Settings field's own (written once, there), shown as the environment spells it.
    """

    env: str
    field: str
    parse: Callable[[str], Any]
    meaning: str
    secret: bool = False  # never printed, not even in an error

    @property
    def default(self) -> str:
        """The default as a `PIAGENT_*` value: what `parse` turns back into the Settings default."""
        from piagent.settings import DEFAULTS  # the Struct's defaults; read when shown, never at import

        return show_value(DEFAULTS[self.field])


# The single source of truth for configuration: Settings.from_env, the README table and
# `piagent check` all read this tuple, so a key cannot be documented and parsed differently.
