"""Whatever a client sends a GraphQL route, the answer is never a 5xx and nothing is logged as an error or with a
traceback: request bodies, GET parameters, batches and GraphQL documents (random token soup, generated documents
with fragments, variables and directives, deep nesting) fuzzed with hypothesis against a real served gateway
(bounded and derandomized), plus a few requests sent as raw bytes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from gqlschema import schema
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from asgigate import Gateway, Route
from asgigate.graphql import (
    DeGraphQL,
    GraphQL,
    GraphQLCost,
    GraphQLLimits,
    PersistedQueries,
    Safelist,
)
from asgigate.testing import BackgroundServer

from servers import raw_request

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# the schema (tests/gqlschema.py) has resolvers with no bugs of their own: any 500 or traceback is the gateway's
ROUTES = ["/graphql", "/batched", "/limited", "/cost", "/apq", "/safe"]


class BadLogs(logging.Handler):
    """Every record at ERROR or above, or with a traceback, from any thread of the process."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def bad_logs() -> Iterator[BadLogs]:
    handler = BadLogs()
    root = logging.getLogger()
    root.addHandler(handler)
    # everything the gateway, strawberry and graphql-core log, whatever the level (a traceback at DEBUG counts)
    loggers = [logging.getLogger(name) for name in ("asgigate", "strawberry", "graphql")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@pytest.fixture(scope="module")
def server(bad_logs: BadLogs) -> Iterator[BackgroundServer]:
    api = GraphQL(schema, cost=GraphQLCost(maximum=50))

    class Fuzzed(Gateway):
        def routes(self) -> list[Route]:
            return [
                Route("/graphql", GraphQL(schema)),
                Route("/batched", GraphQL(schema, batching=True, limits=GraphQLLimits(max_batch=4))),
                Route("/limited", GraphQL(schema, limits=GraphQLLimits(max_depth=3, max_aliases=2, max_root_fields=2,
                                                                       max_tokens=80, max_body_size=4000))),
                Route("/cost", api),
                Route("/apq", GraphQL(schema, persisted=PersistedQueries(max_entries=50, max_bytes=64 * 1024))),
                Route("/safe", GraphQL(schema, persisted=Safelist(["query Hello { hello }",
                                                                   "query Item($id: Int!) { item(id: $id) { id } }"]))),
                Route("/rest/items/{id}", DeGraphQL(api, "query($id: Int!, $first: Int) { item(id: $id) { id "
                                                         "children(first: $first) { id } } }", unwrap=True)),
            ]

    with BackgroundServer(Fuzzed(access_log=False)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def check(response: httpx.Response, bad_logs: BadLogs, *, graphql: bool = True) -> None:
    records, bad_logs.records = bad_logs.records, []
    assert response.status_code < 500, response.text
    assert not records, [(r.name, r.levelname, r.getMessage()) for r in records]
    content_type = response.headers.get("content-type", "")
    assert "json" in content_type, content_type
    body = response.json()
    if response.status_code >= 400 and content_type.startswith("application/problem+json"):
        assert body["status"] == response.status_code and body["code"]
    elif graphql and isinstance(body, dict):
        assert body.keys() <= {"data", "errors", "extensions"} and ("data" in body or body["errors"])


# --- strategies ---------------------------------------------------------------------------------------

JSON_KEYS = st.sampled_from(["id", "n", "first", "name", "ids", "color", "text", "f", "v", "query", "persistedQuery",
                             "sha256Hash", "version"]) | st.text(max_size=5)


def json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # a named function: Hypothesis reads a lambda spread over several lines as one that ignores its argument
    return st.lists(children, max_size=4) | st.dictionaries(JSON_KEYS, children, max_size=4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    json_containers,
    max_leaves=12,
)

NAMES = ["hello", "item", "items", "children", "parent", "id", "color", "checked", "echo", "__typename", "__schema",
         "types", "name", "nope", "F", "G", "H", "Item", "Query", "Mutation", "Filter", "RED", "BLUE"]
TOKENS = [*NAMES, "{", "}", "(", ")", "[", "]", ":", "...", "$", "$id", "$n", "@include", "@skip", "@nope", "if",
          "on", "fragment", "query", "mutation", "subscription", "!", "=", ",", "|", "&", "1", "-3", "1.5e3", "true",
          "null", '"x"', '"""y"""', "#c\n", "\u00e9", "\\", '"', "99999999999999999999999"]

soup = st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join)

VALUES = st.sampled_from(["1", "-1", "0", "2147483648", "1.5", "true", "null", '"s"', "RED", "nope", "$n", "$id", "$f",
                          "[1, 2]", "[[1]]", '{name: "a"}', "{ids: [1, $n]}", "{color: BLUE}", "{nope: 1}"])


@st.composite
def selections(draw: st.DrawFn, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "field", "inline", "spread"]))
        if kind == "spread":
            parts.append("..." + draw(st.sampled_from(["F", "G", "H", "Nope"])))
            continue
        if kind == "inline":
            condition = draw(st.sampled_from(["", " on Item", " on Query", " on Nope"]))
            parts.append(f"...{condition} {{ {draw(selections(depth + 1)) if depth < 4 else 'id'} }}")
            continue
        name = draw(st.sampled_from(NAMES))
        alias = draw(st.sampled_from(["", "", "a: ", "b: "]))
        args = ""
        if draw(st.booleans()):
            arg = draw(st.sampled_from(["id", "first", "n", "name", "c", "filter", "text", "nope"]))
            args = f"({arg}: {draw(VALUES)})"
        directive = draw(st.sampled_from(["", "", " @include(if: true)", " @skip(if: $b)", " @nope"]))
        sub = f" {{ {draw(selections(depth + 1))} }}" if depth < 4 and draw(st.booleans()) else ""
        parts.append(f"{alias}{name}{args}{directive}{sub}")
    return " ".join(parts)


