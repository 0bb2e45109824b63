"""Calls to backends from resolvers: REST and remote GraphQL over an `Upstream`'s httpx client.

A failed call raises `BackendCallError`, a GraphQLError whose ``extensions.code`` says what went wrong; raised in
a resolver it nulls that field only, so the rest of the response still resolves (partial results).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from graphql import GraphQLError

from .._httpx import translate
from ..errors import UpstreamTimeout
from ..upstreams import Upstream

__all__ = ["BackendCallError"]

_PARAM = re.compile(r"\{(\w+)\}")
_STATUS_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND"}


class BackendCallError(GraphQLError):
    """A backend call failed. ``extensions``: `code` (``UPSTREAM_TIMEOUT``, ``UPSTREAM_UNAVAILABLE``,
    ``UPSTREAM_ERROR``, ``UPSTREAM_PROTOCOL_ERROR``, ``NOT_FOUND``, ``UNAUTHENTICATED``, ``FORBIDDEN``,
    ``BAD_REQUEST``), `upstream` (its name) and, when the backend answered, `status`."""

    def __init__(self, message: str, *, code: str, upstream: str, **extra: Any) -> None:
        super().__init__(message, extensions={"code": code, "upstream": upstream, **extra})

    @property
    def code(self) -> str:
        return str((self.extensions or {}).get("code"))


def expand_path(path: str, params: Mapping[str, Any]) -> str:
    """``"/users/{id}"`` with ``{"id": 7}`` → ``"/users/7"``; every value is percent-encoded as one segment."""

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        if name not in params:
            raise TypeError(f"path {path!r} needs a value for {{{name}}}")
        return quote(str(params[name]), safe="")

    return _PARAM.sub(fill, path)


def path_names(path: str) -> list[str]:
    return _PARAM.findall(path)


def _status_error(upstream: Upstream, status: int, what: str) -> BackendCallError:
    code = _STATUS_CODES.get(status, "UPSTREAM_ERROR")
    return BackendCallError(f"{upstream.name} answered {status} to {what}.", code=code, upstream=upstream.name,
                            status=status)


async def http_call(
    upstream: Upstream,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109
) -> httpx.Response:
    what = f"{method} {path}"
    try:
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        content = orjson.dumps(json) if json is not None else None
        all_headers = dict(headers or {})
        if content is not None:
            all_headers["content-type"] = "application/json"
        return await upstream.client.request(method, path, params=_query(query), content=content,
                                             headers=all_headers, **kwargs)
    except httpx.TransportError as exc:
        # Classified like every other call out (asgigate._httpx); resolvers get GraphQL error codes for it.
        if isinstance(translate(exc, stage="graphql_backend"), UpstreamTimeout):
            raise BackendCallError(f"{upstream.name} did not answer {what} in time.", code="UPSTREAM_TIMEOUT",
                                   upstream=upstream.name) from None
        raise BackendCallError(f"{upstream.name} is unavailable for {what}.", code="UPSTREAM_UNAVAILABLE",
                               upstream=upstream.name, reason=type(exc).__name__) from None


def _query(query: Mapping[str, Any] | None) -> Any:
    if not query:
        return None
    pairs: list[tuple[str, str]] = []
    for name, value in query.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        pairs.extend((name, _text(item)) for item in values)
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def decode(upstream: Upstream, response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise _status_error(upstream, response.status_code, what)
    if response.status_code == 204 or not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise BackendCallError(f"{upstream.name} sent no JSON for {what}.", code="UPSTREAM_PROTOCOL_ERROR",
                               upstream=upstream.name) from None


async def rest_call(
    upstream: Upstream,
    method: str,
    path: str,
    *,
    query: Mapping[str, Any] | None = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109
) -> Any:
    """One REST call; the decoded JSON body, or a `BackendCallError`."""
    response = await http_call(upstream, method, path, query=query, json=json, headers=headers, timeout=timeout)
    return decode(upstream, response, f"{method} {path}")


async def graphql_call(
    upstream: Upstream,
    query: str,
    variables: Mapping[str, Any] | None = None,
    *,
    operation_name: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109
) -> dict[str, Any]:
    """A query against a remote GraphQL service (POST to the upstream's URL); the full response
    (``data``, ``errors``). Transport failures and a response without ``data`` raise `BackendCallError`."""
    payload: dict[str, Any] = {"query": query}
    if variables:
        payload["variables"] = dict(variables)
    if operation_name:
        payload["operationName"] = operation_name
    all_headers = {"accept": "application/graphql-response+json, application/json", **(headers or {})}
    response = await http_call(upstream, "POST", upstream.url, json=payload, headers=all_headers, timeout=timeout)
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
        if response.status_code >= 400:
            raise _status_error(upstream, response.status_code, "a GraphQL query")
        raise BackendCallError(f"{upstream.name} sent no GraphQL response.", code="UPSTREAM_PROTOCOL_ERROR",
                               upstream=upstream.name)
    if body.get("data") is None and body.get("errors"):
        first = body["errors"][0] if isinstance(body["errors"], list) and body["errors"] else {}
        message = first.get("message", "error") if isinstance(first, dict) else "error"
        raise BackendCallError(f"{upstream.name}: {message}", code="UPSTREAM_ERROR", upstream=upstream.name,
                               errors=body["errors"])
    return body
