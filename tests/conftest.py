from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asgigate.testing import BackgroundServer

from devinstalls import provided
from graphqlbackends import catalog_server, rest_server
from redisserver import RedisServer


@pytest.fixture(scope="session")
def upstream() -> Iterator[BackgroundServer]:
    """The shared test upstream (tests/apps/upstream.py) under uvicorn on a free port."""
    from apps.upstream import app

    with BackgroundServer(app) as server:
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


# --- Every program this process starts is one `./dev test` installs (tests/test_dev_installs.py checks the same
# in the source, this what actually runs): a test that passes only because this machine happens to have a program
# fails the run here, not on the next fresh machine. Programs started by the suite's child processes are not seen.

_OUTSIDE_DEV: dict[str, str] = {}  # program -> the test that started it
_popen_init = subprocess.Popen.__init__


def _program(args: Any, executable: Any, shell: bool) -> str | None:
    if executable is not None:
        return os.fsdecode(executable)
    if isinstance(args, str | bytes | os.PathLike):
        text = os.fsdecode(args)
        words = shlex.split(text) if shell else [text]
        return words[0] if words else None
    first = next(iter(args), None)
    return None if first is None else os.fsdecode(first)


@functools.cache
def _provided() -> dict[str, str]:
    return provided()


def _from_venv(path: str) -> bool:
    """The venv's interpreter and scripts, and what its packages ship (playwright's node driver)."""
    absolute = Path(path).absolute()
    return absolute.is_relative_to(Path(sys.prefix).absolute()) or absolute.resolve() == Path(sys.executable).resolve()


def _note_program(args: Any, kwargs: dict[str, Any]) -> None:
    program = _program(args, kwargs.get("executable"), bool(kwargs.get("shell")))
    if program is None or (os.sep in program and _from_venv(program)):
        return
    name = os.path.basename(program)  # a bare name or another path: the program ./dev must provide
    if name not in _provided():
        _OUTSIDE_DEV.setdefault(name, os.environ.get("PYTEST_CURRENT_TEST", "outside a test").split(" ")[0])


@functools.wraps(_popen_init)
def _recording_popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    _popen_init(self, args, *rest, **kwargs)
    _note_program(args, kwargs)  # started: a program that is not there raised above, and fails its test anyway


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _recording_popen_init  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _popen_init  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OUTSIDE_DEV and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _OUTSIDE_DEV:
        terminalreporter.section("programs ./dev test does not install", red=True)
        for program, test in sorted(_OUTSIDE_DEV.items()):
            terminalreporter.line(f"{program}: started by {test}")
        terminalreporter.line("install them in ./dev (see tests/devinstalls.py) or make the code under test not "
                              "need them; the run fails")
