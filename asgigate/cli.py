"""`python -m asgigate routes module:app`: print every route with its policy chain in run order."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import ConfigurationError
from .gateway import Gateway


def load(spec: str) -> Gateway:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: expected module:attribute, got {spec!r}")
    sys.path.insert(0, ".")
    module = importlib.import_module(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
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
