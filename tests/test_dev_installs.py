"""`./dev test` installs every program the test suite starts: nothing passes only because a machine happened to
have it (issue 16: a report test ran `nginx -v`, and failed on a fresh machine).

The programs are read from the source (tests/commandscan.py), what ./dev provides from ./dev and pyproject.toml
(tests/devinstalls.py). tests/conftest.py checks the same at run time for the programs the suite's own process
starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from commandscan import ROOT, Found, Scan
from devinstalls import BASE_SYSTEM, PACKAGE_PROGRAMS, debian_packages, installs_dev_extras, provided

# Programs written in code the suite reaches, that it never starts: the scan follows calls, not conditions.
# (file, function, program) -> why the suite does not start it. Keep this short and precise.
NOT_STARTED: dict[tuple[str, str, str], str] = {
    ("benchmarks/systems.py", "command", "nginx"): (
        "the command of the nginx-* systems; test_the_granian_systems_serve_through_the_benchmarks_own_command "
        "asks it for granian systems only"
    ),
}
MADE_HERE = "made-by-test-dev-installs"  # a program the run-time check's test writes and starts: not ./dev's


@pytest.fixture(scope="module")
def scan() -> Scan:
    return Scan()


def _missing(found: set[Found], available: dict[str, str]) -> list[Found]:
    missing = [f for f in found if f.program not in available and f.program != MADE_HERE and
               (f.file, f.function, f.program) not in NOT_STARTED]  # fmt: skip
    return sorted(missing, key=lambda f: (f.program, f.file, f.line))


def test_every_program_the_suite_starts_is_installed_by_dev(scan: Scan) -> None:
    missing = _missing(scan.found, provided())
    assert not missing, (
        "the test suite can start programs ./dev test does not install; make the code under test not need them, "
        "or install them in ./dev (SYSTEM_PACKAGES, and tests/devinstalls.py PACKAGE_PROGRAMS):\n"
        + "\n".join(f"  {f.program}: {f.where()}\n    reached: {scan.how_reached(f)}" for f in missing)
    )


def test_the_scan_follows_every_program_the_suite_starts(scan: Scan) -> None:
    """A program name computed at run time would slip through the check above: write it as a constant."""
    assert not scan.unresolved, "\n".join(u.where() for u in sorted(scan.unresolved, key=lambda u: (u.file, u.line)))


def test_the_scan_sees_the_suites_programs(scan: Scan) -> None:
    """The scan finds what the suite is known to start (a scan finding nothing would pass the checks above)."""
    programs = {f.program for f in scan.found}
    assert {"redis-server", "redis-cli", "memcached", "node", "npm", "chromium", "taskset"} <= programs


def test_every_exception_is_still_needed(scan: Scan) -> None:
    written = {(f.file, f.function, f.program) for f in scan.found}
    assert set(NOT_STARTED) <= written, "an entry of NOT_STARTED names code that no longer starts it: remove it"
    assert MADE_HERE in {f.program for f in scan.found}  # the script of the run-time check's test, read as code


def test_every_package_dev_installs_says_which_programs_the_suite_runs() -> None:
    packages = debian_packages()
    assert {"redis-server", "memcached", "chromium", "nodejs", "npm"} <= set(packages)
    assert set(packages) <= set(PACKAGE_PROGRAMS), "add the new package of ./dev to PACKAGE_PROGRAMS"
    assert installs_dev_extras()


def test_base_system_programs_are_not_installed_by_dev() -> None:
    """BASE_SYSTEM is for what every Debian machine has; a program ./dev installs belongs to its package."""
    by_packages = {p for package in debian_packages() for p in PACKAGE_PROGRAMS.get(package, set())}
    assert not set(BASE_SYSTEM) & by_packages


# --- the scan itself, on small trees (the shape of the code it has to follow)

DEV = """\
#!/usr/bin/env bash
SYSTEM_PACKAGES=(redis-server)
ensure_system_packages() {
    local wanted=("$@")
}
setup() {
    ensure_system_packages
}
cmd_test() {
    setup
    command -v node >/dev/null || ensure_system_packages nodejs npm  # the OpenID provider
}
cmd_demo() {
    ensure_system_packages nginx
}
"""


def _tree(root: Path, files: dict[str, str]) -> Iterator[Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        yield path


def _programs(tmp_path: Path, files: dict[str, str]) -> dict[str, str]:
    scan = Scan(list(_tree(tmp_path, files)), root=tmp_path)
    assert not scan.unresolved, scan.unresolved
    return {f.program: f.function for f in scan.found}


def test_the_scan_finds_a_program_a_test_reaches_in_benchmark_code(tmp_path: Path) -> None:
    """Issue 16: a test formats a report; the report asks nginx its version through a helper."""
    programs = _programs(tmp_path, {
        "benchmarks/envinfo.py": """
            import subprocess
            def _run(cmd):
                return subprocess.run(cmd, capture_output=True, text=True)
            def versions():
                return {"nginx": _run(["nginx", "-v"]).stderr}
            def load():
                return _run(["wrk", "--latency"])  # the benchmark's own: no test reaches it
        """,
        "benchmarks/report.py": """
            from envinfo import versions
            def render(rows):
                return f"{rows} {versions()}"
        """,
        "tests/test_report.py": """
            import sys
            def test_render():
                sys.path.insert(0, "benchmarks")
                import report
                assert report.render([])
        """,
    })
    assert programs == {"nginx": "versions"}


def test_the_scan_follows_helpers_runners_and_scripts(tmp_path: Path) -> None:
    programs = _programs(tmp_path, {
        "benchmarks/procs.py": """
            import subprocess
            class Proc:
                def __init__(self, name, cmd, cpus):
                    self.popen = subprocess.Popen(["taskset", "-c", cpus, *cmd])
        """,
        "benchmarks/systems.py": """
            import sys
            PYTHON = sys.executable
            def command(kind):
                if kind == "valgrind":
                    return ["setarch", "-R", "valgrind", "--tool=callgrind", *(["--x"] if kind else []), "node"]
                return [PYTHON, "-m", "granian"]
        """,
        "tests/servers.py": """
            import asyncio, os, shutil, subprocess
            def _binary(name):
                path = shutil.which(name)
                assert path is not None
                return path
            class Store:
                def __init__(self):
                    self.binary = _binary("memcached")
                def spawn(self, *args):
                    return subprocess.Popen(list(args))
                def start(self):
                    return self.spawn(self.binary, "-p", "0")
            SERVERS = {"uvicorn": lambda port: ["uvicorn", "--port", str(port)]}
            def serve(name):
                return subprocess.run(SERVERS[name](0))
            async def run_async(cmd):
                return await asyncio.create_subprocess_exec(*cmd)
            async def use():
                await run_async(["hypercorn", "app:app"])
                os.system("LC_ALL=C curl -s http://127.0.0.1:9")
        """,
        "tests/test_bench.py": '''
            import subprocess, sys
            SCRIPT = """
            import sys
            sys.path.insert(0, {bench!r})
            from procs import Proc
            from systems import command
            Proc("x", command({kind!r}), "0")
            """
            def test_script():
                subprocess.run([sys.executable, "-c", SCRIPT.format(bench="benchmarks", kind="valgrind")])
        ''',
    })
    assert programs == {"taskset": "Proc.__init__", "setarch": "command", "valgrind": "command", "node": "command",
                        "memcached": "Store.__init__", "uvicorn": "<lambda>", "hypercorn": "use", "curl": "use"}


def test_the_scan_reports_a_program_it_cannot_follow(tmp_path: Path) -> None:
    files = {"tests/test_x.py": """
        import os, subprocess
        def test_x():
            subprocess.run([os.environ["TOOL"], "--version"])
    """}
    scan = Scan(list(_tree(tmp_path, files)), root=tmp_path)
    assert [(u.file, u.line, u.function) for u in scan.unresolved] == [("tests/test_x.py", 4, "test_x")]
    assert "os.environ" in scan.unresolved.pop().text


def test_the_dev_packages_are_those_of_the_test_command() -> None:
    packages = debian_packages(DEV)
    assert packages == {"redis-server": "setup", "nodejs": "cmd_test", "npm": "cmd_test"}  # not cmd_demo's nginx
    assert provided(DEV)["redis-cli"] == "Debian package redis-server (./dev: setup)"
    assert "nginx" not in provided(DEV)


# --- the run-time check of tests/conftest.py

GUARDED = """
import os, subprocess, sys

def test_starts_programs():
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # the venv's
    subprocess.run(["redis-server", "--version"], check=True, capture_output=True)  # ./dev installs it
    if os.environ.get("START_MADE_HERE"):
        subprocess.run(["./made-by-test-dev-installs"], check=True)
"""


@pytest.mark.parametrize("start_it", [True, False])
def test_a_run_that_starts_a_program_dev_does_not_install_fails(start_it: bool, tmp_path: Path) -> None:
    """The test passes; the run fails, and says which test started which program."""
    (tmp_path / "test_guarded.py").write_text(GUARDED)
    made = tmp_path / MADE_HERE
    made.write_text("#!/bin/sh\nexit 0\n")
    made.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "START_MADE_HERE": "1" if start_it else ""}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "test_guarded.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "1 passed" in result.stdout, result.stdout + result.stderr
    if start_it:
        assert result.returncode == 1, result.stdout
        assert f"{MADE_HERE}: started by test_guarded.py::test_starts_programs" in result.stdout
    else:
        assert result.returncode == 0, result.stdout
        assert "programs ./dev test does not install" not in result.stdout
