"""GraphQL target: the GraphQL-over-HTTP protocol, the resolver context, REST and remote GraphQL calls from
resolvers with partial failures and token relay; real backends on 127.0.0.1 (a REST service in a thread, a
separate GraphQL service process)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import strawberry
from graphql import GraphQLError
from strawberry.permission import BasePermission
from strawberry.types import Info

from asgigate import Gateway, Policy, Route, Upstream
from asgigate.exchange import Exchange
from asgigate.graphql import GraphQL, GraphQLContext, RestBatch
from asgigate.policies.auth import Identity
from asgigate.testing import BackgroundServer

from servers import free_port

GQL = "application/graphql-response+json"


teams = RestBatch("users", "/teams", items="data.teams")


@strawberry.type
class Team:
    id: strawberry.ID
    name: str


@strawberry.type
class User:
    id: strawberry.ID
    name: str
    team_id: strawberry.Private[str]

    @strawberry.field
    async def team(self, info: Info[GraphQLContext, None]) -> Team | None:
        found = await info.context.load(teams, self.team_id)
        return Team(id=found["id"], name=found["name"]) if found else None


def to_user(data: dict[str, Any]) -> User:
    return User(id=data["id"], name=data["name"], team_id=data["team_id"])


@strawberry.type
class Product:
    id: strawberry.ID
    name: str


class Nobody(BasePermission):
    message = "Not allowed."

    def has_permission(self, source: Any, info: Info[GraphQLContext, None], **kwargs: Any) -> bool:
        return False


@strawberry.type
class Query:
    @strawberry.field
    def repeat(self, n: int | None = 1) -> str:
        if n is None:  # the argument is nullable, the resolver refuses null: the client's mistake
            raise GraphQLError("n must be a number.", extensions={"code": "BAD_USER_INPUT"})
        return "x" * min(n, 10)

    @strawberry.field
    def first(self, first: int = 3) -> int:
        return first

    @strawberry.field(permission_classes=[Nobody])
    def secret(self) -> str:
        return "s3cr3t"

    @strawberry.field
    def me(self, info: Info[GraphQLContext, None]) -> str | None:
        identity = info.context.identity
        return identity.subject if identity else None

    @strawberry.field
    def request_id(self, info: Info[GraphQLContext, None]) -> str:
        return info.context.request_id

    @strawberry.field
    async def user(self, info: Info[GraphQLContext, None], id: strawberry.ID) -> User | None:
        return to_user(await info.context.rest("users", "/users/{id}", id=id))

    @strawberry.field
    async def users(self, info: Info[GraphQLContext, None], ids: list[strawberry.ID]) -> list[User]:
        return [to_user(u) for u in await info.context.rest("users", "/users", query={"ids": ",".join(ids)})]

    @strawberry.field
    async def backend_auth(self, info: Info[GraphQLContext, None]) -> str | None:
        seen = await info.context.rest("users", "/whoami")
        return f"{seen['authorization']}|{seen['request_id'] == info.context.request_id}"

    @strawberry.field
    async def broken(self, info: Info[GraphQLContext, None]) -> str | None:
        return str(await info.context.rest("users", "/broken"))

    @strawberry.field
    async def slow(self, info: Info[GraphQLContext, None]) -> str | None:
        return str(await info.context.rest("users", "/whoami", query={"delay": 1.0}, timeout=0.2))

    @strawberry.field
    async def down(self, info: Info[GraphQLContext, None]) -> str | None:
        return str(await info.context.rest("gone", "/anything"))

    @strawberry.field
    async def product(self, info: Info[GraphQLContext, None], id: strawberry.ID) -> Product | None:
        data = await info.context.graphql("catalog", "query($id: ID!) { product(id: $id) { id name } }", {"id": id})
        return Product(**data["product"]) if data["product"] else None

    @strawberry.field
    async def catalog_auth(self, info: Info[GraphQLContext, None]) -> str | None:
        return (await info.context.graphql("catalog", "{ whoami }"))["whoami"]  # type: ignore[no-any-return]

    @strawberry.field
    async def catalog_broken(self, info: Info[GraphQLContext, None]) -> str | None:
        return (await info.context.graphql("catalog", "{ broken }"))["broken"]  # type: ignore[no-any-return]

    @strawberry.field
    def crash(self) -> str | None:
        raise RuntimeError("secret internal detail")

    @strawberry.field
    def context_type(self, info: Info[GraphQLContext, None]) -> str:
        ctx = info.context
        return f"{type(ctx).__name__}:{isinstance(ctx.exchange, Exchange)}:{sorted(ctx.upstreams)}"


@strawberry.type
class Mutation:
    @strawberry.mutation
    def echo(self, text: str) -> str:
        return text


schema = strawberry.Schema(query=Query, mutation=Mutation)


class FakeBearer(Policy):
    """Accepts ``Bearer user-N`` as the identity of user-N (the auth policies are tested elsewhere)."""

    async def on_request(self, exchange: Exchange) -> None:
        header = exchange.headers.get("authorization", "")
        if header.startswith("Bearer "):
            exchange.identity = Identity(subject=header.removeprefix("Bearer "))


class BFF(Gateway):
    def __init__(self, users_url: str, catalog_url: str) -> None:
        super().__init__(access_log=False)
        self.users = Upstream(users_url, name="users")
        self.catalog = Upstream(catalog_url + "/graphql", name="catalog")
        self.gone = Upstream(f"http://127.0.0.1:{free_port()}", name="gone", timeout=2.0)

    def policies(self) -> list[Policy]:
        return [FakeBearer()]

    def routes(self) -> list[Route]:
        return [
            Route("/graphql", GraphQL(schema)),
            Route("/batched", GraphQL(schema, batching=True)),
            Route("/ide", GraphQL(schema, graphiql=True, introspection=True)),
            Route("/post-only", GraphQL(schema, allow_get=False)),
            Route("/unmasked", GraphQL(schema, mask_errors=False)),
        ]


@pytest.fixture(scope="module")
def gateway(rest: Any, catalog: str) -> Iterator[str]:
    with BackgroundServer(BFF(rest.url, catalog)) as server:
        yield server.url


@pytest.fixture
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=10) as c:
        yield c


def post(client: httpx.Client, query: str, variables: dict[str, Any] | None = None, path: str = "/graphql",
         accept: str = GQL, **headers: str) -> httpx.Response:
    return client.post(path, json={"query": query, "variables": variables or {}},
                       headers={"accept": accept, **headers})


# --- GraphQL over HTTP ----------------------------------------------------------------------------------

def test_post_answers_graphql_response_json(client: httpx.Client) -> None:
    response = post(client, "{ me requestId }", authorization="Bearer user-7")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GQL)
    data = response.json()["data"]
    assert data["me"] == "user-7"
    assert data["requestId"] == response.headers["x-request-id"]


def test_application_json_when_not_asked_for_the_new_type(client: httpx.Client) -> None:
    for accept in (None, "application/json", "*/*"):
        headers = {"accept": accept} if accept else {}
        response = client.post("/graphql", json={"query": "{ me }"}, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"data": {"me": None}}


def test_get_runs_queries_with_variables(client: httpx.Client, rest: Any) -> None:
    response = client.get("/graphql", params={"query": "query($id: ID!) { user(id: $id) { id name } }",
                                              "variables": '{"id": "3"}'}, headers={"accept": GQL})
    assert response.status_code == 200
    assert response.json() == {"data": {"user": {"id": "3", "name": "user 3"}}}


def test_get_refuses_mutations_with_405(client: httpx.Client) -> None:
    response = client.get("/graphql", params={"query": 'mutation { echo(text: "x") }'}, headers={"accept": GQL})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"
    assert post(client, 'mutation { echo(text: "x") }').json() == {"data": {"echo": "x"}}


def test_parse_and_validation_errors_are_400_for_the_new_type_200_for_json(client: httpx.Client) -> None:
    for query, code in (("{ me ", "GRAPHQL_PARSE_FAILED"), ("{ nope }", "GRAPHQL_VALIDATION_FAILED")):
        response = post(client, query)
        assert response.status_code == 400
        body = response.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == code
        legacy = post(client, query, accept="application/json")
        assert legacy.status_code == 200
        assert legacy.json()["errors"][0]["extensions"]["code"] == code


def test_variable_and_operation_errors_are_request_errors(client: httpx.Client) -> None:
    response = post(client, "query($id: ID!) { user(id: $id) { id } }", {"id": {"no": 1}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    response = client.post("/graphql", json={"query": "query A { me } query B { me }"}, headers={"accept": GQL})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "OPERATION_RESOLUTION_FAILURE"
    response = client.post("/graphql", json={"query": "query A { me } query B { requestId }",
                                             "operationName": "B"}, headers={"accept": GQL})
    assert list(response.json()["data"]) == ["requestId"]


def test_malformed_requests_are_problem_replies(client: httpx.Client) -> None:
    bad_json = client.post("/graphql", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["code"] == "invalid_body"
    wrong_type = client.post("/graphql", content=b"{ me }", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    assert wrong_type.json()["code"] == "unsupported_media_type"
    not_acceptable = client.post("/graphql", json={"query": "{ me }"}, headers={"accept": "text/csv"})
    assert not_acceptable.status_code == 406
    assert client.put("/graphql", json={"query": "{ me }"}).status_code == 405
    assert client.get("/post-only", params={"query": "{ me }"}).status_code == 405
    no_query = client.post("/graphql", json={"variables": {}}, headers={"accept": GQL})
    assert no_query.status_code == 400
    too_big = client.post("/graphql", json={"query": "{ me }", "pad": "x" * 300_000})
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "payload_too_large"


# --- requests that are not well-formed GraphQL-over-HTTP requests: 400 under both media types ---------------

ACCEPTS = [GQL, "application/json", "*/*", None]

NOT_WELL_FORMED_POST: list[tuple[Any, str]] = [
    ({}, "no query"),
    ({"variables": {}, "operationName": "A"}, "no query"),
    ({"query": None}, "no query"),
    ({"query": 1}, "query must be a string"),
    ({"query": ["{ me }"]}, "query must be a string"),
    ({"query": {"text": "{ me }"}}, "query must be a string"),
    ({"query": True}, "query must be a string"),
    ({"query": "{ me }", "operationName": 1}, "operationName must be a string"),
    ({"query": "{ me }", "operationName": ["A"]}, "operationName must be a string"),
    ({"query": "{ me }", "operationName": {}}, "operationName must be a string"),
    ({"query": "{ me }", "variables": [7]}, "variables must be an object"),
    ({"query": "{ me }", "variables": "{}"}, "variables must be an object"),
    ({"query": "{ me }", "variables": 1}, "variables must be an object"),
    ({"query": "{ me }", "extensions": "x"}, "extensions must be an object"),
    ({"query": "{ me }", "extensions": [1]}, "extensions must be an object"),
    ({"query": "{ me }", "extensions": False}, "extensions must be an object"),
    (5, "not a JSON object"),
    ("{ me }", "not a JSON object"),
    (None, "not a JSON object"),
    (True, "not a JSON object"),
]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize(("payload", "detail"), NOT_WELL_FORMED_POST)
def test_post_that_is_not_well_formed_is_400_under_both_media_types(
        client: httpx.Client, payload: Any, detail: str, accept: str | None) -> None:
    headers = {"content-type": "application/json", **({"accept": accept} if accept else {})}
    response = client.post("/graphql", content=orjson.dumps(payload), headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_body"
    assert detail in problem["detail"]


NOT_WELL_FORMED_GET: list[tuple[dict[str, str], str]] = [
    ({}, "no query"),
    ({"operationName": "A"}, "no query"),
    ({"query": "{ me }", "variables": "[7]"}, "variables must be an object"),
    ({"query": "{ me }", "variables": '"x"'}, "variables must be an object"),
    ({"query": "{ me }", "variables": "1"}, "variables must be an object"),
    ({"query": "{ me }", "variables": "true"}, "variables must be an object"),
    ({"query": "{ me }", "variables": "{nope"}, "variables parameter is not JSON"),
    ({"query": "{ me }", "extensions": "[1]"}, "extensions must be an object"),
    ({"query": "{ me }", "extensions": '"x"'}, "extensions must be an object"),
    ({"query": "{ me }", "extensions": "{nope"}, "extensions parameter is not JSON"),
]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize(("params", "detail"), NOT_WELL_FORMED_GET)
def test_get_that_is_not_well_formed_is_400_under_both_media_types(
        client: httpx.Client, params: dict[str, str], detail: str, accept: str | None) -> None:
    # operationName cannot have a wrong type in a query string: it is always text.
    response = client.get("/graphql", params=params, headers={"accept": accept} if accept else {})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "bad_request"
    assert detail in problem["detail"]


def test_null_parameters_are_absent_ones_and_an_empty_get_operation_name_is_none(client: httpx.Client) -> None:
    response = client.post("/graphql", json={"query": "{ me }", "variables": None, "operationName": None,
                                             "extensions": None}, headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"data": {"me": None}}
    response = client.get("/graphql", params={"query": "{ me }", "operationName": "", "variables": "null",
                                              "extensions": "null"}, headers={"accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"data": {"me": None}}


@pytest.mark.parametrize("accept", ACCEPTS)
def test_a_batch_with_a_malformed_operation_is_refused_before_any_runs(
        client: httpx.Client, rest: Any, accept: str | None) -> None:
    rest.app.state.calls.clear()
    batch = [{"query": '{ user(id: "1") { id } }'}, {"query": "{ me }", "variables": [1]}]
    response = client.post("/batched", json=batch, headers={"accept": accept} if accept else {})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_body"
    assert response.json()["detail"] == "Operation 1 of the batch: variables must be an object."
    assert rest.app.state.calls == []  # the well-formed first operation did not run either
    for bad in ([{"query": "{ me }"}, 5], [{"query": "{ me }"}, {}], [{"query": "{ me }"}, {"query": 1}]):
        assert client.post("/batched", json=bad).status_code == 400


def test_well_formed_request_errors_stay_graphql_responses(client: httpx.Client) -> None:
    """Parse, validation, operation and variable errors are GraphQL request errors, not malformed requests:
    a GraphQL response, 200 under application/json, 400 under application/graphql-response+json."""
    for payload in ({"query": ""}, {"query": "{"}, {"query": "{ nope }"}, {"query": "{ ...Nope }"},
                    {"query": "query A { me } query B { me }", "operationName": "C"},
                    {"query": "query($id: ID!) { user(id: $id) { id } }", "variables": {}}):
        legacy = client.post("/graphql", json=payload, headers={"accept": "application/json"})
        assert legacy.status_code == 200, payload
        assert legacy.headers["content-type"] == "application/json"
        assert "data" not in legacy.json() and legacy.json()["errors"]
        assert client.post("/graphql", json=payload, headers={"accept": GQL}).status_code == 400


# --- what is logged ------------------------------------------------------------------------------------

def test_client_caused_resolver_errors_are_logged_at_info_without_traceback(
        client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ids = []
    for query, variables in (("query($n: Int) { repeat(n: $n) }", {"n": None}),   # the resolver refuses null
                             ("query($n: Int) { first(first: $n) }", {"n": None}),  # graphql-core refuses it
                             ("{ secret }", {})):                                   # strawberry's permission
        response = client.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200
        assert response.json()["errors"][0]["message"] != "Internal server error"
        ids.append(response.headers["x-request-id"])
    records = [r for r in caplog.records
               if any(i in r.getMessage() for i in ids) or r.name.startswith(("strawberry", "asgigate"))]
    assert len([r for r in records if r.name == "asgigate.graphql"]) == 3
    assert all(record.levelno <= logging.INFO and record.exc_info is None for record in records), [
        (r.name, r.levelname, r.getMessage()) for r in records]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], [
        (r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    info = [r.getMessage() for r in records if r.name == "asgigate.graphql"]
    assert any("BAD_USER_INPUT" in line and "['repeat']" in line for line in info), info


def test_unexpected_resolver_exceptions_are_logged_as_errors_with_traceback(
        client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = client.post("/graphql", json={"query": "{ crash }"})
    assert response.json()["errors"][0]["message"] == "Internal server error"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(response.headers["x-request-id"] in r.getMessage() for r in errors)
    assert any(r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in errors)


def test_batching_only_when_enabled(client: httpx.Client) -> None:
    batch = [{"query": "{ me }"}, {"query": "query($id: ID!) { user(id: $id) { name } }", "variables": {"id": "2"}}]
    refused = client.post("/graphql", json=batch)
    assert refused.status_code == 400
    response = client.post("/batched", json=batch, headers={"authorization": "Bearer user-1"})
    assert response.status_code == 200
    assert response.json() == [{"data": {"me": "user-1"}}, {"data": {"user": {"name": "user 2"}}}]
    assert client.post("/batched", json=[{"query": "{ me }"}] * 11).status_code == 400


def test_graphiql_only_when_enabled_and_introspection_off_by_default(client: httpx.Client) -> None:
    page = client.get("/ide", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "graphiql" in page.text.lower()
    assert client.get("/graphql", headers={"accept": "text/html"}).status_code == 406  # no IDE here
    introspect = post(client, "{ __schema { queryType { name } } }")
    assert introspect.status_code == 400
    assert "introspection" in introspect.json()["errors"][0]["message"].lower()
    assert post(client, "{ __schema { queryType { name } } }", path="/ide").json() == {
        "data": {"__schema": {"queryType": {"name": "Query"}}}}
    assert post(client, "{ __typename }").json() == {"data": {"__typename": "Query"}}


# --- context and backends -----------------------------------------------------------------------------------

def test_context_has_exchange_and_upstreams(client: httpx.Client) -> None:
    value = post(client, "{ contextType }").json()["data"]["contextType"]
    assert value == "GraphQLContext:True:['catalog', 'gone', 'users']"


def test_bearer_token_and_request_id_are_relayed_to_rest_and_graphql(client: httpx.Client) -> None:
    response = post(client, "{ backendAuth catalogAuth }", authorization="Bearer user-9")
    assert response.json() == {"data": {"backendAuth": "Bearer user-9|True", "catalogAuth": "Bearer user-9"}}
    anonymous = post(client, "{ backendAuth catalogAuth }")
    assert anonymous.json() == {"data": {"backendAuth": "None|True", "catalogAuth": None}}


def test_backend_failures_become_errors_with_codes_and_the_rest_resolves(client: httpx.Client) -> None:
    response = post(client, '{ me broken slow down user(id: "4040") { id } product(id: "5") { name } '
                            "catalogBroken }", authorization="Bearer user-2")
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"me": "user-2", "broken": None, "slow": None, "down": None, "user": None,
                            "product": {"name": "product 5"}, "catalogBroken": None}
    codes = {error["path"][0]: error["extensions"] for error in body["errors"]}
    assert codes["broken"] == {"code": "UPSTREAM_ERROR", "upstream": "users", "status": 500}
    assert codes["slow"]["code"] == "UPSTREAM_TIMEOUT"
    assert codes["down"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert codes["user"] == {"code": "NOT_FOUND", "upstream": "users", "status": 404}
    assert codes["catalogBroken"]["code"] == "UPSTREAM_ERROR"
    assert codes["catalogBroken"]["upstream"] == "catalog"


def test_unexpected_resolver_errors_are_masked_unless_asked(client: httpx.Client) -> None:
    masked = post(client, "{ crash me }").json()
    assert masked["data"] == {"crash": None, "me": None}
    assert masked["errors"][0]["message"] == "Internal server error"
    assert masked["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert masked["errors"][0]["path"] == ["crash"]
    plain = post(client, "{ crash }", path="/unmasked").json()
    assert plain["errors"][0]["message"] == "secret internal detail"


def test_batch_loader_makes_one_call_per_relation(client: httpx.Client, rest: Any) -> None:
    rest.app.state.calls.clear()
    ids = [str(i) for i in range(1, 101)]
    response = post(client, "query($ids: [ID!]!) { users(ids: $ids) { id team { name } } }", {"ids": ids})
    users = response.json()["data"]["users"]
    assert len(users) == 100
    assert users[4] == {"id": "5", "team": {"name": "team 2"}}
    paths = [call["path"] for call in rest.app.state.calls]
    assert paths == ["/users", "/teams"]  # one call for the list, one batched, deduplicated call for the teams
    assert sorted(rest.app.state.calls[1]["query"].removeprefix("ids=").split("%2C")) == ["0", "1", "2"]
