"""Direct responses and redirects: route targets that answer without any upstream, rendered at build time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import FileResponse

from .._frozen import Frozen
from .._paths import PathTemplate
from ..errors import ConfigurationError
from .base import Target

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..routing import Route
    from ..types import Receive, Send

__all__ = ["Direct", "Redirect"]

_UNSET: Any = object()


class Direct(Frozen, Target):
    """A fixed reply: ``Direct(json={"ok": True})``, ``Direct(status=410, text="gone")``, ``Direct(file=...)``."""

    def __init__(
        self,
        *,
        status: int = 200,
        json: Any = _UNSET,
        text: str | None = None,
        body: bytes | None = None,
        file: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        given = [name for name, value in (("json", json is not _UNSET), ("text", text is not None),
                                          ("body", body is not None), ("file", file is not None)) if value]
        if len(given) > 1:
            raise ConfigurationError(f"Direct takes one body, got {' and '.join(given)}.")
        if not 100 <= status <= 599:
            raise ConfigurationError(f"Direct status {status} is not an HTTP status.")
        self.status = status
        self.headers = dict(headers or {})
        self.file = os.fspath(file) if file is not None else None
        if self.file is not None and not os.path.isfile(self.file):
            raise ConfigurationError(f"Direct file {self.file!r} does not exist.")
        payload = b""
        default_type = None
        if json is not _UNSET:
            payload, default_type = orjson.dumps(json), "application/json"
        elif text is not None:
            payload, default_type = text.encode(), "text/plain; charset=utf-8"
        elif body is not None:
            payload, default_type = body, "application/octet-stream"
        self.body = payload
        self.content_type = content_type or default_type
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        if self.file is None:
            if self.content_type and "content-type" not in {k.lower() for k in self.headers}:
                raw.append((b"content-type", self.content_type.encode("latin-1")))
            if status >= 200 and status not in (204, 304):
                raw.append((b"content-length", str(len(payload)).encode()))
        self._raw_headers = raw

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        if self.file is not None:
            response = FileResponse(self.file, status_code=self.status, headers=self.headers,
                                    media_type=self.content_type)
            await response(exchange.scope, receive, send)
            return
        # A fresh list each time: response hooks may add headers to it.
        await send({"type": "http.response.start", "status": self.status, "headers": list(self._raw_headers)})
        body = b"" if exchange.method == "HEAD" else self.body
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        what = f"file={self.file!r}" if self.file else f"{len(self.body)} bytes {self.content_type}"
        return f"Direct(status={self.status}, {what})"


class Redirect(Frozen, Target):
    """Redirect to a URL that may use the route's parameters: ``Redirect("/v2/users/{id}", status=308)``."""

    def __init__(self, location: str, *, status: int = 307, keep_query: bool = True) -> None:
        if status not in (301, 302, 303, 307, 308):
            raise ConfigurationError(f"Redirect status {status} is not a redirect status.")
        self.location = location
        self.status = status
        self.keep_query = keep_query
        # Only the path is a template; a query or fragment written in the location is kept as written.
        before_fragment, _, fragment = location.partition("#")
        self._path, _, self._query = before_fragment.partition("?")
        self._fragment = "#" + fragment if fragment else ""
        self._template: PathTemplate | None = None

    def bind(self, route: Route, gateway: Gateway) -> Redirect:
        names = set(route.template.names)
        if "{" in self._query or "{" in self._fragment:
            raise ConfigurationError(f"Redirect {self.location!r}: parameters can only be used in the path.")
        if "{" in self._path:
            base = self._path if self._path.startswith("/") else "/" + self._path
            template = PathTemplate(base)
            missing = set(template.names) - names
            if missing:
                raise ConfigurationError(
                    f"Redirect {self.location!r} uses {sorted(missing)} which route {route.path!r} does not capture."
                )
            return self._replace(_template=template)
        return self

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        from .._paths import encode

        location = self._path
        if self._template is not None:
            expanded = encode(self._template.expand(exchange.raw_params))
            location = expanded if self._path.startswith("/") else expanded[1:]
        query = self._query
        incoming = exchange.scope.get("query_string", b"")
        if self.keep_query and incoming:
            query = query + "&" + incoming.decode("latin-1") if query else incoming.decode("latin-1")
        if query:
            location += "?" + query
        location += self._fragment
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def __repr__(self) -> str:
        return f"Redirect({self.location!r}, status={self.status})"
