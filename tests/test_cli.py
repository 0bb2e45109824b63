"""`python -m asgigate routes module:app`, run as a real subprocess against tests/apps/cli_app.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asgigate.cli import main

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # From tests/, as a user runs it from their project directory: the CLI imports relative to the cwd.
    return subprocess.run(
        [sys.executable, "-m", "asgigate", *args],
        cwd=TESTS,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_routes_prints_every_route_with_its_chain() -> None:
    from apps.cli_app import app

    result = run("routes", "apps.cli_app:app")
    assert result.returncode == 0, result.stderr
    assert result.stdout == app.describe()
    blocks = result.stdout.split("\n\n")
    assert blocks[0] == "CliGateway\n  edge: GZipMiddleware"
    assert blocks[1].splitlines() == ["GET /healthz  [/healthz]", "  -> Direct(status=200, 11 bytes application/json)"]
    assert blocks[2].splitlines() == [
        "* /v1/users/{id:int}  [/v1/users/{id:int}]",
        "  1. Auth()  (gateway)",
        "  2. Audit()  (gateway)",
        "  3. Stamp(value='group')  (group)",
        "  4. GZipMiddleware (ASGI middleware)  (group)",
        "  5. Stamp(value='route')  (route)",
        "  -> Direct(status=200, 4 bytes text/plain; charset=utf-8)",
    ]
    assert blocks[3].splitlines()[0] == "* /v1/old host=*.example.com  [/v1/old]"
    assert blocks[3].splitlines()[-1] == "  -> Redirect('/v1/users/1', status=307)"
    assert len([b for b in blocks if b.strip()]) == 1 + len(app._table.routes)  # type: ignore[union-attr]


def test_dotted_attribute() -> None:
    result = run("routes", "apps.cli_app:Holder.gateway")
    assert result.returncode == 0, result.stderr
    assert "/v1/users/{id:int}" in result.stdout


def test_configuration_error_shows_the_chain() -> None:
    result = run("routes", "apps.cli_app:broken")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("configuration error: Audit requires Auth to run before it")
    assert "  1. Audit()  (route)\n  2. Auth()  (route)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("apps.cli_app", "expected module:attribute, got 'apps.cli_app'"),
        (":app", "expected module:attribute"),
        ("apps.no_such_module:app", "cannot import 'apps.no_such_module'"),
        ("no_such_package.mod:app", "cannot import 'no_such_package.mod'"),
        ("apps.cli_app:missing", "has no attribute 'missing'"),
        ("apps.cli_app:not_gateway", "apps.cli_app:not_gateway is dict, not an asgigate Gateway"),
    ],
)
def test_bad_spec_is_a_clear_error(spec: str, message: str) -> None:
    result = run("routes", spec)
    assert result.returncode != 0
    assert result.stdout == ""
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: asgigate" in result.stderr
    result = run("routes", "--help")
    assert result.returncode == 0
    assert "module:attribute" in result.stdout


def test_main_in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.cli_app import app

    monkeypatch.chdir(TESTS)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load() puts "." in front
    assert main(["routes", "apps.cli_app:app"]) == 0
    assert capsys.readouterr().out == app.describe()
    assert main(["routes", "apps.cli_app:broken"]) == 1
    assert "configuration error" in capsys.readouterr().err
