"""Upstream error responses replaced by the gateway's own error reply: `Proxy(..., intercept_errors=...)`.

By default a proxy relays every upstream response as it is, errors included. A route that must not show its
backend's error pages (a stack trace, an HTML page from a framework, an internal message) lists the statuses to
replace; the matching response's body is read and thrown away (or, past a small size, its connection is closed
instead), never sent, and the client gets an `UpstreamErrorResponse` rendered like every other gateway error.
The check costs the proxy one `is not None` test per response when the option is off, and one tuple lookup
when it is on. The name follows nginx's `proxy_intercept_errors`; `UpstreamErrors` is its deprecated old name (too
close to the exception `UpstreamError`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, UpstreamError, UpstreamErrorResponse

if TYPE_CHECKING:
    from ..upstreams.http import ResponseStream

__all__ = ["InterceptErrors"]

DRAIN_LIMIT = 64 * 1024  # read and drop at most this much of a replaced body to keep the connection; else close it
DRAIN_TIMEOUT = 1.0  # seconds


def _statuses(selector: int | str) -> range:
    if isinstance(selector, bool):
        raise ConfigurationError(f"InterceptErrors: {selector!r} is not a status.")
    if isinstance(selector, int) and 400 <= selector <= 599:
        return range(selector, selector + 1)
    if selector in ("4xx", "5xx"):
        start = int(str(selector)[0]) * 100
        return range(start, start + 100)
    raise ConfigurationError(f"InterceptErrors: {selector!r} is not an error status (400-599) nor '4xx' or '5xx'.")


class InterceptErrors:
    """Which upstream error responses a proxied route replaces with the gateway's own error reply.

    ``InterceptErrors(replace=["5xx"], remap={404: 502}, keep=[503], content_type="text/html")``:

    - `replace`: statuses ("4xx", "5xx" or one status) answered by the gateway with the same status;
    - `remap`: statuses answered by the gateway with another status (`{"5xx": 502}`: every 5xx becomes a 502);
    - `keep`: statuses relayed untouched even though a family above names them (the default for all others);
    - `content_type`: only upstream responses of these media types (`"text/html"`, `"text/*"`) are replaced;
    - `detail`: the `detail` of the gateway's reply (none by default: nothing about the upstream is shown).

    One status named in two places is a ConfigurationError; a status beats the family it belongs to.
    """

    __slots__ = ("_table", "_types", "content_type", "detail", "keep", "remap", "replace")

    def __init__(
        self,
        *,
        replace: Iterable[int | str] = (),
        remap: Mapping[int | str, int] | None = None,
        keep: Iterable[int | str] = (),
        content_type: str | Iterable[str] | None = None,
        detail: str | None = None,
    ) -> None:
        self.replace = tuple(replace)
        self.remap = MappingProxyType(dict(remap or {}))
        self.keep = tuple(keep)
        self.detail = detail
        types = [content_type] if isinstance(content_type, str) else list(content_type or ())
        self.content_type = tuple(t.strip().lower() for t in types)
        for media in self.content_type:
            if media.count("/") != 1 or media.startswith("*"):
                raise ConfigurationError(f"InterceptErrors: content_type {media!r} is not 'type/subtype' or 'type/*'.")
        rules: list[tuple[int | str, int | None]] = [(s, 0) for s in self.replace]
        rules += [(s, None) for s in self.keep]
        for selector, target in self.remap.items():
            if isinstance(target, bool) or not isinstance(target, int) or not 400 <= target <= 599:
                raise ConfigurationError(f"InterceptErrors: remap {selector!r} to {target!r}, not an error status.")
            rules.append((selector, target))
        if not rules:
            raise ConfigurationError("InterceptErrors needs at least one status to replace or remap.")
        # status -> (specificity, reply status: 0 = the upstream's own, None = keep); exact statuses beat families
        table: dict[int, tuple[int, int | None]] = {}
        seen: dict[int | str, int | None] = {}
        for selector, status in rules:
            if selector in seen:
                raise ConfigurationError(f"InterceptErrors: {selector!r} is named twice.")
            seen[selector] = status
            statuses = _statuses(selector)
            specificity = 1 if len(statuses) == 1 else 0
            for code in statuses:
                if code not in table or table[code][0] < specificity:
                    table[code] = (specificity, status)
        self._table: tuple[int | None, ...] = tuple(
            (table[code][1] or code) if code in table and table[code][1] is not None else None for code in range(600)
        )
        self._types = self.content_type

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and hasattr(self, name):
            raise AttributeError("InterceptErrors is immutable; create a new one")
        object.__setattr__(self, name, value)

    def reply_status(self, response: ResponseStream) -> int | None:
        """The status of the gateway's reply if `response` is to be replaced, else None."""
        status = response.status
        if status >= 600:
            return None
        reply = self._table[status]
        if reply is None or not self._types:
            return reply
        media = b""
        for name, value in response.headers:
            if name == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
        kind = media.split(b"/", 1)[0] + b"/*"
        for wanted in self._types:
            if wanted.encode("latin-1") in (media, kind):
                return reply
        return None

    async def check(self, response: ResponseStream, upstream: str) -> None:
        """Called by the proxy once the response head arrived: returns to relay it, raises to replace it."""
        status = self.reply_status(response)
        if status is None:
            return
        await discard_body(response)
        raise UpstreamErrorResponse(self.detail, upstream_status=response.status, status=status, upstream=upstream)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InterceptErrors) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[object, ...]:
        return (self.replace, tuple(self.remap.items()), self.keep, self.content_type, self.detail)

    def __repr__(self) -> str:
        parts = [f"{name}={value!r}" for name, value in (
            ("replace", list(self.replace)), ("remap", dict(self.remap)), ("keep", list(self.keep)),
            ("content_type", list(self.content_type)), ("detail", self.detail)) if value]
        return f"InterceptErrors({', '.join(parts)})"


async def discard_body(response: ResponseStream) -> None:
    """Read and drop a small body so its connection can be reused; leave a large or slow one for aclose() to cut."""
    if response.complete:
        await response.receive()
        return
    for name, value in response.headers:
        if name == b"content-length" and value.isdigit() and int(value) > DRAIN_LIMIT:
            return
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            while chunk := await response.receive():
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    return
    except (TimeoutError, UpstreamError):
        return  # the connection is closed either way; the reply is the gateway's
