"""Moved and renamed names keep working under their old name for now, with a DeprecationWarning (PEP 562)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved"]


def moved(module: str, names: Mapping[str, str]) -> Callable[[str], Any | None]:
    """A lookup for a module's `__getattr__`: `names` maps each old name to its new place, "asgigate.grpc:Descriptors".

    The lookup warns and returns the object for an old name, and returns None for any other name (so the module's
    `__getattr__` can go on and raise its AttributeError).
    """

    def lookup(name: str) -> Any | None:
        place = names.get(name)
        if place is None:
            return None
        home, _, new_name = place.partition(":")
        advice = f"use {home}.{new_name}" if new_name != name else f"import it from {home}"
        # stacklevel 3: the caller of the module's __getattr__ (the import machinery's frames are skipped).
        warnings.warn(f"{module}.{name} is deprecated: {advice}", DeprecationWarning, stacklevel=3)
        return getattr(importlib.import_module(home), new_name)

    return lookup
