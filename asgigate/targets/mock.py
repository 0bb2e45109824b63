"""Mock: a route that answers from examples until its backend exists (API-first work).

An example is JSON data whose strings may use the route's parameters (``{"id": "{id}"}`` gives the id with its
converted type), a `Direct` reply (for another status or a non-JSON body), or a function of the exchange that
returns JSON data or a Starlette response (plain or async). A client picks a named example with the
``Prefer: example=<name>`` request header (RFC 7240); the reply then says ``Preference-Applied: example=<name>``.
Mock replies are local replies: the access log records them with the reason `mock`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from .._frozen import Frozen
from .._templates import JSONTemplate, TemplateError
from ..errors import BadRequest, ConfigurationError
from .base import Target
from .direct import Direct

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..routing import Route
    from ..types import Receive, Send

__all__ = ["Mock"]

_UNSET: Any = object()
_DEFAULT = ""


class Mock(Frozen, Target):
    """``Mock({"id": "{id}", "name": "Ada"})``, ``Mock(examples={"ok": [...], "empty": []})``, ``Mock(func)``.

    `example` is the default answer; `examples` are named ones (the first is the default when `example` is not
    given). `status` and `headers` apply to JSON examples; `delay` (seconds) imitates a backend's latency.
    """

    def __init__(
        self,
        example: Any = _UNSET,
        /,
        *,
        examples: Mapping[str, Any] | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        named = dict(examples or {})
        if example is _UNSET and not named:
            raise ConfigurationError("Mock needs an example or named examples.")
        if not 200 <= status <= 599 or status in (204, 304):
            raise ConfigurationError(f"Mock status {status} cannot carry an example body.")
        if delay < 0:
            raise ConfigurationError(f"Mock delay {delay!r} is negative.")
        for name in named:
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ConfigurationError(f"Mock example name {name!r}: use letters, digits, '-', '_' and '.'.")
        self.example = example
        self.examples = named
        self.status = status
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.delay = delay
        self._default = _DEFAULT if example is not _UNSET else next(iter(named))
        self._answers: dict[str, Direct | Callable[..., Any] | JSONTemplate] = {}

    def bind(self, route: Route, gateway: Gateway) -> Mock:
        """The mock that serves `route`, its JSON examples checked against (and compiled for) the route's parameters."""
        allowed = set(route.template.names)
        items = ([(_DEFAULT, self.example)] if self.example is not _UNSET else []) + list(self.examples.items())
        answers: dict[str, Direct | Callable[..., Any] | JSONTemplate] = {}
        for name, value in items:
            if isinstance(value, Direct) or callable(value):
                answers[name] = value
                continue
            try:
                answers[name] = JSONTemplate(value, allowed)
            except TemplateError as exc:
                label = f"example {name!r}" if name else "example"
                raise ConfigurationError(f"Mock {label} on route {route.path!r}: {exc}") from None
        return self._replace(_answers=answers)

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        name, asked = self._default, _preferred_example(exchange.headers.getlist("prefer"))
        if asked is not None:
            if asked not in self.examples:
                known = ", ".join(self.examples) or "none"
                raise BadRequest(f"No mock example named {asked!r}; known examples: {known}.")
            name = asked
        exchange.reason = "mock"
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self._answers[name]
        applied = {"preference-applied": f"example={name}"} if asked is not None else {}
        if isinstance(answer, Direct):
            await answer.handle(exchange, receive, _adding(send, applied))
            return
        if isinstance(answer, JSONTemplate):
            data = answer.render(exchange.params)
        else:
            data = answer(exchange)
            if inspect.isawaitable(data):
                data = await data
            if isinstance(data, Response):
                await data(exchange.scope, receive, _adding(send, applied))
                return
        response = Response(orjson.dumps(data), status_code=self.status, headers={**self.headers, **applied},
                            media_type="application/json")
        await response(exchange.scope, receive, send)

    def __repr__(self) -> str:
        names = ([repr("default")] if self.example is not _UNSET else []) + [repr(n) for n in self.examples]
        return f"Mock(examples=[{', '.join(names)}], status={self.status})"


def _preferred_example(values: list[str]) -> str | None:
    for value in values:
        for preference in value.split(","):
            key, _, setting = preference.split(";", 1)[0].partition("=")
            if key.strip().lower() == "example":
                return setting.strip().strip('"')
    return None


def _adding(send: Send, headers: Mapping[str, str]) -> Send:
    if not headers:
        return send

    async def adding(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()),
                                  *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())]
        await send(message)

    return adding
