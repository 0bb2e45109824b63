"""The mobile BFF example: built in-process in front of its own sample backends, and started as a script."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgigate.testing import BackgroundServer
from examples import mobile_bff

from servers import PYTHON, ROOT, free_port, serve_process

EXAMPLES = ROOT / "examples"
QUERY = "{ me { name orders { id total } } catalog_topProducts(first: 3) { name seller { name } } }"


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    pb2, pb2_grpc = mobile_bff.compile_orders_proto()
    with BackgroundServer(mobile_bff.accounts_app) as accounts, BackgroundServer(mobile_bff.catalog_app) as catalog:
        orders = mobile_bff.serve_orders(pb2, pb2_grpc)
        with BackgroundServer(mobile_bff.build_gateway(accounts.url, orders, catalog.url + "/graphql", pb2)) as server:
            yield server.url


def graphql(url: str, payload: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(url + "/graphql", json=payload, headers=headers, timeout=10)


def test_one_query_over_rest_grpc_and_graphql(gateway: str) -> None:
    body = graphql(gateway, {"query": QUERY}, authorization="Bearer user-2").json()
    assert body["data"] == {
        "me": {"name": "Grace", "orders": [{"id": "2-0", "total": 12.5}, {"id": "2-1", "total": 25.0}]},
        "catalog_topProducts": [{"name": "product 1", "seller": {"name": "Grace"}},
                                {"name": "product 2", "seller": {"name": "Edsger"}},
                                {"name": "product 3", "seller": {"name": "Barbara"}}],
    }
    assert body["extensions"]["cost"]["estimated"] > 0


def test_persisted_queries_and_degraphql(gateway: str) -> None:
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(QUERY.encode()).hexdigest()}}
    missing = graphql(gateway, {"extensions": extensions}).json()
    assert missing["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    graphql(gateway, {"query": QUERY, "extensions": extensions})
    assert graphql(gateway, {"extensions": extensions}).json()["data"]["me"] is None  # no token: no "me"
    rest = httpx.get(gateway + "/v1/users/1")
    assert rest.json() == {"id": "1", "name": "Ada", "orders": [{"id": "1-0"}]}


def test_the_script_starts_its_own_backends() -> None:
    port = free_port()
    env = {"PORT": str(port), "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with serve_process([PYTHON, str(EXAMPLES / "mobile_bff.py")], port, env=env, timeout=60):
        body = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY},
                          headers={"authorization": "Bearer user-1"}, timeout=10).json()
        assert body["data"]["me"] == {"name": "Ada", "orders": [{"id": "1-0", "total": 12.5}]}
        assert len(body["data"]["catalog_topProducts"]) == 3
