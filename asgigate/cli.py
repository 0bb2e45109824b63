"""`python -m asgigate routes module:app`: print every route with its policy chain in run order."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError
from .gateway import Gateway

__all__: list[str] = []  # the command line is this module's interface: `asgigate --help`


def load(spec: str) -> Gateway:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: expected module:attribute, got {spec!r}")
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module named in the spec; a missing import inside it keeps its traceback.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise SystemExit(f"error: cannot import {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"error: module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Gateway):
        raise SystemExit(f"error: {spec} is {type(obj).__name__}, not an asgigate Gateway")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgigate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    routes = commands.add_parser("routes", help="print the route table with each route's chain in run order")
    routes.add_argument("app", help="module:attribute of a Gateway instance, e.g. examples.quickstart:app")
    args = parser.parse_args(argv)
    gateway = load(args.app)
    try:
        sys.stdout.write(gateway.describe())
    except ConfigurationError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 1
    return 0