@st.composite
def broken_documents(draw: st.DrawFn) -> str:
    """Documents put together from pieces: mostly invalid in some way (unknown names, wrong types, cycles)."""
    definitions = []
    for _ in range(draw(st.integers(0, 2))):
        operation = draw(st.sampled_from(["", "query", "query Q", "query R", "mutation M", "subscription S"]))
        variables = draw(st.sampled_from(["", "($n: Int)", "($id: Int!, $b: Boolean = false)",
                                          "($f: Filter, $n: Int = 3)", "($n: Nope)", "($n: Int, $n: Int)"]))
        head = f"{operation}{variables} " if operation else ""
        definitions.append(f"{head}{{ {draw(selections())} }}")
    for name in draw(st.lists(st.sampled_from(["F", "G", "H"]), max_size=3, unique=True)):
        on = draw(st.sampled_from(["Query", "Item", "Nope"]))
        definitions.append(f"fragment {name} on {on} {{ {draw(selections(2))} }}")
    return " ".join(definitions)


# The schema as the generator of valid documents sees it: field -> (arguments, the type of its selection).
FIELDS: dict[str, dict[str, tuple[tuple[str, ...], str | None]]] = {
    "Query": {"hello": (("name",), None), "item": (("id",), "Item"), "items": (("first", "filter"), "Item"),
              "color": (("c",), None), "checked": (("n",), None), "__typename": ((), None)},
    "Item": {"id": ((), None), "children": (("first",), "Item"), "parent": ((), "Item"), "__typename": ((), None)},
}
ARGUMENTS = {"name": "String", "id": "Int", "first": "Int", "n": "Int", "c": "Color", "filter": "Filter"}
LITERALS = {"String": ['"x"', '""', '"\\u00e9"'], "Int": ["1", "0", "-5", "2147483647", "3"],
            "Color": ["RED", "BLUE"], "Filter": ['{name: "a"}', "{ids: [1, 2]}", "{color: BLUE, ids: []}", "{}"]}


