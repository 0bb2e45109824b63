"""Deprecated: `UpstreamErrors` is now `InterceptErrors`, in `asgigate.targets.intercept_errors` (and at the top
level, `asgigate.InterceptErrors`). The old name still imports from here, with a DeprecationWarning."""

from __future__ import annotations

from typing import Any

from .._deprecated import moved

__all__: list[str] = []

_moved = moved(__name__, {"UpstreamErrors": "asgigate.targets.intercept_errors:InterceptErrors"})


def __getattr__(name: str) -> Any:
    value = _moved(name)
    if value is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return value
