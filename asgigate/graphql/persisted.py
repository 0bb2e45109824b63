"""Persisted queries: Apollo's automatic persisted queries (APQ) and a safelist that runs only known operations."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from graphql import GraphQLSyntaxError, parse, print_ast

from ..errors import ConfigurationError
from ._cache import BoundedCache

__all__ = ["PersistedQueries", "Safelist"]


class RequestError(Exception):
    """A GraphQL request error found before execution: rendered as a GraphQL response with ``errors``."""

    def __init__(self, message: str, code: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _requested_hash(extensions: Mapping[str, Any] | None) -> str | None:
    persisted = extensions.get("persistedQuery") if isinstance(extensions, Mapping) else None
    if not isinstance(persisted, Mapping):
        return None
    if persisted.get("version", 1) != 1:
        raise RequestError("Unsupported persisted query version.", "PERSISTED_QUERY_VERSION_NOT_SUPPORTED")
    value = persisted.get("sha256Hash")
    if not isinstance(value, str) or not value:
        raise RequestError("persistedQuery needs a sha256Hash.", "PERSISTED_QUERY_HASH_MISSING")
    return value.lower()


class PersistedQueries:
    """Automatic persisted queries (the Apollo APQ protocol).

    A client sends ``extensions.persistedQuery.sha256Hash`` alone; an unknown hash answers
    ``PERSISTED_QUERY_NOT_FOUND`` (status 200, as Apollo's servers do, so clients retry with the text), and a
    request carrying both the hash and the query registers it after checking the hash. `max_entries` and
    `max_bytes` (the memory its texts take) bound the in-memory store, which any client can fill: least recently
    used entries go first, and a query over an eighth of `max_bytes` is run but not kept. `queries` preloads it.
    """

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 16 * 1024 * 1024,
                 queries: Iterable[str] = ()) -> None:
        if max_entries < 1:
            raise ConfigurationError("PersistedQueries max_entries must be positive.")
        if max_bytes < 1:
            raise ConfigurationError("PersistedQueries max_bytes must be positive.")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._store: BoundedCache[str, str] = BoundedCache(max_bytes, max_entries=max_entries)
        for query in queries:
            self._put(sha256(query), query)

    def _put(self, digest: str, query: str) -> None:
        self._store.put(digest, query, sys.getsizeof(query) + sys.getsizeof(digest) + 100)

    def resolve(
        self, query: str | None, extensions: Mapping[str, Any] | None, payload: Mapping[str, Any]
    ) -> str | None:
        digest = _requested_hash(extensions)
        if digest is None:
            return query
        if query is not None:
            if sha256(query) != digest:
                raise RequestError("provided sha does not match query", "PERSISTED_QUERY_HASH_MISMATCH")
            self._put(digest, query)
            return query
        found = self._store.get(digest)
        if found is None:
            raise RequestError("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND", status=200)
        return found

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"PersistedQueries(max_entries={self.max_entries}, max_bytes={self.max_bytes})"


def _normalized(query: str, max_tokens: int | None = None) -> str | None:
    try:
        return print_ast(parse(query, no_location=True, max_tokens=max_tokens))
    except (GraphQLSyntaxError, RecursionError):
        return None


def _tokens(query: str) -> int:
    count = getattr(parse(query, no_location=True), "token_count", None)  # graphql-core >= 3.3
    return count if isinstance(count, int) else len(query)


class Safelist:
    """Run only the operations of a manifest; anything else is refused (``PERSISTED_QUERY_NOT_IN_SAFELIST``).

    `manifest`: a path to an Apollo persisted query manifest (JSON with ``operations: [{id, body}]``), a JSON
    object mapping ids to query texts, or such a mapping or a list of texts in code (ids are then their SHA-256).
    Clients send an id (``extensions.persistedQuery.sha256Hash``, or ``documentId`` / ``id`` in the request) or
    the full text of a listed operation (compared after normalizing whitespace), unless `allow_text` is False.
    """

    def __init__(self, manifest: str | os.PathLike[str] | Mapping[str, str] | Iterable[str], *,
                 allow_text: bool = True) -> None:
        operations = self._load(manifest)
        if not operations:
            raise ConfigurationError("Safelist manifest lists no operations.")
        self.operations: dict[str, str] = {}
        self._texts: set[str] = set()
        self._bodies: set[str] = set()
        most = 0
        for op_id, body in operations.items():
            normalized = _normalized(body)
            if normalized is None:
                raise ConfigurationError(f"Safelist operation {op_id!r} is not valid GraphQL.")
            self.operations[op_id.lower() if len(op_id) == 64 else op_id] = body
            self.operations.setdefault(sha256(body), body)
            self._texts.add(normalized)
            self._bodies.add(body)
            most = max(most, _tokens(body))
        # A client's text is parsed to compare it: a text with many more tokens than the longest listed operation
        # cannot be one of them (room is left for a `query` keyword, comments), so parsing stops there.
        self._max_tokens = 2 * most + 64
        self.allow_text = allow_text

    @staticmethod
    def _load(manifest: Any) -> dict[str, str]:
        if isinstance(manifest, str | os.PathLike):
            try:
                with open(manifest, "rb") as handle:
                    data = orjson.loads(handle.read())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise ConfigurationError(f"Safelist manifest {os.fspath(manifest)!r}: {exc}") from None
            if isinstance(data, dict) and isinstance(data.get("operations"), list):
                return {str(op["id"]): str(op["body"]) for op in data["operations"]
                        if isinstance(op, dict) and "id" in op and "body" in op}
            if isinstance(data, dict):
                return {str(k): str(v) for k, v in data.items()}
            raise ConfigurationError(f"Safelist manifest {os.fspath(manifest)!r} is neither a manifest nor a map.")
        if isinstance(manifest, Mapping):
            return {str(k): str(v) for k, v in manifest.items()}
        return {sha256(text): text for text in manifest}

    def resolve(
        self, query: str | None, extensions: Mapping[str, Any] | None, payload: Mapping[str, Any]
    ) -> str | None:
        requested = _requested_hash(extensions) or payload.get("documentId") or payload.get("id")
        if isinstance(requested, str) and requested:
            found = self.operations.get(requested) or self.operations.get(requested.lower())
            if found is None:
                raise RequestError("This operation is not in the safelist.", "PERSISTED_QUERY_NOT_IN_SAFELIST")
            if query is not None and query != found and _normalized(query, self._max_tokens) != _normalized(found):
                raise RequestError("The query does not match the listed operation.", "PERSISTED_QUERY_HASH_MISMATCH")
            return found
        if query is None:
            return None
        if self.allow_text and (query in self._bodies or _normalized(query, self._max_tokens) in self._texts):
            return query
        raise RequestError("Only safelisted operations may run here.", "PERSISTED_QUERY_NOT_IN_SAFELIST")

    def __repr__(self) -> str:
        return f"Safelist({len(self._texts)} operations)"
