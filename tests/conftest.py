from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from graphqlbackends import catalog_server, rest_server
from redisserver import RedisServer
from servers import ThreadServer


@pytest.fixture(scope="session")
def upstream() -> Iterator[ThreadServer]:
    """The shared test upstream (tests/apps/upstream.py) under uvicorn on a free port."""
    from apps.upstream import app

    with ThreadServer(app) as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A real redis-server on a free port, one per module (a module may define its own with another scope)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def rest() -> Iterator[Any]:
    """The GraphQL tests' REST backend (tests/graphql/rest_service.py) in a thread, one per module."""
    with rest_server() as server:
        yield server


@pytest.fixture(scope="module")
def catalog() -> Iterator[str]:
    """The GraphQL tests' remote GraphQL service (a strawberry app in its own process), one per module."""
    with catalog_server() as url:
        yield url