@st.composite
def valid_documents(draw: st.DrawFn) -> str:
    """Documents that validate (now and then they break a limit or the cost): fields with arguments, literals or
    declared variables, aliases, directives, inline fragments and fragments spreading later fragments."""
    used: dict[str, str] = {}  # variable -> type
    chosen: dict[tuple[str, str], str] = {}  # (type, field) -> its arguments
    fragments: list[tuple[str, str]] = []  # (name, type), defined after the operation
    bodies: dict[str, str] = {}

    def selection_set(parent: str, depth: int) -> str:
        parts = []
        names = sorted(FIELDS[parent])
        for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
            arguments, child = FIELDS[parent][name]
            if (parent, name) not in chosen:  # the same arguments wherever the field is selected: no conflicts
                given_ = []
                for argument in arguments:
                    if draw(st.integers(0, 2)) == 0:
                        continue
                    kind = ARGUMENTS[argument]
                    if draw(st.booleans()):
                        variable = {"Int": "n", "String": "s", "Color": "c", "Filter": "f"}[kind]
                        used[variable] = kind
                        given_.append(f"{argument}: ${variable}")
                    else:
                        given_.append(f"{argument}: {draw(st.sampled_from(LITERALS[kind]))}")
                chosen[(parent, name)] = f"({', '.join(given_)})" if given_ else ""
            text = name + chosen[(parent, name)]
            directive = draw(st.sampled_from(["", "", "", " @include(if: $b)", " @skip(if: $b)",
                                              " @include(if: true)"]))
            if "$b" in directive:
                used["b"] = "Boolean!"
            text += directive
            if child is not None:
                text += " { " + (selection_set(child, depth + 1) if depth < 5 else "id") + " }"
            parts.append(text)
        if draw(st.integers(0, 3)) == 3:
            parts.append(f"... on {parent} {{ __typename }}")
        if depth < 5 and draw(st.integers(0, 2)) == 2:
            name = f"{parent}{len(fragments)}"
            fragments.append((name, parent))
            parts.append(f"...{name}")
            # a fragment spread twice now and then (aliases, cost and limits count it twice)
            if draw(st.integers(0, 3)) == 3:
                parts.append(f"...{name}")
        return " ".join(parts)

    operation = draw(st.sampled_from(["query", "mutation"]))
    text = draw(st.sampled_from(LITERALS["String"]))
    body = selection_set("Query", 0) if operation == "query" else f"echo(text: {text})"
    index = 0
    while index < len(fragments):  # fragments may spread further fragments, never earlier ones: no cycles
        name, parent = fragments[index]
        bodies[name] = selection_set(parent, 3)
        index += 1
    head = operation
    if used:
        head += "(" + ", ".join(f"${name}: {kind}" for name, kind in sorted(used.items())) + ")"
    return " ".join([f"{head} {{ {body} }}", *(f"fragment {name} on {parent} {{ {bodies[name]} }}"
                                                for name, parent in fragments)])


documents = st.one_of(valid_documents(), valid_documents(), broken_documents())


