"""Routes, groups and the route table: first match wins; 404 and 405 go through the error renderer.

A route is a path template plus predicates (methods, host, headers, query), a list of policies and a target.
Groups add a prefix, predicates and policies to the routes inside them. Everything is flattened and checked
once at build time; at request time the table only matches.

The 404s and 405s of the table are the gateway's replies, rendered by its `errors=`, unless a route claims them
(`Route.claims_405`, `Route.claims_404`): a target that serves a namespace in an error format of its own (a
GrpcService answers in google.rpc.Status) sets those in `bind`, and the table then hands the miss to that
route's `errors=` settings. No policy runs for a miss either way: no route was matched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from ._paths import PathTemplate
from .errors import BadRequest, ConfigurationError, MethodNotAllowed, NotFound
from .targets.mount import MountedApp

if TYPE_CHECKING:
    from .exchange import Exchange
    from .pipeline import PolicyLike
    from .replies import ErrorsLike
    from .targets.base import Target

__all__ = ["Group", "Mount", "Route"]

# A predicate value: exact string, a compiled regex (full match), or True for "present".
Matcher = Union[str, "re.Pattern[str]", bool]


def _compile_matchers(kind: str, items: Mapping[str, Matcher] | None) -> tuple[tuple[str, Matcher], ...]:
    if not items:
        return ()
    out = []
    for name, value in items.items():
        if not isinstance(value, (str, bool, re.Pattern)):
            raise ConfigurationError(f"{kind} predicate {name!r} must be a str, a compiled regex or True.")
        out.append((name.lower() if kind == "header" else name, value))
    return tuple(out)


def _matches(value: str | None, expected: Matcher) -> bool:
    if value is None:
        return expected is False
    if expected is True:
        return True
    if expected is False:
        return False
    if isinstance(expected, str):
        return value == expected
    return expected.fullmatch(value) is not None


def request_host(exchange: Exchange) -> str:
    """The Host header without its port, lower-cased (IPv6 literals keep their brackets).

    A request with two Host headers is refused (400, RFC 9112 3.2): routing by one while the upstream reads the
    other would let a client reach a route it does not name."""
    hosts = exchange.headers.getlist("host")
    if len(hosts) > 1:
        raise BadRequest("The request has more than one Host header.")
    host = hosts[0].lower() if hosts else ""
    if host.endswith("]"):
        return host
    return host.rsplit(":", 1)[0]


def _host_regex(host: str) -> re.Pattern[str]:
    # "*.example.com" matches one or more labels in front of example.com; the port is ignored.
    pattern = re.escape(host.lower()).replace(r"\*", r"[^:]+")
    return re.compile(pattern)


class Route:
    """One route: `Route("/users/{id:int}", Proxy(users), methods=["GET"])`."""

    # Misses of the route table this route renders with its own `errors=` settings (route, groups, gateway)
    # rather than the gateway's alone: a 405 on its path (when it is the first route whose path and predicates
    # matched), and a 404 under each of these full-path prefixes ("/" is every path). Set by targets in `bind`.
    claims_405: bool = False
    claims_404: tuple[str, ...] = ()

    def __init__(
        self,
        path: str,
        target: Target | Callable[..., Any],
        *,
        methods: Iterable[str] | None = None,
        host: str | None = None,
        headers: Mapping[str, Matcher] | None = None,
        query: Mapping[str, Matcher] | None = None,
        policies: Sequence[PolicyLike] = (),
        skip: Iterable[type] = (),
        name: str | None = None,
        errors: ErrorsLike | None = None,
    ) -> None:
        from .targets.base import as_target

        self.path = path
        self.template = PathTemplate(path)
        self.target: Target = as_target(target)
        self.methods: frozenset[str] | None = None
        if methods is not None:
            upper = {m.upper() for m in methods}
            if "GET" in upper:
                upper.add("HEAD")
            self.methods = frozenset(upper)
        self.host = host
        self._host_regex = _host_regex(host) if host else None
        self.headers = _compile_matchers("header", headers)
        self.query = _compile_matchers("query", query)
        self.has_extra = bool(self._host_regex is not None or self.headers or self.query)
        self.policies: tuple[PolicyLike, ...] = tuple(policies)
        self.skip: frozenset[type] = frozenset(skip)
        self.name = name or path
        self.errors = errors
        self.group_policies: tuple[PolicyLike, ...] = ()  # filled when flattened out of groups
        self.group_errors: tuple[tuple[str, ErrorsLike], ...] = ()  # (group name, errors=), inner group first
        self.app: Any = None  # the compiled chain, set by the pipeline at build time

    def matches_extra(self, exchange: Exchange) -> bool:
        """Host, header and query predicates (the path and method are checked by the table)."""
        if self._host_regex is not None:
            if self._host_regex.fullmatch(request_host(exchange)) is None:
                return False
        for header_name, expected in self.headers:
            if not _matches(exchange.headers.get(header_name), expected):
                return False
        for query_name, expected in self.query:
            if not _matches(exchange.query_params.get(query_name), expected):
                return False
        return True

    def describe_match(self) -> str:
        parts = [" ".join(sorted(self.methods - {"HEAD"} if "GET" in self.methods else self.methods))
                 if self.methods else "*", self.path]
        if self.host:
            parts.append(f"host={self.host}")
        for header_name, value in self.headers:
            parts.append(f"header {header_name}={_show(value)}")
        for query_name, value in self.query:
            parts.append(f"query {query_name}={_show(value)}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"Route({self.describe_match()!r}, {self.target!r})"


def _show(value: Matcher) -> str:
    if isinstance(value, re.Pattern):
        return f"~{value.pattern}"
    return str(value) if not isinstance(value, bool) else "*"


class Group:
    """Routes sharing a prefix, predicates and policies: `Group("/v1", [...], policies=[...])`."""

    def __init__(
        self,
        prefix: str,
        routes: Sequence[Route | Group],
        *,
        host: str | None = None,
        headers: Mapping[str, Matcher] | None = None,
        query: Mapping[str, Matcher] | None = None,
        policies: Sequence[PolicyLike] = (),
        skip: Iterable[type] = (),
        errors: ErrorsLike | None = None,
        name: str | None = None,
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ConfigurationError(f"Group prefix {prefix!r} must start with '/' and not end with '/'.")
        self.prefix = prefix
        self.routes = list(routes)
        self.host = host
        self.headers = dict(headers or {})
        self.query = dict(query or {})
        self.policies = tuple(policies)
        self.skip = frozenset(skip)
        self.errors = errors
        self.name = name or prefix

    def flatten(self) -> list[Route]:
        out: list[Route] = []
        for item in self.routes:
            inner = item.flatten() if isinstance(item, Group) else [item]
            for route in inner:
                out.append(self._apply(route))
        return out

    def _apply(self, route: Route) -> Route:
        merged = Route(
            self.prefix + route.path if route.path != "/" or not self.prefix else self.prefix,
            route.target,
            methods=route.methods,
            host=route.host or self.host,
            headers={**self.headers, **dict(route.headers)},
            query={**self.query, **dict(route.query)},
            policies=route.policies,
            skip=self.skip | route.skip,
            name=route.name if route.name != route.path else None,
            errors=route.errors,
        )
        merged.group_policies = self.policies + route.group_policies
        merged.group_errors = route.group_errors + (((self.name, self.errors),) if self.errors is not None else ())
        return merged

    def __repr__(self) -> str:
        return f"Group({self.prefix!r}, {len(self.routes)} routes)"


class Mount(Group):
    """Serve a whole ASGI app (Starlette, FastAPI, ...) under `prefix`, with the app seeing `root_path`.

    A group of two routes, `prefix` and `prefix/{path:path}`, both ending in the app; the keyword options are the
    group's, so a mounted app gets policies, predicates and error settings like any other group.
    """

    def __init__(
        self,
        prefix: str,
        app: Callable[..., Any],
        *,
        host: str | None = None,
        headers: Mapping[str, Matcher] | None = None,
        query: Mapping[str, Matcher] | None = None,
        policies: Sequence[PolicyLike] = (),
        skip: Iterable[type] = (),
        errors: ErrorsLike | None = None,
        name: str | None = None,
    ) -> None:
        target = MountedApp(app, prefix)
        # The group's own prefix stays empty: the routes carry the mount path, so that `prefix` itself matches.
        super().__init__(
            "",
            [Route(prefix, target), Route(prefix + "/{path:path}", target)],
            host=host,
            headers=headers,
            query=query,
            policies=policies,
            skip=skip,
            errors=errors,
            name=prefix if name is None else name,
        )
        self.path = prefix
        self.app = app

    def __repr__(self) -> str:
        return f"Mount({self.path!r}, {getattr(self.app, '__qualname__', type(self.app).__name__)})"


class RouteTable:
    """First match wins, without trying every route: routes are indexed by their first path segment.

    For each literal first segment the table keeps, in declaration order, the routes with that segment plus every
    route whose first segment is a parameter; a path only walks the list for its own first segment. The order
    (and so "first match wins") is the same as walking all routes.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        literal: dict[str, None] = {}
        for route in self.routes:
            segment = _first_segment(route.path)
            if "{" not in segment:
                literal[segment] = None
        self._any = tuple(r for r in self.routes if "{" in _first_segment(r.path))
        self._by_segment: dict[str, tuple[Route, ...]] = {
            segment: tuple(r for r in self.routes if _first_segment(r.path) == segment or r in self._any)
            for segment in literal
        }
        # (prefix, route) for every claimed 404 prefix, longest first; equally long ones keep the routes' order
        claims = [(prefix, route) for route in self.routes for prefix in route.claims_404]
        self._claims_404 = tuple(sorted(claims, key=lambda claim: -len(claim[0])))

    def candidates(self, path: str) -> tuple[Route, ...]:
        end = path.find("/", 1)
        return self._by_segment.get(path[1:end] if end > 0 else path[1:], self._any)

    def match(self, exchange: Exchange) -> Route:
        path = exchange.path
        method = exchange.scope.get("method", "GET")
        allowed: set[str] = set()
        has_path: Route | None = None  # the first route whose path and predicates matched
        for route in self.candidates(path):
            matched = route.template.match(path)
            if matched is None:
                continue
            if route.has_extra and not route.matches_extra(exchange):
                continue
            methods = route.methods
            if methods is not None and method not in methods:
                allowed |= methods
                if has_path is None:
                    has_path = route
                continue
            exchange.route = route
            exchange.raw_params = matched
            return route
        if allowed:
            not_allowed = MethodNotAllowed(sorted(allowed))
            if has_path is not None and has_path.claims_405:
                not_allowed.route = has_path
            raise not_allowed
        not_found = NotFound()
        if self._claims_404:
            not_found.route = self._claimant(exchange, path)
        raise not_found

    def describe_claims(self) -> list[str]:
        """One line per prefix whose 404s a route claims: the route that renders them (first claimant wins)."""
        seen: dict[str, Route] = {}
        for prefix, route in self._claims_404:
            seen.setdefault(prefix, route)
        return [
            f"404 under {prefix}{f' host={route.host}' if route.host else ''}: rendered by the errors of route "
            f"{route.name!r}" for prefix, route in sorted(seen.items())
        ]

    def _claimant(self, exchange: Exchange, path: str) -> Route | None:
        for prefix, route in self._claims_404:
            if prefix == "/" or (path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")):
                if not route.has_extra or route.matches_extra(exchange):
                    return route
        return None


def _first_segment(template: str) -> str:
    end = template.find("/", 1)
    return template[1:end] if end > 0 else template[1:]
