"""Malformed input to transcoded routes is always a 4xx, never a 500: paths, query strings and JSON bodies fuzzed
with hypothesis against a real gateway and a real grpc.aio backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgigate import ClientError, Gateway, Group, Route
from asgigate.grpc import Descriptors, GrpcService, JsonOptions
from asgigate.grpc.httprule import bindings_from_rule
from asgigate.grpc.mapping import RequestMapper
from asgigate.testing import BackgroundServer

from grpcbackend import GrpcServer, compiled

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    class Api(Gateway):
        def routes(self) -> list[Route | Group]:
            return [GrpcService.from_descriptor_set(compiled().descriptor_set, backend.url,
                                                    services=["library.v1.LibraryService"])]

    with GrpcServer() as backend, BackgroundServer(Api()) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            yield http


def check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in (501, 503, 504), response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] in ("application/json", "application/problem+json")
        response.json()


_FIELDS = ["query", "tags", "genre", "genres", "max_id", "maxId", "big", "in_print", "score", "filter.author",
           "filter.pages.min", "filter.pages", "since", "within", "fields", "limit", "available", "token", "ratio",
           "ids", "filter.pages.min.x", "", ".", "filter..author", "nope"]
_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["1", "-1", "1e40", "NaN", "Infinity", "true", "FALSE", "HISTORY", "99", "9223372036854775808",
                     "18446744073709551616", "1.5s", "2017-13-45T99:00:00Z", "a.b,c", "%zz", "=", "&"]),
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_FIELDS), _VALUES), max_size=6))
def test_fuzz_query_parameters(client: httpx.Client, params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{quote(k, safe='.')}={quote(v, safe='')}" for k, v in params)
    check(client.get("/v1/search?" + query))


@FUZZ
@given(st.text(st.characters(codec="utf-8"), max_size=40), st.binary(max_size=20))
def test_fuzz_raw_query_strings(client: httpx.Client, text: str, raw: bytes) -> None:
    check(client.get("/v1/search?" + quote(text, safe="=&%.") + "&" + quote(raw, safe="")))


@FUZZ
@given(st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8), min_size=1, max_size=5))
def test_fuzz_paths(client: httpx.Client, segments: list[str]) -> None:
    path = "/v1/" + "/".join(quote(s, safe=":*") for s in segments)
    for method in ("GET", "POST", "DELETE", "PATCH"):
        check(client.request(method, path, content=b"{}"))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "theme", "genre", "text", "sleepMs", "sleep_ms", "x", "shelf", "name", "@type"]),
        children, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(_JSON)
def test_fuzz_json_bodies(client: httpx.Client, value: Any) -> None:
    body = json.dumps(value).encode()
    check(client.post("/v1/shelves", content=body))
    check(client.patch("/v1/shelves/1", content=body))
    if not (isinstance(value, dict) and (value.get("sleepMs") or value.get("sleep_ms"))):
        check(client.post("/v1/echo", content=body))
    check(client.post("/v1/books/x/tags", content=body))
    check(client.post("/v1/books:collect", content=body + b"\n" + body))


@FUZZ
@given(st.binary(max_size=60))
def test_fuzz_raw_bodies(client: httpx.Client, body: bytes) -> None:
    check(client.post("/v1/shelves", content=body))
    check(client.post("/v1/books:collect", content=body))
    check(client.post("/v1/books:chat", content=body))


# --- the mapping alone, many more cases ---------------------------------------------------------------------


def _mapper(method_name: str) -> RequestMapper:
    descriptors = Descriptors.from_file_descriptor_set(compiled().descriptor_set)
    method = next(m for m in descriptors.methods("library.v1.LibraryService") if m.name == method_name)
    return RequestMapper(method.input, bindings_from_rule(method.rule)[0], JsonOptions())


SEARCH = _mapper("Search")
UPDATE = _mapper("UpdateShelf")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_FIELDS), _VALUES), max_size=8))
def test_fuzz_query_mapping_raises_only_client_errors(params: list[tuple[str, str]]) -> None:
    try:
        SEARCH.message({}, params, b"", None)
    except ClientError:
        pass


@settings(max_examples=500, deadline=None)
@given(_JSON, st.text(max_size=8))
def test_fuzz_body_and_path_mapping_raises_only_client_errors(value: Any, shelf_id: str) -> None:
    try:
        UPDATE.message({("shelf", "id"): shelf_id}, [], json.dumps(value).encode(), "application/json")
    except ClientError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "+", "%2B", "%20", "=", "&", "%", "%zz", "%C3%A9", "%ff", "\xe9", ";", "b"]),
                max_size=12).map(lambda parts: "".join(parts).encode()), st.booleans())
def test_fuzz_query_decoding(raw: bytes, plus_as_space: bool) -> None:
    from urllib.parse import parse_qsl

    from asgigate.grpc.target import _query

    try:
        pairs = _query(raw, plus_as_space)
    except ClientError:
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")  # only a query that is not UTF-8 is refused (after percent-decoding)
            parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
        return
    # with the option, exactly the HTML form rule; without, the same but "+" is a plus
    form = raw if plus_as_space else raw.replace(b"+", b"%2B")
    assert pairs == parse_qsl(form.decode("utf-8"), keep_blank_values=True, errors="strict")
