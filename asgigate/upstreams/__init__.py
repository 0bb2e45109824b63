"""Upstreams: the backends a gateway talks to.

    BaseUpstream        name, url, lifecycle (start / aclose), describe
    ├── Upstream        HTTP: the proxy's HTTP/1.1 pool and an httpx client; `app=` for an in-process ASGI app
    └── GrpcUpstream    gRPC: a pool of grpc.aio channels (needs the `grpc` extra, imported on first use)

A target checks at build time that it got the kind it can use (`require_kind`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import BaseUpstream, require_kind
from .http import ResponseStream, Upstream

if TYPE_CHECKING:
    from .grpc import GrpcUpstream

__all__ = ["BaseUpstream", "GrpcUpstream", "ResponseStream", "Upstream", "require_kind"]


def __getattr__(name: str) -> Any:
    if name == "GrpcUpstream":  # imported on first use: it needs the `grpc` extra (grpcio)
        from .grpc import GrpcUpstream

        return GrpcUpstream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
