"""BaseUpstream: what every kind of upstream has (a name, a URL, a lifecycle), and the build-time kind check.

The kinds are siblings: `Upstream` (HTTP, `asgigate.upstreams.http`) and `GrpcUpstream` (gRPC,
`asgigate.upstreams.grpc`). A target takes the kind it can use and says so at build time through
`require_kind`, naming the route, so that a gRPC upstream given to a `Proxy` fails when the gateway is built
instead of as a 500 on the first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..routing import Route

__all__ = ["BaseUpstream", "require_kind"]

U = TypeVar("U", bound="BaseUpstream")


class BaseUpstream:
    """A backend the gateway talks to: `name` (in logs, metrics and error replies) and `url`.

    Subclasses open their connections lazily and let go of them in `aclose()`, which the gateway calls at
    shutdown for every upstream its routes use (and every upstream held as an attribute of the gateway);
    `start()` is the matching hook at startup (nothing to do by default). `_config()` is what two upstreams
    compare equal by.
    """

    kind = "upstream"  # shown in messages: "an HTTP upstream", "a gRPC upstream"

    name: str
    url: str
    scheme: str
    host: str
    port: int
    authority: str

    def __init__(self, url: str, *, scheme: str, host: str, port: int, authority: str, name: str | None) -> None:
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        self.authority = authority
        self.name = name or authority

    async def start(self) -> None:
        """Called before serving; connections still open on first use, so this is a hook for subclasses."""

    async def aclose(self) -> None:
        """Close every connection this upstream opened; it opens new ones if used again."""

    def describe(self) -> str:
        """One line for `Gateway.describe()`: ``users = http://users:8080/api``."""
        return f"{self.name} = {self.url}"

    def _config(self) -> tuple[Any, ...]:
        return (self.url, self.name)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._config() == other._config()

    def __hash__(self) -> int:
        return hash((self.url, self.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r})"


def require_kind(upstream: Any, kind: type[U], user: str, route: Route | None = None, *, hint: str = "") -> U:
    """`upstream` if it is a `kind`, else a ConfigurationError naming the route, the target and what it got."""
    if isinstance(upstream, kind):
        return upstream
    where = f"route {route.path!r}: " if route is not None else ""
    got = f"{upstream.kind} {upstream!r}" if isinstance(upstream, BaseUpstream) else repr(upstream)
    raise ConfigurationError(f"{where}{user} needs {kind.kind} ({kind.__name__}), got {got}.{hint}")
