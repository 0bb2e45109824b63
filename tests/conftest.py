from __future__ import annotations

from collections.abc import Iterator

import pytest

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