def payloads(query: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    variables = st.none() | st.fixed_dictionaries({}, optional={"n": JSON, "s": JSON, "f": JSON, "b": JSON}) | JSON
    operation_names = st.sampled_from([None, "Q", "R", "M", "", "Nope"]) | JSON
    extensions = st.none() | st.just({"persistedQuery": {"version": 1, "sha256Hash": "ab"}}) | JSON
    return st.fixed_dictionaries({}, optional={
        "query": query, "variables": variables, "operationName": operation_names, "extensions": extensions,
        "documentId": st.text(max_size=8) | JSON, "id": JSON})


ACCEPTS = st.sampled_from(["application/json", "application/graphql-response+json", "*/*",
                           "application/graphql-response+json, application/json;q=0.9"])


# --- the fuzz tests -------------------------------------------------------------------------------------

@FUZZ
@given(path=st.sampled_from(ROUTES), accept=ACCEPTS, payload=payloads(st.none() | documents | soup | JSON))
def test_fuzz_post_bodies(client: httpx.Client, bad_logs: BadLogs, path: str, accept: str, payload: Any) -> None:
    check(client.post(path, content=orjson.dumps(payload),
                      headers={"content-type": "application/json", "accept": accept}), bad_logs)


@FUZZ
@given(path=st.sampled_from(ROUTES), accept=ACCEPTS, document=documents | soup,
       variables=st.none() | st.dictionaries(st.sampled_from(["n", "s", "c", "f", "b"]), JSON, max_size=3)
       | st.fixed_dictionaries({"n": st.integers(-3, 5), "s": st.text(max_size=5), "c": st.sampled_from(["RED", "X"]),
                                "f": st.just({"ids": [1]}), "b": st.booleans()}),
       method=st.sampled_from(["GET", "POST"]))
def test_fuzz_documents(client: httpx.Client, bad_logs: BadLogs, path: str, accept: str, document: str,
                        variables: dict[str, Any] | None, method: str) -> None:
    for route in {path, "/cost"}:  # each document through the cost analysis too, the route that does the most
        if method == "GET":
            params = {"query": document}
            if variables is not None:
                params["variables"] = orjson.dumps(variables).decode()
            response = client.get(route, params=params, headers={"accept": accept})
        else:
            response = client.post(route, json={"query": document, "variables": variables},
                                   headers={"accept": accept})
        check(response, bad_logs)


@FUZZ
@given(params=st.lists(st.tuples(st.sampled_from(["query", "variables", "extensions", "operationName", "x", ""]),
                                 st.text(max_size=30) | st.sampled_from(["{", "[]", "null", "{}", '{"n": 1}', "%zz",
                                                                          "{ hello }", "[[[[[[[[1]]]]]]]]"])),
                       max_size=5),
       raw=st.binary(max_size=12))
def test_fuzz_get_parameters(client: httpx.Client, bad_logs: BadLogs, params: list[tuple[str, str]],
                             raw: bytes) -> None:
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params)
    check(client.get(f"/graphql?{query}&{quote(raw, safe='')}", headers={"accept": "application/json"}), bad_logs)


@FUZZ
@given(batch=st.lists(payloads(st.none() | documents | JSON) | JSON, max_size=6), path=st.sampled_from(ROUTES))
def test_fuzz_batches(client: httpx.Client, bad_logs: BadLogs, batch: list[Any], path: str) -> None:
    check(client.post(path, json=batch), bad_logs)


@settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # no shrinking: slow, and no use here
@given(kind=st.sampled_from(["fields", "lists", "objects", "inline", "variables", "chain", "doubling", "sizes"]),
       depth=st.integers(1, 1200), path=st.sampled_from(["/graphql", "/cost", "/apq"]))
def test_fuzz_nesting(client: httpx.Client, bad_logs: BadLogs, kind: str, depth: int, path: str) -> None:
    variables: dict[str, Any] = {}
    if kind == "fields":
        query = "{ item { " + "parent { " * depth + "id" + " }" * depth + " } }"
    elif kind == "lists":
        query = "{ items(filter: {ids: " + "[" * depth + "1" + "]" * depth + "}) { id } }"
    elif kind == "objects":
        query = "{ items(filter: " + "{name: " * depth + '"x"' + "}" * depth + ") { id } }"
    elif kind == "inline":
        query = "{ " + "... { " * depth + "hello" + " }" * depth + " }"
    elif kind == "variables":
        query = "query($f: Filter) { items(filter: $f) { id } }"
        nested: Any = 1
        for _ in range(min(depth, 250)):  # orjson refuses JSON nested deeper than 255 levels
            nested = [nested]
        variables = {"f": {"ids": nested}}
    elif kind == "sizes":  # list sizes multiply in the cost analysis (the lists themselves stay short)
        levels = min(depth, 4)
        query = ("{ items(first: 2147483647) { " + "children(first: 2147483647) { " * levels + "id"
                 + " }" * levels + " } }")
    elif kind == "chain":
        query = ("{ ...F0 } " + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(depth))
                 + f" fragment F{depth} on Query {{ hello }}")
    else:
        levels = min(depth, 60)
        query = ("{ ...F0 } " + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}"
                                         for i in range(levels)) + f" fragment F{levels} on Query {{ item {{ id }} }}")
    check(client.post(path, json={"query": query, "variables": variables}), bad_logs)


# pieces that are cheap to write and costly to validate, repeated up to the default limits (max_tokens, the
# work of OverlappingFieldsCanBeMerged, max_variable_values) and now and then past them
PIECES = ["id", "parent { id }", "children(first: 2) { id }", "children(first: $n) { id }", "... on Item { id }",
          "...I", "parent { ...I }", "children { ...I }", "a: id", "id @include(if: $b)", "children(first: 1) { id }",
          "parent { parent { children(first: 3) { id } } }", "__typename"]


