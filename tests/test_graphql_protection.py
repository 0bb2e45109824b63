"""Protection of a GraphQL route: document limits, cost analysis (measure, enforce, cost-based rate limit),
automatic persisted queries and safelists; through a real server, with a REST backend counting calls."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import strawberry
from graphql import parse
from strawberry.types import Info

from asgigate import ConfigurationError, Exchange, Gateway, Policy, RateLimit, ResponseHead, Route, Upstream
from asgigate.graphql import GraphQL, GraphQLContext, GraphQLCost, GraphQLLimits, PersistedQueries, Safelist
from asgigate.graphql.protection import MAX_COST
from asgigate.policies.ratelimit import by_client_ip
from asgigate.testing import BackgroundServer

from graphqlbackends import load

GQL = "application/graphql-response+json"


@strawberry.type
class Item:
    id: int

    @strawberry.field
    def children(self, first: int = 5) -> list[Item]:
        return [Item(id=self.id * 10 + n) for n in range(first)]

    @strawberry.field
    def parent(self) -> Item:
        return Item(id=self.id // 10)


@strawberry.type
class Query:
    @strawberry.field
    def item(self, id: int = 1) -> Item:
        return Item(id=id)

    @strawberry.field
    def items(self, first: int = 10) -> list[Item]:
        return [Item(id=n) for n in range(first)]

    @strawberry.field
    async def user_name(self, info: Info[GraphQLContext, None], id: int = 1) -> str:
        return (await info.context.rest("users", "/users/{id}", id=id))["name"]  # type: ignore[no-any-return]

    @strawberry.field
    def cost(self, info: Info[GraphQLContext, None]) -> int | None:
        return info.context.cost

    @strawberry.field
    def hello(self) -> str:
        return "world"


schema = strawberry.Schema(query=Query)
SAFE = ["query Hello { hello }", "query Item($id: Int!) { item(id: $id) { id } }"]
LIMITED = RateLimit("20/minute", key=by_client_ip, name="graphql-cost")


class CostHeader(Policy):
    """What a logging or billing policy would do with the cost: here, report it in a header."""

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers["x-graphql-cost"] = str(exchange.state.get("graphql.cost"))


@pytest.fixture(scope="module")
def rest() -> Iterator[Any]:
    app = load("rest_service").make_app()
    with BackgroundServer(app) as server:
        server.app = app  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def gateway(rest: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    manifest = tmp_path_factory.mktemp("pq") / "manifest.json"
    manifest.write_bytes(orjson.dumps({"format": "apollo-persisted-query-manifest", "version": 1, "operations": [
        {"id": hashlib.sha256(q.encode()).hexdigest(), "name": q.split()[1], "type": "query", "body": q}
        for q in SAFE]}))
    users = Upstream(rest.url, name="users")

    class BFF(Gateway):
        def routes(self) -> list[Route]:
            return [
                Route("/default", GraphQL(schema)),
                Route("/long", GraphQL(schema, limits=GraphQLLimits(max_tokens=10_000), cost=GraphQLCost())),
                Route("/limited", GraphQL(schema, upstreams=[users], limits=GraphQLLimits(
                    max_depth=3, max_aliases=2, max_root_fields=3, max_tokens=60, max_body_size=2000))),
                Route("/cost", GraphQL(schema, upstreams=[users], cost=GraphQLCost(
                    maximum=100, field_costs={"Query.userName": 20}, list_sizes={"Query.items": 10})),
                      policies=[CostHeader()]),
                Route("/measure", GraphQL(schema, cost=GraphQLCost(maximum=10, mode="measure"))),
                Route("/charged", GraphQL(schema, cost=GraphQLCost(rate_limit=LIMITED, expose=False))),
                Route("/apq", GraphQL(schema, persisted=PersistedQueries())),
                Route("/safe", GraphQL(schema, upstreams=[users], persisted=Safelist(manifest))),
                Route("/safe-ids", GraphQL(schema, persisted=Safelist(SAFE, allow_text=False))),
            ]

    with BackgroundServer(BFF(access_log=False)) as server:
        yield server.url


def post(gateway: str, path: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway + path, json=payload, headers={"accept": GQL}, timeout=10)


def code_of(response: httpx.Response) -> str:
    return response.json()["errors"][0]["extensions"]["code"]  # type: ignore[no-any-return]


# --- limits -------------------------------------------------------------------------------------------

def test_depth_limit(gateway: str) -> None:
    assert post(gateway, "/limited", {"query": "{ item { parent { parent { id } } } }"}).status_code == 200
    deep = post(gateway, "/limited", {"query": "{ item { parent { parent { parent { id } } } } }"})
    assert deep.status_code == 400
    assert "exceeds maximum operation depth" in deep.json()["errors"][0]["message"]
    fragment = post(gateway, "/limited", {"query": "{ item { ...F } } fragment F on Item { parent { parent { "
                                                   "parent { id } } } }"})
    assert fragment.status_code == 400


def test_alias_and_root_field_limits(gateway: str) -> None:
    aliases = post(gateway, "/limited", {"query": "{ a: hello b: hello c: hello }"})
    assert aliases.status_code == 400
    assert "aliases" in aliases.json()["errors"][0]["message"]
    roots = post(gateway, "/limited", {"query": "{ hello item { id } items { id } ...on Query { cost } }"})
    assert roots.status_code == 400
    assert code_of(roots) == "ROOT_FIELDS_LIMIT_EXCEEDED"
    assert post(gateway, "/limited", {"query": "{ hello item { id } items { id } }"}).status_code == 200


def test_aliases_count_once_per_spread_of_their_fragment(gateway: str) -> None:
    twice = "{ ...A } fragment A on Query { ...B ...B } fragment B on Query { x: hello }"
    assert post(gateway, "/limited", {"query": twice}).status_code == 200
    four_times = "{ ...A } fragment A on Query { ...B ...B } fragment B on Query { ...C ...C } " \
                 "fragment C on Query { x: hello }"
    refused = post(gateway, "/limited", {"query": four_times})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["message"] == "4 aliases found. Allowed: 2"
    assert code_of(refused) == "ALIAS_LIMIT_EXCEEDED"


# --- documents that crashed the limits: ordinary validation errors now ------------------------------------

ROUTES = ["/default", "/limited", "/cost", "/measure", "/apq"]


def chain(length: int) -> str:
    """An operation spreading a fragment that spreads the next one, `length` times."""
    return ("query { ...F0 } " + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(length))
            + f" fragment F{length} on Query {{ hello }}")


@pytest.mark.parametrize("path", ROUTES)
def test_an_unknown_fragment_is_a_validation_error(gateway: str, path: str) -> None:
    response = post(gateway, path, {"query": "{ ...Nope }"})
    assert response.status_code == 400
    assert response.json()["errors"][0] == {"message": "Unknown fragment 'Nope'.", "locations": [
        {"line": 1, "column": 6}], "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}
    for accept in ("application/json", "*/*"):
        legacy = httpx.post(gateway + path, json={"query": "{ ...Nope }"}, headers={"accept": accept})
        assert legacy.status_code == 200
        assert code_of(legacy) == "GRAPHQL_VALIDATION_FAILED"
        by_get = httpx.get(gateway + path, params={"query": "{ item { ...Nope } }"}, headers={"accept": accept})
        assert by_get.status_code == 200
        assert by_get.json()["errors"][0]["message"] == "Unknown fragment 'Nope'."


@pytest.mark.parametrize("path", ["/long", "/default"])
def test_a_long_chain_of_fragment_spreads_is_a_validation_error(gateway: str, path: str) -> None:
    # deeper than graphql-core's 200 levels: about 10 KB and 2,400 tokens, past the default max_tokens (a parse
    # error, below) but within the route's
    query = chain(300)
    assert 10_000 < len(query) < 11_000
    if path == "/default":
        assert code_of(post(gateway, path, {"query": query})) == "GRAPHQL_PARSE_FAILED"
        return
    response = post(gateway, path, {"query": query})
    assert response.status_code == 400
    assert code_of(response) == "GRAPHQL_VALIDATION_FAILED"
    by_get = httpx.get(gateway + path, params={"query": query}, headers={"accept": "application/json"})
    assert by_get.status_code == 200
    assert code_of(by_get) == "GRAPHQL_VALIDATION_FAILED"
    # a chain graphql-core accepts passes the limits too, which walk it without recursion
    assert post(gateway, path, {"query": chain(150)}).json()["data"] == {"hello": "world"}


def test_fragments_spread_twice_at_every_level_are_measured_in_linear_time(gateway: str) -> None:
    # 2**20 paths through the fragments: walking each (as strawberry's limiters did) takes many seconds
    query = ("query { ...F0 } " + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}"
                                           for i in range(20)) + " fragment F20 on Query { item { id } }")
    for path in ("/default", "/measure"):
        started = time.monotonic()
        response = post(gateway, path, {"query": query})
        assert time.monotonic() - started < 3
        assert response.status_code == 200
        assert response.json()["data"] == {"item": {"id": 1}}
    assert response.json()["extensions"]["cost"]["estimated"] == 2**20  # item counts once per path
    limits = GraphQLLimits(max_depth=1, max_aliases=1)
    started = time.monotonic()
    assert [error.message for error in limits.check(parse(query.replace("item { id }", "x: item { y: id }")))] == [
        "2097152 aliases found. Allowed: 1"]
    assert time.monotonic() - started < 1


def test_limits_count_as_strawberrys_limiters_did() -> None:
    """The depth: the deepest field, root fields at 0, nothing below an introspection field, through fragments
    and inline fragments; aliases: every alias of every operation, once per spread."""
    def depth_errors(query: str, maximum: int) -> list[str]:
        return [error.message for error in GraphQLLimits(max_depth=maximum).check(parse(query))]

    assert depth_errors("{ item { parent { id } } }", 2) == []
    assert depth_errors("{ item { parent { parent { id } } } }", 2) == ["'anonymous' exceeds maximum operation "
                                                                       "depth of 2"]
    assert depth_errors("query Q { item { ...on Item { parent { ...P } } } } fragment P on Item { parent { id } }",
                        2) == ["'Q' exceeds maximum operation depth of 2"]
    assert depth_errors("{ __schema { types { fields { type { name } } } } }", 1) == []
    assert depth_errors("{ item { __typename } }", 1) == []
    aliases = GraphQLLimits(max_aliases=3).check(parse("query A { a: hello } query B { b: hello c: hello d: hello }"))
    assert [error.message for error in aliases] == ["4 aliases found. Allowed: 3"]


def test_token_and_size_limits(gateway: str) -> None:
    many_tokens = post(gateway, "/limited", {"query": "{ hello " + "__typename " * 60 + "}"})
    assert many_tokens.status_code == 400
    assert code_of(many_tokens) == "GRAPHQL_PARSE_FAILED"
    assert "more than 60 tokens" in many_tokens.json()["errors"][0]["message"]
    big = post(gateway, "/limited", {"query": "{ hello }", "variables": {"pad": "x" * 3000}})
    assert big.status_code == 413


# --- cost ---------------------------------------------------------------------------------------------

def test_cost_is_measured_and_exposed(gateway: str) -> None:
    response = post(gateway, "/cost", {"query": "{ items { id children(first: 3) { id } } }"})
    # items: 10 x (1 + children: 3 x 1) = 40
    assert response.json()["extensions"]["cost"] == {"estimated": 40, "maximum": 100, "mode": "enforce"}
    assert response.headers["x-graphql-cost"] == "40"  # exchange.state["graphql.cost"], for policies
    assert post(gateway, "/cost", {"query": "{ cost }"}).json()["data"] == {"cost": 0}
    variables = post(gateway, "/cost", {"query": "query($n: Int!) { items(first: $n) { id } cost }",
                                        "variables": {"n": 7}}).json()
    assert variables["data"]["cost"] == 7


def test_cost_over_the_maximum_is_refused_before_any_backend_call(gateway: str, rest: Any) -> None:
    rest.app.state.calls.clear()
    # 20 for userName + items: 50 x (1 + children (default first: 5) x 1)
    response = post(gateway, "/cost", {"query": "{ a: userName(id: 1) items(first: 50) { children { id } } }"})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "COST_LIMIT_EXCEEDED", "cost": 320, "maximum": 100}
    assert rest.app.state.calls == []
    ok = post(gateway, "/cost", {"query": "{ userName(id: 2) }"})
    assert ok.json()["data"] == {"userName": "user 2"}
    assert ok.json()["extensions"]["cost"]["estimated"] == 20


def test_measure_mode_reports_but_runs(gateway: str) -> None:
    body = post(gateway, "/measure", {"query": "{ items(first: 30) { id } }"}).json()
    assert len(body["data"]["items"]) == 30
    assert body["extensions"]["cost"] == {"estimated": 30, "maximum": 10, "mode": "measure"}


def test_cost_feeds_a_rate_limit(gateway: str) -> None:
    first = post(gateway, "/charged", {"query": "{ items(first: 15) { id } }"})
    assert first.status_code == 200
    assert "extensions" not in first.json()
    assert first.headers["x-ratelimit-limit"] == "20"
    assert first.headers["x-ratelimit-remaining"] == "5"  # this request cost 15
    second = post(gateway, "/charged", {"query": "{ items(first: 15) { id } }"})  # 30 > 20 per minute
    assert second.status_code == 429
    assert second.json()["code"] == "rate_limited"
    assert int(second.headers["retry-after"]) >= 1


def test_a_cost_stops_at_max_cost(gateway: str) -> None:
    """List sizes multiply: a client asking for 2**31 items three levels deep is a cost of 2**93, which no JSON
    encoder of the gateway wrote (a 500) and no rate limit store takes."""
    query = "{ items(first: 2147483647) { children(first: 2147483647) { children(first: 2147483647) { id } } } }"
    refused = post(gateway, "/cost", {"query": query})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["extensions"] == {"code": "COST_LIMIT_EXCEEDED", "cost": MAX_COST,
                                                         "maximum": 100}
    document = parse(query)
    assert GraphQLCost().measure(schema._schema, document.definitions[0], {}, {}) == MAX_COST == 2**53 - 1  # type: ignore[arg-type]


def test_cost_counts_fragments_and_lists_once_per_item() -> None:
    cost = GraphQLCost(list_size=4)
    document = parse("query { items { ...F } } fragment F on Item { children(first: 2) { id } parent { id } }")
    operation = document.definitions[0]
    fragments = {document.definitions[1].name.value: document.definitions[1]}  # type: ignore[attr-defined]
    # items (the schema's default first: 10): 10 x (1 + children 2 x 1 + parent 1) = 40
    assert cost.measure(schema._schema, operation, fragments, {}) == 40  # type: ignore[arg-type]
    assert GraphQLCost(list_sizes={"Query.items": 4}).measure(
        schema._schema, operation, fragments, {}) == 16  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        GraphQLCost(mode="block")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        GraphQLLimits(max_depth=0)


# --- persisted queries ---------------------------------------------------------------------------------

def apq(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}}


def test_automatic_persisted_queries(gateway: str) -> None:
    query = "{ hello items(first: 2) { id } }"
    missing = post(gateway, "/apq", {"extensions": apq(query)})
    assert missing.status_code == 200
    assert code_of(missing) == "PERSISTED_QUERY_NOT_FOUND"
    registered = post(gateway, "/apq", {"query": query, "extensions": apq(query)})
    assert registered.json()["data"]["hello"] == "world"
    by_hash = post(gateway, "/apq", {"extensions": apq(query)})
    assert by_hash.json()["data"] == registered.json()["data"]
    get = httpx.get(gateway + "/apq", params={"extensions": orjson.dumps(apq(query)).decode()})
    assert get.json()["data"]["hello"] == "world"
    mismatch = post(gateway, "/apq", {"query": "{ hello }", "extensions": apq(query)})
    assert mismatch.status_code == 400
    assert code_of(mismatch) == "PERSISTED_QUERY_HASH_MISMATCH"
    assert post(gateway, "/apq", {"query": "{ hello }"}).json() == {"data": {"hello": "world"}}


def test_safelist_runs_only_listed_operations(gateway: str) -> None:
    listed = post(gateway, "/safe", {"query": "query Hello {\n  hello\n}"})  # whitespace differs: still listed
    assert listed.json() == {"data": {"hello": "world"}}
    by_id = post(gateway, "/safe", {"extensions": apq(SAFE[1]), "variables": {"id": 4}})
    assert by_id.json() == {"data": {"item": {"id": 4}}}
    by_document_id = post(gateway, "/safe", {"documentId": hashlib.sha256(SAFE[0].encode()).hexdigest()})
    assert by_document_id.json() == {"data": {"hello": "world"}}
    refused = post(gateway, "/safe", {"query": "{ hello }"})
    assert refused.status_code == 400
    assert code_of(refused) == "PERSISTED_QUERY_NOT_IN_SAFELIST"
    unknown = post(gateway, "/safe", {"extensions": apq("{ nope }")})
    assert code_of(unknown) == "PERSISTED_QUERY_NOT_IN_SAFELIST"
    text_only = post(gateway, "/safe-ids", {"query": SAFE[0]})
    assert code_of(text_only) == "PERSISTED_QUERY_NOT_IN_SAFELIST"
    assert post(gateway, "/safe-ids", {"extensions": apq(SAFE[0])}).json() == {"data": {"hello": "world"}}


def test_safelist_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Safelist([])
    with pytest.raises(ConfigurationError):
        Safelist(["{ not closed"])
    with pytest.raises(ConfigurationError):
        Safelist(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError):
        GraphQL(schema, graphiql=True)
