"""The documentation builds, its navigation is complete, and its code runs.

Python blocks in the docs and the README are at least compiled. A block that is a complete gateway module
(it assigns `app = ...`) is executed, and every Gateway it creates is built, so a documented example that
uses a wrong name, a wrong argument or an invalid declaration fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asgigate import Gateway

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def files(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [f for item in nav for f in files(item)]
        if isinstance(nav, dict):
            return [f for value in nav.values() for f in files(value)]
        return []

    assert sorted(files(config["nav"])) == sorted(p.name for p in PAGES)


def test_readme_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    local = [target for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in target]
    assert "docs/index.md" in local  # the pattern finds the links (an empty list would check nothing)
    for target in local:
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_readme_quick_start_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./dev demo" in readme and "./dev test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./dev test" in ci
    assert os.access(ROOT / "dev", os.X_OK) and os.access(ROOT / ".ci" / "run", os.X_OK)


SNIPPETS = [
    pytest.param(path, line, code, id=f"{path.relative_to(ROOT)}:{line}")
    for path in [ROOT / "README.md", *PAGES]
    for line, code in python_blocks(path)
    if "--8<--" not in code  # included from a file that is tested on its own
]


@pytest.mark.parametrize(("path", "line", "code"), SNIPPETS)
def test_python_snippet(path: Path, line: int, code: str) -> None:
    compiled = compile(code, f"{path.relative_to(ROOT)}:{line}", "exec")
    if not re.search(r"^app = ", code, re.MULTILINE):
        return
    namespace: dict[str, object] = {"__name__": "docs_snippet"}
    exec(compiled, namespace)
    gateways = [value for value in namespace.values() if isinstance(value, Gateway)]
    assert gateways, "a complete example should create a Gateway"
    for gateway in gateways:
        assert gateway.describe()
