"""Error replies: how every reply the gateway makes on its own looks, set per gateway, group, route, error or status.

    Gateway(errors=...)   Group(..., errors=...)   Route(..., errors=...)

Each `errors=` takes a `Reply` (a template: status, headers, JSON / HTML / text / XML bodies with placeholders), a
function ``(exchange, error) -> Response`` (plain or async), or an `ErrorReplies` that picks one of those per error
class, code, status or status family ("4xx", "5xx"). For one error, the rules that match are lined up closest
first (route, its groups inner to outer, the gateway; within a level the most specific first) and read like a
cascade: each field (status, title, detail, a header, the body of each format) comes from the first rule that sets
it. A function answers for every format the rules before it left open. When nothing answers, the built-in reply
does: RFC 9457 problem+json, or a readable HTML page for browsers.

The body format follows the client's Accept header among the formats that are available (JSON by default);
the error's own headers (Allow, Retry-After, RateLimit-*, WWW-Authenticate) are on the reply whatever renders it.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import orjson
from starlette.responses import Response

from ._accept import FORMATS, MEDIA_TYPES, negotiate
from ._default_reply import PLACEHOLDERS, builtin_reply, error_values
from ._templates import JSONTemplate, TemplateError, TextTemplate, escape_markup, header_safe
from .errors import ConfigurationError, GatewayError
from .pipeline import ErrorRenderer
from .responses import problem_response

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["ErrorReplies", "Reply"]

logger = logging.getLogger("asgigate")

_UNSET: Any = object()
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")  # RFC 9110 field names
Selector: TypeAlias = type[GatewayError] | str | int


class _Immutable:
    """Settings objects: public fields are set once, in __init__."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and hasattr(self, name):
            raise AttributeError(f"{type(self).__name__} is immutable; create a new one")
        object.__setattr__(self, name, value)


class Reply(_Immutable):
    """An error reply as a template: ``Reply(json={"error": {"code": "{code}", "id": "{request_id}"}})``.

    Every field is optional, and one left out comes from the next matching rule (see the module doc):
    `status`, `title` and `detail` replace the error's (the last two may use placeholders: ``"{detail} See the
    docs."`` keeps the error's own detail); `headers` are added (values may use placeholders too);
    `json`, `html`, `text` and `xml` are the body per format, each with placeholders (HTML and XML values are
    escaped). ``html=False`` (or text/xml) turns a format off, the built-in HTML page included.
    Placeholders: {code} {status} {title} {detail} {message} (the detail, else the title) {type} {request_id}
    {route} {method} {path} {retry_after} {timestamp}.
    """

    __slots__ = ("_bodies", "_headers", "_texts", "detail", "headers", "html", "json", "status", "text", "title", "xml")

    def __init__(
        self,
        *,
        status: int | None = None,
        title: str | None = None,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = _UNSET,
        html: str | Literal[False] | None = None,
        text: str | Literal[False] | None = None,
        xml: str | Literal[False] | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = MappingProxyType({k.lower(): v for k, v in (headers or {}).items()})
        self.json = json
        self.html = html
        self.text = text
        self.xml = xml
        self._bodies: dict[str, JSONTemplate | TextTemplate | Literal[False]] | None = None
        self._headers: dict[str, TextTemplate] = {}
        self._texts: dict[str, TextTemplate] = {}  # title and detail, which may use placeholders too

    def compile(self) -> None:
        """Check and parse the templates (once). Raises ConfigurationError; the gateway adds where it was set."""
        if self._bodies is not None:
            return
        status = self.status
        if status is not None and (not isinstance(status, int) or not 200 <= status <= 599 or status in (204, 304)):
            raise ConfigurationError(f"Reply status {status!r} cannot carry an error body; use 200-599.")
        for field in ("title", "detail"):
            if getattr(self, field) is not None and not isinstance(getattr(self, field), str):
                raise ConfigurationError(f"Reply {field} must be a string.")
        for name in self.headers:
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ConfigurationError(f"Reply header name {name!r} is not a valid HTTP field name.")
        bodies: dict[str, JSONTemplate | TextTemplate | Literal[False]] = {}
        try:
            texts = {
                field: TextTemplate(getattr(self, field), PLACEHOLDERS)
                for field in ("title", "detail")
                if getattr(self, field) is not None
            }
            headers = {name: TextTemplate(value, PLACEHOLDERS) for name, value in self.headers.items()}
            if self.json is not _UNSET:
                bodies["json"] = JSONTemplate(self.json, PLACEHOLDERS)
            for fmt in ("html", "text", "xml"):
                value = getattr(self, fmt)
                if value is False:
                    bodies[fmt] = False
                elif value is not None:
                    bodies[fmt] = TextTemplate(value, PLACEHOLDERS)
        except TemplateError as exc:
            raise ConfigurationError(f"Reply template: {exc}") from None
        self._headers = headers
        self._texts = texts
        self._bodies = bodies

    def bodies(self) -> dict[str, JSONTemplate | TextTemplate | Literal[False]]:
        self.compile()
        assert self._bodies is not None
        return self._bodies

    def _fields(self) -> tuple[Any, ...]:
        return (self.status, self.title, self.detail, dict(self.headers), self.json, self.html, self.text, self.xml)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reply) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names = ("status", "title", "detail", "headers", "json", "html", "text", "xml")
        shown = [
            f"{name}={_brief(value)}"
            for name, value in zip(names, self._fields(), strict=True)
            if value is not None and value is not _UNSET and value != {}
        ]
        return f"Reply({', '.join(shown)})"


