"""Location and Content-Location headers of proxied replies, mapped from the upstream's URL space to the client's.

An upstream that answers ``Location: http://users.internal:8080/api/users/7`` names an address the client cannot
reach, and a path in the upstream's path space. Like nginx's ``proxy_redirect default``, the proxy rewrites a URL
on the upstream's own origin into the one the client used: the client-facing scheme and host, and the path put
back through the route's rewriting (the upstream's base path removed, a stripped prefix put back, a path template
matched and the route's path filled in from it). Only absolute URLs on the upstream's origin change: a relative
reference already means the client's origin, and a URL on any other host is none of the gateway's business.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .._paths import PathTemplate, encode, normalize
from ..errors import ConfigurationError, InvalidPath

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..routing import Route
    from ..upstreams import Upstream

__all__ = ["LocationRewrite", "RewriteLocation", "location_rewriter"]

RewriteLocation = bool | Mapping[str, str] | Callable[["Exchange", str], str]
LocationRewrite = Callable[["Exchange", bytes], bytes]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# A host as it may stand in a URL: a name or IPv4 address, or a bracketed IPv6 address; an optional port.
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def location_rewriter(
    setting: RewriteLocation,
    *,
    upstream: Upstream,
    route: Route,
    strip_prefix: str | None,
    template: PathTemplate | None,
    preserve_host: bool,
) -> LocationRewrite | None:
    """The rewrite a Proxy applies to Location values, from its `rewrite_location` setting (None: leave them)."""
    if setting is True:
        return _DefaultRewrite(upstream, route, strip_prefix, template, preserve_host)
    if setting is False:
        return None
    if isinstance(setting, Mapping):
        return _MappingRewrite(setting)
    function = setting  # checked by Proxy: a function

    def custom(exchange: Exchange, value: bytes) -> bytes:
        return function(exchange, value.decode("latin-1")).encode("latin-1")

    return custom


class _MappingRewrite:
    """``{"http://users.internal:8080/": "/users/"}``: the first prefix (in the order written) that a value starts
    with is replaced; a value no prefix matches is left as it is."""

    __slots__ = ("prefixes",)

    def __init__(self, mapping: Mapping[str, str]) -> None:
        for prefix, replacement in mapping.items():
            if not isinstance(prefix, str) or not isinstance(replacement, str) or not prefix:
                raise ConfigurationError(
                    f"Proxy rewrite_location= maps URL prefixes to replacements (strings), got {prefix!r}: "
                    f"{replacement!r}."
                )
        self.prefixes = [(p.encode("latin-1"), r.encode("latin-1")) for p, r in mapping.items()]

    def __call__(self, exchange: Exchange, value: bytes) -> bytes:
        for prefix, replacement in self.prefixes:
            if value.startswith(prefix):
                return replacement + value[len(prefix) :]
        return value


class _DefaultRewrite:
    __slots__ = ("base_path", "origin", "preserve_host", "route", "scheme", "strip_prefix", "template")

    def __init__(
        self,
        upstream: Upstream,
        route: Route,
        strip_prefix: str | None,
        template: PathTemplate | None,
        preserve_host: bool,
    ) -> None:
        self.scheme = upstream.scheme
        self.origin = (upstream.host.lower(), upstream.port)
        self.base_path = upstream.base_path
        self.route = route
        self.strip_prefix = strip_prefix
        self.template = template
        self.preserve_host = preserve_host

    def __call__(self, exchange: Exchange, value: bytes) -> bytes:
        text = value.decode("latin-1")
        if text.startswith("//"):
            rest = text[2:]  # scheme-relative: the upstream's scheme is meant
        else:
            m = _SCHEME.match(text)
            if m is None or m.group(1).lower() != self.scheme or text[m.end() : m.end() + 2] != "//":
                return value  # relative, or not on the upstream's scheme
            rest = text[m.end() + 2 :]
        end = len(rest)
        for delimiter in "/?#":
            found = rest.find(delimiter)
            if found != -1 and found < end:
                end = found
        authority, rest = rest[:end], rest[end:]
        if not self._is_upstream(exchange, authority):
            return value
        cut = len(rest)
        for delimiter in "?#":
            found = rest.find(delimiter)
            if found != -1 and found < cut:
                cut = found
        path, suffix = rest[:cut] or "/", rest[cut:]
        client_path = self._client_path(exchange, path)
        return (_client_origin(exchange) + (client_path or path) + suffix).encode("latin-1")

    def _is_upstream(self, exchange: Exchange, authority: str) -> bool:
        origin = _host_port(authority, self.scheme)
        if origin is None:
            return False
        if origin == self.origin:
            return True
        if self.preserve_host:
            # The upstream was sent the client's Host, so its own URLs name that host (on the upstream's scheme).
            host = _header(exchange, b"host")
            return host is not None and _host_port(host, self.scheme) == origin
        return False

    def _client_path(self, exchange: Exchange, path: str) -> str | None:
        """The client's path for an upstream path, or None when the route's rewriting cannot be reversed."""
        base = self.base_path
        if base:
            if path != base and not path.startswith(base + "/"):
                return None
            path = path[len(base) :] or "/"
        try:
            matching = normalize(path.encode("latin-1"))
        except (InvalidPath, UnicodeError):
            return None
        if self.template is not None:
            params = self.template.match(matching)
            if params is None:
                return None
            route_template = self.route.template
            # route parameters the upstream path does not carry keep this request's values
            values = {**exchange.raw_params, **params}
            if any(name not in values for name in route_template.names):
                return None
            matching = route_template.expand(values)
            if route_template.match(matching) is None:
                return None  # a value the route's parameter type does not admit
        elif self.strip_prefix:
            matching = self.strip_prefix + matching
        root: str = exchange.scope.get("root_path", "")
        return (encode(root) if root else "") + encode(matching)


def _client_origin(exchange: Exchange) -> str:
    """``scheme://host`` as the client used it; a trusted proxy's X-Forwarded-Proto/-Host are believed (the value
    that proxy itself added, the rightmost). Empty when no usable host is known: the path alone is then a
    reference to the client's origin."""
    scope = exchange.scope
    scheme: str = scope.get("scheme", "http")
    host = _header(exchange, b"host")
    trusted = exchange.context.trusted_proxies  # the forwarded values are None unless the peer is trusted
    forwarded_proto = trusted.forwarded_value(scope, b"x-forwarded-proto")
    if forwarded_proto is not None and forwarded_proto.lower() in _DEFAULT_PORTS:
        scheme = forwarded_proto.lower()
    forwarded_host = trusted.forwarded_value(scope, b"x-forwarded-host")
    if forwarded_host is not None and _AUTHORITY.fullmatch(forwarded_host):
        host = forwarded_host
    if host is None or not _AUTHORITY.fullmatch(host):
        server = scope.get("server")
        if not server or server[1] is None:
            return ""
        name = f"[{server[0]}]" if ":" in server[0] else server[0]
        host = name if int(server[1]) == _DEFAULT_PORTS.get(scheme) else f"{name}:{server[1]}"
    return f"{scheme}://{host}"


def _header(exchange: Exchange, name: bytes) -> str | None:
    """A request header's value (the first one), stripped; None if absent."""
    for key, value in exchange.scope["headers"]:
        if key == name:
            return value.decode("latin-1").strip() or None
    return None


def _host_port(authority: str, scheme: str) -> tuple[str, int] | None:
    if not _AUTHORITY.fullmatch(authority):
        return None  # userinfo, an empty host or anything else no upstream is addressed by
    host, port = authority, ""
    if authority.startswith("["):
        close = authority.index("]")
        host, port = authority[1:close], authority[close + 2 :]
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    if not port:
        return host.lower(), _DEFAULT_PORTS[scheme]
    return host.lower(), int(port)
