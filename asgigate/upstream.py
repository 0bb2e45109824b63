"""Kept so that ``from asgigate.upstream import Upstream`` goes on working: the upstreams live in
`asgigate.upstreams` now (`Upstream` in `asgigate.upstreams.http`)."""

from .upstreams.http import DEFAULT_TIMEOUT, Upstream, as_timeout  # noqa: F401  (old imports)

__all__ = ["Upstream"]