class ErrorReplies(_Immutable):
    """Rules per error: ``ErrorReplies(Reply(json=ENVELOPE), on={NotFound: Reply(...), "5xx": render_5xx})``.

    `default` applies to every error; `on` maps a selector to a `Reply` or a renderer function. Selectors: an
    error class (its subclasses too), a code ("rate_limited"), a status (503) or a family ("4xx", "5xx").
    Within one level the most specific rule comes first: the error's own class or code, its exact status, its
    base classes (nearest first), its family, then `default`.
    """

    __slots__ = ("default", "on")

    def __init__(self, default: Rule | None = None, /, *, on: Mapping[Selector, Rule] | None = None) -> None:
        self.default = default
        self.on = MappingProxyType(dict(on or {}))

    def check(self) -> None:
        for rule in ([self.default] if self.default is not None else []) + list(self.on.values()):
            _check_rule(rule)
        codes = _known_codes()
        for selector in self.on:
            if isinstance(selector, type):
                if not issubclass(selector, GatewayError):
                    raise ConfigurationError(f"ErrorReplies selector {selector.__name__} is not a GatewayError.")
            elif isinstance(selector, bool) or not isinstance(selector, (int, str)):
                raise ConfigurationError(f"ErrorReplies selector {selector!r} is not a class, code or status.")
            elif isinstance(selector, int):
                if not 400 <= selector <= 599:
                    raise ConfigurationError(f"ErrorReplies selector {selector} is not a 4xx or 5xx status.")
            elif selector not in ("4xx", "5xx") and selector not in codes:
                raise ConfigurationError(
                    f"ErrorReplies selector {selector!r} is neither '4xx', '5xx' nor the code of an error class; "
                    f"known codes: {', '.join(sorted(codes))}"
                )

    def matching(self, error: GatewayError) -> list[Rule]:
        """The rules that apply to `error`, most specific first."""
        ranked: list[tuple[int, int, Rule]] = []
        mro = type(error).__mro__
        family = f"{error.status_code // 100}xx"
        for selector, rule in self.on.items():
            if isinstance(selector, type):
                if selector is type(error):
                    ranked.append((0, 0, rule))
                elif isinstance(error, selector):
                    ranked.append((2, mro.index(selector), rule))
            elif isinstance(selector, int):
                if selector == error.status_code:
                    ranked.append((1, 0, rule))
            elif selector == error.code:
                ranked.append((0, 1, rule))
            elif selector == family:
                ranked.append((3, 0, rule))
        ranked.sort(key=lambda item: item[:2])
        rules = [rule for _, _, rule in ranked]
        if self.default is not None:
            rules.append(self.default)
        return rules

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorReplies) and (self.default, self.on) == (other.default, other.on)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [_brief(self.default)] if self.default is not None else []
        if self.on:
            rules = ", ".join(f"{_selector(s)}: {_brief(r)}" for s, r in self.on.items())
            parts.append(f"on={{{rules}}}")
        return f"ErrorReplies({', '.join(parts)})"


Rule: TypeAlias = Reply | ErrorRenderer
ErrorsLike: TypeAlias = Reply | ErrorReplies | ErrorRenderer


