"""The GraphQL tests' real backends (tests/graphql/*.py), loaded by path.

tests/graphql has no __init__.py: a package named `graphql` on the import path would shadow graphql-core.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from asgigate.testing import BackgroundServer

from servers import free_port, serve_process

HERE = Path(__file__).resolve().parent / "graphql"


def load(name: str) -> ModuleType:
    """tests/graphql/<name>.py as a module (once per name)."""
    module_name = f"graphql_tests_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextmanager
def rest_server() -> Iterator[BackgroundServer]:
    """The REST service in a thread; `server.app` counts the calls it receives."""
    app = load("rest_service").make_app()
    with BackgroundServer(app) as server:
        server.app = app  # type: ignore[attr-defined]
        yield server


@contextmanager
def catalog_server() -> Iterator[str]:
    """The separate GraphQL service, in its own process; yields its base URL."""
    port = free_port()
    with serve_process([sys.executable, str(HERE / "graphql_service.py"), str(port)], port):
        yield f"http://127.0.0.1:{port}"
