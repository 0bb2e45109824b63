"""Deprecated: `Policy` and `ResponseHead` live in `asgigate.pipeline` (and at the top level, `asgigate.Policy`),
the ASGI aliases in `asgigate.types`. The old names still import from here, with a DeprecationWarning."""

from __future__ import annotations

from typing import Any

from ._deprecated import moved

__all__: list[str] = []

_moved = moved(__name__, {
    "Policy": "asgigate.pipeline:Policy",
    "ResponseHead": "asgigate.pipeline:ResponseHead",
    "ASGIApp": "asgigate.types:ASGIApp",
    "Message": "asgigate.types:Message",
    "Receive": "asgigate.types:Receive",
    "Scope": "asgigate.types:Scope",
    "Send": "asgigate.types:Send",
})


def __getattr__(name: str) -> Any:
    value = _moved(name)
    if value is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return value