def as_replies(value: ErrorsLike | None, where: str) -> ErrorReplies | None:
    """Normalize an `errors=` setting and check it; a problem is a ConfigurationError naming `where`."""
    if value is None:
        return None
    replies = value if isinstance(value, ErrorReplies) else ErrorReplies(value)
    try:
        replies.check()
    except ConfigurationError as exc:
        raise ConfigurationError(f"errors= of {where}: {exc}") from None
    return replies


class ErrorRendering:
    """The resolved error replies of one route (or of the gateway, before a route matched)."""

    __slots__ = ("fallback", "levels")

    def __init__(self, levels: Sequence[ErrorReplies], fallback: ErrorRenderer | None) -> None:
        self.levels = tuple(levels)
        self.fallback = fallback  # an overridden Gateway.render_error; None means the built-in reply

    async def render(self, exchange: Exchange, error: GatewayError) -> Response:
        try:
            return await self._render(exchange, error)
        except Exception:
            logger.exception("the error renderer failed [request_id=%s]; sending the default reply",
                             exchange.request_id)
            return problem_response(exchange, error)

    async def _render(self, exchange: Exchange, error: GatewayError) -> Response:
        overrides: dict[str, Any] = {}  # status, or the title / detail templates
        headers: dict[str, TextTemplate] = {}
        bodies: dict[str, Any] = {}
        terminal = self.fallback
        for rule in (rule for level in self.levels for rule in level.matching(error)):
            if not isinstance(rule, Reply):
                terminal = rule
                break
            rule.compile()
            if "status" not in overrides and rule.status is not None:
                overrides["status"] = rule.status
            for field, text in rule._texts.items():
                overrides.setdefault(field, text)
            for name, template in rule._headers.items():
                headers.setdefault(name, template)
            for fmt, body in rule.bodies().items():
                bodies.setdefault(fmt, body)
        if overrides:
            error = _with(error, overrides, error_values(exchange, error))
        for fmt in FORMATS:  # what the terminal answers for the formats the templates left open
            if fmt not in bodies and (terminal is not None or fmt in ("json", "html")):
                bodies[fmt] = None
        available = [fmt for fmt in FORMATS if fmt in bodies and bodies[fmt] is not False]
        fmt = negotiate(exchange.headers.get("accept", ""), available)
        values = error_values(exchange, error)
        body = bodies[fmt]
        if body is not None:
            response = _from_template(fmt, body, error, values)
        elif terminal is not None:
            result = terminal(exchange, error)
            response = await result if inspect.isawaitable(result) else result
        else:
            response = builtin_reply(exchange, error, fmt)
        for name, template in headers.items():
            response.headers[name] = header_safe(template.render(values))
        for name, value in error.headers.items():
            if name not in response.headers:
                response.headers[name] = value
        if len(available) > 1 and "accept" not in response.headers.get("vary", "").lower():
            response.headers.append("vary", "Accept")
        return response


def _from_template(
    fmt: str, body: JSONTemplate | TextTemplate, error: GatewayError, values: dict[str, Any]
) -> Response:
    if isinstance(body, JSONTemplate):
        content = orjson.dumps(body.render(values))
    else:
        content = body.render(values, escape_markup if fmt in ("html", "xml") else None).encode()
    return Response(content, status_code=error.status_code, headers=error.headers or None,
                    media_type=MEDIA_TYPES[fmt])


def _with(error: GatewayError, overrides: Mapping[str, Any], values: Mapping[str, Any]) -> GatewayError:
    """A copy of `error` with a Reply's status, title or detail (the original stays as raised, for the log)."""
    copy = type(error).__new__(type(error))
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    if "status" in overrides:
        copy.status_code = overrides["status"]
    if "title" in overrides:
        copy.title = overrides["title"].render(values)
    if "detail" in overrides:
        copy.detail = overrides["detail"].render(values)
    return copy


def _check_rule(rule: Any) -> None:
    if isinstance(rule, Reply):
        rule.compile()
    elif isinstance(rule, ErrorReplies):
        raise ConfigurationError("ErrorReplies cannot be nested; give its rules to the outer one.")
    elif not callable(rule):
        raise ConfigurationError(f"{rule!r} is neither a Reply nor a function (exchange, error) -> Response.")


def _known_codes() -> set[str]:
    codes: set[str] = set()
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


def _selector(selector: Selector) -> str:
    return selector.__name__ if isinstance(selector, type) else repr(selector)


def _brief(value: Any) -> str:
    if isinstance(value, (Reply, ErrorReplies)):
        return repr(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return str(value.__qualname__)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
