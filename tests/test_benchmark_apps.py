"""Every asgigate system of the benchmark suite builds: a broken benchmark app is found here, not mid-run."""

from __future__ import annotations

import subprocess

import pytest

from servers import PYTHON, ROOT

APPS = sorted(p.stem for p in (ROOT / "benchmarks" / "apps").glob("asgigate_*.py"))

BUILD = """
import importlib, sys
sys.path.insert(0, {apps!r})
module = importlib.import_module({name!r})
module.app.build()
print(module.app.describe())
"""


def test_the_suite_has_apps() -> None:
    assert {"asgigate_plain", "asgigate_full"} <= set(APPS)


@pytest.mark.parametrize("name", APPS)
def test_benchmark_app_builds(name: str) -> None:
    result = subprocess.run(
        [PYTHON, "-c", BUILD.format(apps=str(ROOT / "benchmarks" / "apps"), name=name)],
        env={"UPSTREAM_URL": "http://127.0.0.1:9", "RATELIMIT_REDIS_URL": "redis://127.0.0.1:9",
             "PATH": "/usr/bin:/bin"},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Proxy(" in result.stdout
