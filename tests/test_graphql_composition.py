"""Remote schema composition against a separate GraphQL service process: root fields exposed and renamed or
namespaced, the selection forwarded (aliases, variables, fragments, abstract types), types extended across
backends with batching, credentials relayed, and a dead service failing only its own fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from strawberry.types import Info

from asgigate import ConfigurationError, Gateway, Route, Upstream
from asgigate.graphql import Extend, GraphQL, GraphQLContext, RemoteSchema, RestBatch
from asgigate.testing import BackgroundServer

from graphqlbackends import load
from servers import free_port

users_by_id = RestBatch("users", "/users", key="id")


@strawberry.type
class User:
    id: strawberry.ID
    name: str


@strawberry.type
class Query:
    @strawberry.field
    async def user(self, info: Info[GraphQLContext, None], id: strawberry.ID) -> User | None:
        found = await info.context.load(users_by_id, str(id))
        return User(id=found["id"], name=found["name"]) if found else None

    @strawberry.field
    def local(self) -> str:
        return "here"


schema = strawberry.Schema(query=Query)


async def owner_of(product: dict[str, Any], info: Any) -> User | None:
    found = await info.context.load(users_by_id, product["ownerId"])
    return User(id=found["id"], name=found["name"]) if found else None


@pytest.fixture(scope="module")
def sdl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sdl") / "catalog.graphql"
    path.write_text(str(load("graphql_service").schema))
    return path


@pytest.fixture(scope="module")
def gateway(rest: Any, catalog: str, sdl_file: Path) -> Iterator[str]:
    users = Upstream(rest.url, name="users")
    products = RemoteSchema(Upstream(catalog + "/graphql", name="catalog"), prefix="Catalog",
                            rename_fields={"product": "catalogProduct"})
    shop = RemoteSchema(Upstream(catalog + "/graphql", name="shop"), sdl=sdl_file, prefix="Shop", namespace="shop")
    dead = RemoteSchema(Upstream(f"http://127.0.0.1:{free_port()}/graphql", name="dead"), sdl=sdl_file,
                        prefix="Dead", include=["product"], field_prefix="dead_")
    api = GraphQL(schema, upstreams=[users], remotes=[products, shop, dead], introspection=True, extend=[
        Extend("CatalogProduct", "owner", "User", owner_of, requires="ownerId"),
        Extend("User", "favorite", "CatalogProduct", products.forward("product", lambda user: {"id": user.id})),
    ])

    class BFF(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/graphql", api)]

    with BackgroundServer(BFF(access_log=False)) as server:
        yield server.url


def run(gateway: str, query: str, variables: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = httpx.post(gateway + "/graphql", json={"query": query, "variables": variables or {}},
                          headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def remote_calls(catalog: str, clear: bool = False) -> list[dict[str, Any]]:
    if clear:
        httpx.delete(catalog + "/calls")
        return []
    return httpx.get(catalog + "/calls").json()["requests"]  # type: ignore[no-any-return]


def test_remote_root_fields_are_exposed_and_renamed(gateway: str, catalog: str) -> None:
    remote_calls(catalog, clear=True)
    body = run(gateway, '{ local catalogProduct(id: "3") { id name reviews(first: 1) { stars } } }')
    assert body == {"data": {"local": "here", "catalogProduct": {"id": "3", "name": "product 3",
                                                                 "reviews": [{"stars": 4}]}}}
    calls = remote_calls(catalog)
    assert len(calls) == 1
    assert "r: product(id: $a0" in calls[0]["query"] and "reviews(first: 1)" in calls[0]["query"]
    assert "catalogProduct" not in calls[0]["query"] and "local" not in calls[0]["query"]


def test_aliases_variables_and_fragments_are_forwarded(gateway: str) -> None:
    query = """query($id: ID!, $n: Int) { p: catalogProduct(id: $id) { ...F nm: name } }
               fragment F on CatalogProduct { rs: reviews(first: $n) { body } price }"""
    body = run(gateway, query, {"id": "4", "n": 2})
    assert body == {"data": {"p": {"rs": [{"body": "review 0"}, {"body": "review 1"}], "price": 6.0,
                                   "nm": "product 4"}}}


def test_abstract_types_resolve_with_renamed_typenames(gateway: str) -> None:
    body = run(gateway, '{ search(text: "hi") { __typename ... on CatalogProduct { name } '
                        '... on CatalogReview { body } } node(id: "c1") { __typename id ... on CatalogCategory '
                        '{ title } } }')
    assert "errors" not in body, body["errors"]
    assert body["data"] == {
        "search": [{"__typename": "CatalogProduct", "name": "product 1"},
                   {"__typename": "CatalogReview", "body": "hi"}],
        "node": {"__typename": "CatalogCategory", "id": "c1", "title": "category c1"},
    }


def test_remote_type_extended_by_another_backend_in_one_batch(gateway: str, catalog: str, rest: Any) -> None:
    remote_calls(catalog, clear=True)
    rest.app.state.calls.clear()
    body = run(gateway, "{ topProducts(first: 6) { name owner { name } } }")
    products = body["data"]["topProducts"]
    assert len(products) == 6
    assert products[0] == {"name": "product 1", "owner": {"name": "user 2"}}
    calls = remote_calls(catalog)
    assert len(calls) == 1
    assert "ownerId" in calls[0]["query"] and "owner " not in calls[0]["query"].replace("ownerId", "")
    assert [c["path"] for c in rest.app.state.calls] == ["/users"]  # six owners, one batched call


def test_local_type_extended_with_a_remote_field(gateway: str) -> None:
    body = run(gateway, '{ user(id: "5") { name favorite { name price } } }')
    assert body == {"data": {"user": {"name": "user 5", "favorite": {"name": "product 5", "price": 7.5}}}}


def test_namespace_from_an_sdl_file_makes_one_call(gateway: str, catalog: str) -> None:
    remote_calls(catalog, clear=True)
    body = run(gateway, '{ shop { product(id: "1") { name } topProducts(first: 2) { id } } }')
    assert body == {"data": {"shop": {"product": {"name": "product 1"}, "topProducts": [{"id": "1"}, {"id": "2"}]}}}
    assert len(remote_calls(catalog)) == 1


def test_mutations_are_forwarded(gateway: str) -> None:
    body = run(gateway, 'mutation { rename(id: "2", name: "renamed") { id name } }')
    assert body == {"data": {"rename": {"id": "2", "name": "renamed"}}}


def test_credentials_are_relayed(gateway: str, catalog: str) -> None:
    assert run(gateway, "{ whoami }", authorization="Bearer t-1") == {"data": {"whoami": "Bearer t-1"}}
    assert remote_calls(catalog)[-1]["authorization"] == "Bearer t-1"


def test_a_dead_service_fails_only_its_fields(gateway: str) -> None:
    body = run(gateway, '{ local dead_product(id: "1") { name } catalogProduct(id: "1") { name } }')
    assert body["data"] == {"local": "here", "dead_product": None, "catalogProduct": {"name": "product 1"}}
    assert body["errors"][0]["path"] == ["dead_product"]
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"


def test_remote_errors_come_back_as_errors(gateway: str) -> None:
    body = run(gateway, "{ broken }")
    assert body["data"] is None  # broken is non-null: the error reaches the root
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"


def test_composed_schema_is_introspectable(gateway: str) -> None:
    body = run(gateway, '{ __type(name: "CatalogProduct") { fields { name } } }')
    names = {f["name"] for f in body["data"]["__type"]["fields"]}
    assert {"id", "name", "ownerId", "reviews", "owner"} <= names


def test_conflicts_and_unreachable_services_are_configuration_errors(catalog: str, sdl_file: Path) -> None:
    def build(*remotes: RemoteSchema, extend: tuple[Extend, ...] = ()) -> None:
        api = GraphQL(schema, remotes=remotes, extend=extend)

        class BFF(Gateway):
            def routes(self) -> list[Route]:
                return [Route("/graphql", api)]

        BFF().build()

    upstream = Upstream(catalog + "/graphql", name="c")
    with pytest.raises(ConfigurationError, match="already defined"):
        build(RemoteSchema(upstream, sdl=sdl_file), RemoteSchema(upstream, sdl=sdl_file))
    with pytest.raises(ConfigurationError, match="defined twice"):
        build(RemoteSchema(upstream, sdl=sdl_file, prefix="A"), RemoteSchema(upstream, sdl=sdl_file, prefix="B"))
    with pytest.raises(ConfigurationError, match="introspection"):
        build(RemoteSchema(Upstream(f"http://127.0.0.1:{free_port()}/graphql")))
    with pytest.raises(ConfigurationError, match="not an object type"):
        build(RemoteSchema(upstream, sdl=sdl_file, prefix="A"), extend=(Extend("Nope", "x", "String", owner_of),))
    build(RemoteSchema(upstream, sdl=sdl_file, prefix="A", field_prefix="a_"),
          RemoteSchema(upstream, prefix="B", namespace="b"))