@settings(max_examples=40, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=4), tokens=st.integers(50, 1_100),
       ids=st.sampled_from([0, 1_999, 2_000, 2_001]) | st.integers(0, 2_100),
       path=st.sampled_from(["/graphql", "/cost"]))
def test_fuzz_documents_at_the_limits(client: httpx.Client, bad_logs: BadLogs, pieces: list[str], tokens: int,
                                      ids: int, path: str) -> None:
    piece = " ".join(pieces)
    times = max(1, tokens // (piece.count(" ") + 1 + piece.count("(") * 3))  # about as many tokens as asked
    body = " ".join([piece] * times)
    declared = ", ".join(["$f: Filter", *(["$n: Int"] if "$n" in body else []),
                          *(["$b: Boolean!"] if "$b" in body else [])])
    query = (f"query Q({declared}) {{ items(filter: $f) {{ id }} item {{ {body} }} }}"
             + (" fragment I on Item { id parent { id } }" if "...I" in body else ""))
    check(client.post(path, json={"query": query, "variables": {"n": 1, "b": True, "f": {"ids": [1] * ids}}},
                      headers={"accept": "application/graphql-response+json"}), bad_logs)


@FUZZ
@given(item_id=st.text(max_size=30) | st.integers().map(str), first=st.none() | st.text(max_size=30))
def test_fuzz_degraphql_parameters(client: httpx.Client, bad_logs: BadLogs, item_id: str, first: str | None) -> None:
    params = {"first": first} if first is not None else {}
    check(client.get("/rest/items/" + quote(item_id, safe=""), params=params), bad_logs, graphql=False)


# --- raw bytes ---------------------------------------------------------------------------------------

def raw_post(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type + b"\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body)


def raw_get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"


RAW = [
    raw_post(b'{"query": "{ \xff\xfe }"}'),                                   # not UTF-8
    raw_post(b'\xef\xbb\xbf{"query": "{ hello }"}'),                            # a byte order mark
    raw_post(b'{"query": "{ hello }", "query": {"a": 1}}'),                     # a duplicate key
    raw_post(b'{"query": "query($n: Int) { checked(n: $n) }", "variables": {"n": 123456789012345678901234567890}}'),
    raw_post(b'{"query": "{ item(id: 99999999999999999999) { id } }"}'),
    raw_post(b'{"query": "{ hello }", "variables": {"n": NaN}}'),
    raw_post(b"[]", b"application/json; charset=latin-1"),
    raw_post(b'{"query": "{ hello }"}', b"application/vnd.custom+json"),
    b'POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n'
    b'Connection: close\r\n\r\n5\r\n{"que\r\n12\r\nry": "{ ...Nope }"}\r\n0\r\n\r\n',
    raw_get(b"/graphql?query=%7B%20hello%20%7D&variables=%ff%fe"),
    raw_get(b"/graphql?query=%zz%7B&operationName=%00"),
    raw_get(b"/graphql?query=%7B%20...Nope%20%7D"),
    raw_get(b"/graphql?query=%7B%20hello%20%7D&query=%7B%20item%20%7D&variables=%7B%7D&variables=%5B%5D"),
    raw_get(b"/graphql?query=mutation%20%7B%20echo(text:%20%22x%22)%20%7D"),
    raw_get(b"/rest/items/99999999999999999999%00?first=1e999"),
    raw_get(b"/rest/items/1?first=" + b"9" * 5000),
]


@pytest.mark.parametrize("request_bytes", RAW, ids=range(len(RAW)))
def test_raw_requests(server: BackgroundServer, bad_logs: BadLogs, request_bytes: bytes) -> None:
    bad_logs.records.clear()
    port = int(server.url.rsplit(":", 1)[1])
    answer = raw_request(port, request_bytes)
    status = int(answer.split(b" ", 2)[1])
    assert 200 <= status < 500, answer[:500]
    assert not bad_logs.records, [(r.name, r.levelname, r.getMessage()) for r in bad_logs.records]
