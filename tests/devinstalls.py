"""The programs `./dev test` provides, read from ./dev and pyproject.toml: what the test suite may start.

The Debian packages come from the ``ensure_system_packages`` calls in the functions ``cmd_test`` runs (without
arguments: ``SYSTEM_PACKAGES``); PACKAGE_PROGRAMS says which programs of each the suite runs. The venv's
programs are the console scripts of the packages pyproject.toml lists (``./dev`` installs ``.[dev]``).
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "dev"

# The programs the suite runs from each Debian package ./dev can install. A package ./dev installs must be here
# (tests/test_dev_installs.py checks it), so that adding one to ./dev says what it is for.
PACKAGE_PROGRAMS: dict[str, set[str]] = {
    "redis-server": {"redis-server", "redis-cli"},  # redis-cli is in redis-tools, a dependency of redis-server
    "memcached": {"memcached"},
    "chromium": {"chromium"},  # launched by playwright (tests/test_auth_login_browser.py)
    "nodejs": {"node"},  # the test OpenID provider, tests/idp
    "npm": {"npm"},  # its packages, when tests/idp/node_modules is missing
    "python3": {"python3"},
    "python3-venv": set(),  # ensurepip, for `python3 -m venv`
}

# On every Debian machine: util-linux is Essential (dpkg keeps it installed), so ./dev has nothing to install.
BASE_SYSTEM: dict[str, str] = {
    "taskset": "util-linux (Essential): benchmarks/procs.Proc, as test_benchmark_apps runs the granian systems",
}

_FUNCTION = re.compile(r"^([A-Za-z_]\w*)\(\)\s*\{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
_INSTALL_CALL = re.compile(r"(?<![\w-])ensure_system_packages(?![\w(-])(.*)$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


def dev_functions(text: str) -> dict[str, str]:
    """The shell functions of ./dev: name -> body (comment lines dropped)."""
    return {
        name: "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
        for name, body in _FUNCTION.findall(text)
    }


def system_packages(text: str) -> list[str]:
    match = re.search(r"^SYSTEM_PACKAGES=\(([^)]*)\)", text, re.MULTILINE)
    assert match is not None, "./dev has no SYSTEM_PACKAGES=(...) line"
    return match.group(1).split()


def reached_functions(text: str, command: str = "cmd_test") -> dict[str, str]:
    """The functions `command` runs, directly or through others: name -> body."""
    functions = dev_functions(text)
    reached: dict[str, str] = {}
    todo = [command]
    while todo:
        name = todo.pop()
        if name in reached or name not in functions:
            continue
        reached[name] = functions[name]
        todo += [word for word in re.findall(r"[A-Za-z_]\w*", functions[name]) if word in functions]
    return reached


def debian_packages(text: str | None = None, command: str = "cmd_test") -> dict[str, str]:
    """The Debian packages `./dev test` installs when missing: package -> the function that installs it."""
    text = DEV.read_text() if text is None else text
    packages: dict[str, str] = {}
    for name, body in reached_functions(text, command).items():
        for line in body.splitlines():
            match = _INSTALL_CALL.search(line)
            if match is None:
                continue
            try:
                words = shlex.split(match.group(1))
            except ValueError:
                words = match.group(1).split()
            arguments = []
            for word in words:
                if word in {"||", "&&", "|", ";", "then", "fi"} or word.startswith(("#", ">")):
                    break
                arguments.append(word)
            for package in arguments or system_packages(text):
                if _PACKAGE.match(package):  # not "python$(...)-venv": whichever python3 is there
                    packages.setdefault(package, name)
    return packages


def installs_dev_extras(text: str | None = None, command: str = "cmd_test") -> bool:
    """Whether `./dev test` pip-installs the project with its dev extras (the venv's programs below)."""
    text = DEV.read_text() if text is None else text
    return any(re.search(r"pip install .*\[dev\]", body) for body in reached_functions(text, command).values())


def venv_programs() -> dict[str, str]:
    """The console scripts of the packages pyproject.toml names (dependencies and the dev extras), and the
    interpreter: program -> the package that provides it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    programs = {"python": "the venv's interpreter", "python3": "the venv's interpreter",
                Path(sys.executable).name: "the venv's interpreter"}  # fmt: skip
    programs.update({name: "pyproject.toml [project.scripts]" for name in project.get("scripts", {})})
    for requirement in [*project.get("dependencies", []), *project["optional-dependencies"]["dev"]]:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        try:
            entry_points = importlib.metadata.distribution(match.group(0)).entry_points
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: the suite's own runs would fail first
        for entry_point in entry_points:
            if entry_point.group == "console_scripts":
                programs.setdefault(entry_point.name, f"{match.group(0)} (pyproject.toml)")
    return programs


def provided(text: str | None = None) -> dict[str, str]:
    """Every program the suite may start: program -> where it comes from."""
    out: dict[str, str] = {}
    for package, function in debian_packages(text).items():
        for program in PACKAGE_PROGRAMS.get(package, set()):
            out[program] = f"Debian package {package} (./dev: {function})"
    if installs_dev_extras(text):
        for program, source in venv_programs().items():
            out.setdefault(program, source)
    for program, source in BASE_SYSTEM.items():
        out.setdefault(program, source)
    return out
