"""DeGraphQL: REST endpoints backed by fixed GraphQL operations, served through a real server with a real REST
backend behind the schema's resolvers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import strawberry
from strawberry.types import Info

from asgigate import ConfigurationError, Gateway, Route, Upstream
from asgigate.graphql import DeGraphQL, GraphQL, GraphQLContext, GraphQLCost
from asgigate.testing import BackgroundServer

from graphqlbackends import load
from servers import free_port


@strawberry.type
class User:
    id: strawberry.ID
    name: str


@strawberry.input
class Filter:
    prefix: str


@strawberry.type
class Query:
    @strawberry.field
    async def user(self, info: Info[GraphQLContext, None], id: strawberry.ID) -> User | None:
        found = await info.context.rest("users", "/users/{id}", id=id)
        return User(id=found["id"], name=found["name"])

    @strawberry.field
    async def users(self, info: Info[GraphQLContext, None], ids: list[int], upper: bool = False,
                    filter: Filter | None = None) -> list[User]:
        found = await info.context.rest("users", "/users", query={"ids": ",".join(map(str, ids))})
        users = [User(id=u["id"], name=u["name"].upper() if upper else u["name"]) for u in found]
        return [u for u in users if filter is None or u.name.startswith(filter.prefix)]

    @strawberry.field
    async def down(self, info: Info[GraphQLContext, None]) -> str | None:
        return str(await info.context.rest("gone", "/x"))

    @strawberry.field
    def expensive(self) -> str:
        return "never computed"

    @strawberry.field
    def greeting(self, info: Info[GraphQLContext, None], lang: str = "en") -> str:
        return {"en": "hello", "fr": "bonjour"}.get(lang, "?")


schema = strawberry.Schema(query=Query)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    app = load("rest_service").make_app()
    with BackgroundServer(app) as rest:
        users = Upstream(rest.url, name="users")
        gone = Upstream(f"http://127.0.0.1:{free_port()}", name="gone")
        api = GraphQL(schema, upstreams=[users, gone],
                      cost=GraphQLCost(maximum=50, field_costs={"Query.expensive": 100}))

        class BFF(Gateway):
            def routes(self) -> list[Route]:
                return [
                    Route("/graphql", api),
                    Route("/v1/users/{id}", DeGraphQL(api, "query($id: ID!) { user(id: $id) { id name } }",
                                                      unwrap=True)),
                    Route("/v1/users", DeGraphQL(
                        api, "query($ids: [Int!]!, $upper: Boolean, $f: Filter) { users(ids: $ids, upper: $upper, "
                             "filter: $f) { name } }", variables={"f": "query:filter"})),
                    Route("/v1/down", DeGraphQL(api, "{ down }")),
                    Route("/v1/expensive", DeGraphQL(api, "{ expensive }")),
                    Route("/v1/partial", DeGraphQL(api, "{ down greeting }", partial=True)),
                    Route("/v1/greeting", DeGraphQL(api, "query($lang: String) { greeting(lang: $lang) }",
                                                    variables={"lang": "header:accept-language"}, unwrap=True)),
                ]

        with BackgroundServer(BFF(access_log=False)) as server:
            yield server.url


def test_path_parameters_fill_variables_and_data_is_plain_json(gateway: str) -> None:
    response = httpx.get(gateway + "/v1/users/7")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"id": "7", "name": "user 7"}


def test_query_parameters_are_converted_to_the_variable_types(gateway: str) -> None:
    response = httpx.get(gateway + "/v1/users", params=[("ids", "1"), ("ids", "2"), ("upper", "true")])
    assert response.json() == {"users": [{"name": "USER 1"}, {"name": "USER 2"}]}
    comma = httpx.get(gateway + "/v1/users", params={"ids": "3,4", "filter": '{"prefix": "user 4"}'})
    assert comma.json() == {"users": [{"name": "user 4"}]}
    assert httpx.get(gateway + "/v1/greeting", headers={"accept-language": "fr"}).json() == "bonjour"


def test_bad_or_missing_input_is_400(gateway: str) -> None:
    missing = httpx.get(gateway + "/v1/users")
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/problem+json"
    assert httpx.get(gateway + "/v1/users", params={"ids": "x"}).status_code == 400
    assert httpx.get(gateway + "/v1/users", params={"ids": "1", "upper": "maybe"}).status_code == 400
    assert httpx.post(gateway + "/v1/users/1").status_code == 405


def test_backend_failures_map_to_gateway_errors(gateway: str) -> None:
    not_found = httpx.get(gateway + "/v1/users/999")
    assert not_found.status_code == 404
    assert not_found.json()["code"] == "upstream_error_response"
    down = httpx.get(gateway + "/v1/down")
    assert down.status_code == 503
    assert down.json()["code"] == "upstream_unavailable"
    assert httpx.get(gateway + "/v1/partial").json() == {"down": None, "greeting": "hello"}


def test_protections_of_the_graphql_route_apply(gateway: str) -> None:
    response = httpx.get(gateway + "/v1/expensive")
    assert response.status_code == 400
    assert "costs 100" in response.json()["detail"]


def test_configuration_errors() -> None:
    api = GraphQL(schema)
    with pytest.raises(ConfigurationError):
        DeGraphQL(api, "{ nope }")
    with pytest.raises(ConfigurationError):
        DeGraphQL(api, "{ user(id: ")
    with pytest.raises(ConfigurationError):
        DeGraphQL(api, "{ greeting down }", unwrap=True)
    with pytest.raises(ConfigurationError):
        DeGraphQL(api, "query($id: ID!) { user(id: $id) { id } }", variables={"id": "cookie:x"})

    class Wrong(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/u", DeGraphQL(api, "query($id: ID!) { user(id: $id) { id } }",
                                          variables={"id": "path:id"}))]

    with pytest.raises(ConfigurationError):
        Wrong().build()


def test_the_graphql_target_need_not_serve_a_route_of_its_own() -> None:
    api = GraphQL(schema)

    class RestOnly(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/hello", DeGraphQL(api, "query($lang: String) { greeting(lang: $lang) }", unwrap=True))]

    with BackgroundServer(RestOnly(access_log=False)) as server:
        assert httpx.get(server.url + "/hello", params={"lang": "fr"}).json() == "bonjour"
        assert httpx.post(server.url + "/graphql", json={"query": "{ greeting }"}).status_code == 404
