"""What clients fill stays bounded in bytes: the document cache of a GraphQL route (measured as the RSS of a real
gateway process sent many large distinct queries), automatic persisted queries, and the safelist's parsing."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest
import strawberry

from asgigate import ConfigurationError, Gateway, Route
from asgigate.graphql import GraphQL, GraphQLLimits, PersistedQueries, Safelist
from asgigate.graphql._cache import BoundedCache
from asgigate.graphql.persisted import RequestError
from asgigate.testing import BackgroundServer

from servers import free_port, serve_process, uvicorn_cmd

MiB = 1024 * 1024


def big_query(seed: str, tokens: int = 9_500) -> str:
    """A valid query of about `tokens` tokens (graphql-core counts comments) and 19 KB, distinct per seed: the
    parsed document keeps every token, about 1.7 MB."""
    return f"{{ total(values: [1 2 3]) }} # {seed}" + "\n#" * tokens


# --- the cache ------------------------------------------------------------------------------------------

def test_bounded_cache_evicts_least_recently_used_entries_by_bytes() -> None:
    cache: BoundedCache[str, int] = BoundedCache(100, max_entry_bytes=60)
    assert cache.put("a", 1, 40) and cache.put("b", 2, 40)
    assert cache.get("a") == 1  # b is now the least recently used
    assert cache.put("c", 3, 40)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.bytes == 80
    assert not cache.put("huge", 4, 61)  # over max_entry_bytes: not kept, nothing evicted
    assert len(cache) == 2
    assert cache.put("a", 5, 10) and cache.bytes == 50  # replacing an entry recharges it
    assert cache.pop("a") == 5 and cache.bytes == 40
    counted: BoundedCache[str, int] = BoundedCache(10**6, max_entries=2)
    for key in "xyz":
        counted.put(key, 0, 1)
    assert list(counted._entries) == ["y", "z"]
    assert not BoundedCache[str, int](0).put("k", 1, 0)  # 0 bytes: no cache


def test_bounded_cache_keeps_a_key_the_second_time_it_is_seen() -> None:
    cache: BoundedCache[str, int] = BoundedCache(1000, admit_on_second_sight=True, doorkeeper=2)
    assert not cache.put("a", 1, 10)
    assert "a" not in cache
    assert cache.put("a", 1, 10) and cache.get("a") == 1
    assert not cache.put("b", 2, 10) and not cache.put("c", 3, 10) and not cache.put("d", 4, 10)
    assert not cache.put("b", 2, 10)  # the doorkeeper holds two keys: b was forgotten, seen "first" again
    assert cache.put("d", 4, 10)


@strawberry.type
class SumQuery:
    @strawberry.field
    def total(self, values: list[int]) -> int:
        return sum(values)


@pytest.fixture(scope="module")
def api_server() -> Iterator[tuple[GraphQL, str]]:
    # large documents (the limits of earlier versions): the cache's bound must hold whatever the limits
    api = GraphQL(strawberry.Schema(query=SumQuery), cache_bytes=48 * MiB,
                  limits=GraphQLLimits(max_tokens=10_000, max_query_length=None))

    class G(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/graphql", api)]

    with BackgroundServer(G(access_log=False)) as server:
        yield api, server.url


def test_documents_are_kept_the_second_time_within_the_byte_budget(api_server: tuple[GraphQL, str]) -> None:
    api, url = api_server
    with httpx.Client(base_url=url, timeout=30) as client:
        small = "{ total(values: [1, 2]) }"
        assert client.post("/graphql", json={"query": small}).json() == {"data": {"total": 3}}
        assert small not in api._documents  # seen once
        assert client.post("/graphql", json={"query": small}).json() == {"data": {"total": 3}}
        assert small in api._documents
        invalid = "{ nope }"
        for _ in range(2):
            assert client.post("/graphql", json={"query": invalid}).json()["errors"][0]["extensions"] == {
                "code": "GRAPHQL_VALIDATION_FAILED"}
        assert isinstance(api._documents.get(invalid), list)  # its formatted errors, not the document
        for index in range(12):
            query = big_query(str(index))
            for _ in range(2):
                assert client.post("/graphql", json={"query": query}).json() == {"data": {"total": 6}}
        # about 5.7 MB charged per big document (600 bytes a token): 8 fit, the least recently used went
        assert api._documents.bytes <= 48 * MiB
        kept = [index for index in range(12) if big_query(str(index)) in api._documents]
        assert kept == list(range(12 - len(kept), 12)) and 6 <= len(kept) <= 8, kept
        assert small not in api._documents
    with pytest.raises(ConfigurationError):
        GraphQL(strawberry.Schema(query=SumQuery), cache_bytes=-1)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_many_large_distinct_queries_leave_a_served_gateways_memory_bounded() -> None:
    """The attack of the report: distinct large queries, each within every limit (those of the report's
    version, which the app keeps), without authentication. Each parsed document is about 1.7 MB; 70 of them,
    sent once or twice, took a gateway that cached every document (up to 512) 120 MiB further."""
    port = free_port()
    with serve_process(uvicorn_cmd("apps.graphql_gateway:app", port), port) as proc, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(3):  # warm up: imports, first allocations
            assert client.post("/graphql", json={"query": "{ hello }"}).status_code == 200
        before = rss(proc.pid)
        started = time.monotonic()
        for index in range(40):  # once each: nothing is kept
            response = client.post("/graphql", json={"query": big_query(f"once {index}")})
            assert response.json() == {"data": {"total": 6}}
        for index in range(30):  # twice each: kept, within the default 64 MiB (estimated high)
            for _ in range(2):
                response = client.post("/graphql", json={"query": big_query(f"twice {index}")})
                assert response.json() == {"data": {"total": 6}}
        grown = rss(proc.pid) - before
        # the cache's budget (64 MiB, estimated high: about a third of it is used) and the garbage of the last
        # requests; caching each document took 1.7 MiB per query, 120 MiB for these
        assert grown < 64 * MiB, f"the gateway grew {grown / MiB:.0f} MiB"
        assert time.monotonic() - started < 60


# --- persisted queries --------------------------------------------------------------------------------

def apq(query: str) -> dict[str, dict[str, object]]:
    return {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}}


def test_automatic_persisted_queries_are_bounded_by_bytes() -> None:
    store = PersistedQueries(max_bytes=1 * MiB)
    for index in range(100):  # 100 registrations of 100 KB each, by any client
        query = f"{{ hello }} # {index} " + "x" * 100_000
        assert store.resolve(query, apq(query), {}) == query
    assert store._store.bytes <= 1 * MiB
    assert 1 <= len(store) <= 10
    last = "{ hello } # 99 " + "x" * 100_000
    assert store.resolve(None, apq(last), {}) == last  # the most recent are kept
    with pytest.raises(ConfigurationError):
        PersistedQueries(max_bytes=0)


def test_safelist_parses_a_clients_text_only_as_far_as_a_listed_operation_could_go() -> None:
    safelist = Safelist(["query Hello { hello }", "query Item($id: Int!) { item(id: $id) { id } }"])
    assert safelist.resolve("query Hello {\n  hello\n}", None, {}) == "query Hello {\n  hello\n}"
    assert safelist.resolve("query Hello { hello } # why not", None, {}) is not None
    flood = "{ " + "hello " * 200_000 + "}"  # 1.2 MB, 200,000 tokens
    started = time.monotonic()
    with pytest.raises(RequestError):
        safelist.resolve(flood, None, {})
    assert time.monotonic() - started < 0.5
