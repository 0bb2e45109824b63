"""The curated public surface: the top level holds the core and each feature's headline names, every feature package
its own building blocks; each `__all__` is sorted, unique and complete; names that moved still import, with a
DeprecationWarning; the package ships typed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
import warnings
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest

import asgigate

ROOT = Path(__file__).resolve().parent.parent

# The feature packages with a curated `__all__` of their own (the top level is the other curated surface).
SUBPACKAGES = (
    "asgigate.graphql",
    "asgigate.grpc",
    "asgigate.metrics",
    "asgigate.policies.auth",
    "asgigate.policies.ratelimit",
    "asgigate.testing",
    "asgigate.upstreams",
)
CURATED = ("asgigate", *SUBPACKAGES)

# What the top level takes from the feature packages: the policy or target a reader sees in `policies()` or
# `routes()`. Everything else a feature package defines is imported from that package.
HEADLINES = {
    "asgigate.graphql": {"GraphQL"},
    "asgigate.grpc": {"GrpcService"},
    "asgigate.metrics": {"Metrics"},
    "asgigate.policies.auth": {
        "AnyAuth", "ApiKeyAuth", "Authorize", "BearerAuth", "ClientCredentials", "ForwardAuth", "ForwardIdentity",
        "IntrospectionAuth", "OIDCLogin", "SessionAuth", "TokenRelay",
    },
    "asgigate.policies.ratelimit": {"ConcurrencyLimit", "RateLimit"},
    "asgigate.testing": set(),
    "asgigate.upstreams": {"GrpcUpstream", "Upstream"},
}

# Names that left the top level (old name -> the module to import it from now, and its name there).
MOVED = {
    **{name: ("asgigate.policies.ratelimit", name) for name in (
        "Key", "Limit", "LimitUsage", "Plan", "RateLimitStore",
        "by_client_ip", "by_client_network", "by_header", "by_route", "by_subject",
    )},
    **{name: ("asgigate.policies.auth", name) for name in (
        "Authenticator", "Consumer", "CookieSessions", "Identity", "MemorySessions", "RedisSessions", "hash_api_key",
    )},
    **{name: ("asgigate.graphql", name) for name in (
        "BackendCallError", "BatchLoader", "DeGraphQL", "Extend", "GraphQLContext", "GraphQLCost", "GraphQLLimits",
        "GrpcBackend", "GrpcBatch", "PersistedQueries", "RemoteSchema", "RestBatch", "Safelist", "batch_loader",
    )},
    **{name: ("asgigate.grpc", name) for name in ("Descriptors", "JsonOptions", "MethodSettings", "compile_protos")},
    **{name: ("asgigate.metrics", name) for name in ("Counter", "Gauge", "Histogram")},
    **{name: ("asgigate.testing", name) for name in ("BackgroundServer", "serve_in_thread")},
    "UpstreamErrors": ("asgigate", "InterceptErrors"),
}

# Old module paths of names that moved between modules.
MOVED_IN_MODULES = {
    ("asgigate.policy", "Policy"): ("asgigate.pipeline", "Policy"),
    ("asgigate.policy", "ResponseHead"): ("asgigate.pipeline", "ResponseHead"),
    ("asgigate.policy", "ASGIApp"): ("asgigate.types", "ASGIApp"),
    ("asgigate.policy", "Message"): ("asgigate.types", "Message"),
    ("asgigate.policy", "Receive"): ("asgigate.types", "Receive"),
    ("asgigate.policy", "Scope"): ("asgigate.types", "Scope"),
    ("asgigate.policy", "Send"): ("asgigate.types", "Send"),
    ("asgigate.targets.upstream_errors", "UpstreamErrors"): ("asgigate.targets.intercept_errors", "InterceptErrors"),
}


def public_modules() -> list[ModuleType]:
    modules = []
    for info in pkgutil.walk_packages(asgigate.__path__, prefix="asgigate."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


def public_definitions() -> dict[str, str]:
    """name -> defining module, for every class, function or ready-made instance (`by_client_ip`, a `Key`) that a
    public module defines and lists in its __all__ (type aliases are not checked)."""
    found: dict[str, str] = {}
    for module in public_modules():
        listed = set(getattr(module, "__all__", ()))
        for name, value in vars(module).items():
            if name.startswith("_") or name not in listed:
                continue
            if inspect.isclass(value) or inspect.isfunction(value):
                if value.__module__.startswith("asgigate"):
                    found[name] = value.__module__
            elif type(value).__module__.startswith("asgigate"):
                found.setdefault(name, module.__name__)  # an instance: the first module that lists it
    return found


def home(module: str) -> str:
    """The curated surface a module's public names belong to: its feature package, or the top level."""
    for package in SUBPACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return "asgigate"


def exported(package: str) -> list[str]:
    names: list[str] = importlib.import_module(package).__all__
    return names


@pytest.mark.parametrize("package", CURATED)
def test_all_is_sorted_unique_and_exists(package: str) -> None:
    names = exported(package)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    module = importlib.import_module(package)
    for name in names:
        assert getattr(module, name) is not None, name


def test_every_public_module_declares_all() -> None:
    # Without its own __all__ a module's definitions would be invisible to the checks below.
    assert [module.__name__ for module in public_modules() if not hasattr(module, "__all__")] == []


def test_walk_finds_the_public_modules() -> None:
    names = {module.__name__ for module in public_modules()}
    assert {"asgigate.errors", "asgigate.gateway", "asgigate.routing", "asgigate.targets.direct", *SUBPACKAGES} <= names
    assert not any(name.split(".")[-1].startswith("_") for name in names)
    definitions = public_definitions()
    assert {"Gateway", "Route", "Direct", "NotFound", "Exchange", "Target", "Limit", "Identity", "by_client_ip"} <= set(
        definitions
    )
    assert {"as_timeout", "as_key", "chain_for"}.isdisjoint(definitions)  # helpers of public modules stay unlisted


def test_every_public_definition_is_exported() -> None:
    missing = {
        name: module
        for name, module in public_definitions().items()
        if name not in asgigate.__all__ and name not in exported(home(module))
    }
    assert not missing, f"public names missing from asgigate.__all__ or their package's __all__: {missing}"


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_feature_package_exports_all_of_its_own_and_nothing_else(package: str) -> None:
    own = {name for name, module in public_definitions().items() if home(module) == package}
    listed = set(exported(package))
    assert own - listed == set(), "defined in the package but missing from its __all__"
    assert listed - own == set(), "exported by the package but defined elsewhere"


def test_top_level_takes_only_the_headlines_of_each_feature() -> None:
    from_features = {
        name: home(module) for name, module in public_definitions().items()
        if home(module) != "asgigate" and name in asgigate.__all__
    }
    beyond = {name: package for name, package in from_features.items() if name not in HEADLINES[package]}
    assert beyond == {}, "building blocks belong to their package's __all__ only"
    assert {name for names in HEADLINES.values() for name in names} <= set(asgigate.__all__)


def test_every_error_is_at_the_top_level() -> None:
    import asgigate.errors

    assert set(asgigate.errors.__all__) <= set(asgigate.__all__)


@pytest.mark.parametrize("package", CURATED)
def test_exports_are_the_defined_objects(package: str) -> None:
    definitions = public_definitions()
    module = importlib.import_module(package)
    checked = [name for name in exported(package) if name in definitions]
    assert checked  # every curated package exports definitions: an empty list here would check nothing
    for name in checked:
        assert getattr(module, name) is getattr(importlib.import_module(definitions[name]), name), name


@pytest.mark.parametrize("name", sorted(MOVED))
def test_moved_names_still_import_from_the_top_level_with_a_warning(name: str) -> None:
    package, new_name = MOVED[name]
    with pytest.warns(DeprecationWarning, match=rf"^asgigate\.{name} is deprecated: .*{package}"):
        value = getattr(asgigate, name)
    assert value is getattr(importlib.import_module(package), new_name)
    assert name not in asgigate.__all__
    assert name not in dir(asgigate)


def test_moved_names_are_importable_with_from_import() -> None:
    with pytest.warns(DeprecationWarning, match="asgigate.policies.ratelimit"):
        from asgigate import Limit
    from asgigate.policies.ratelimit import Limit as new

    assert Limit is new


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_IN_MODULES.items()))
def test_names_moved_between_modules_still_import_with_a_warning(old: tuple[str, str], new: tuple[str, str]) -> None:
    module = importlib.import_module(old[0])
    with pytest.warns(DeprecationWarning, match=rf"^{old[0]}\.{old[1]} is deprecated: .*{new[0]}"):
        value = getattr(module, old[1])
    assert value is getattr(importlib.import_module(new[0]), new[1])


def test_current_names_import_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in asgigate.__all__:
            getattr(asgigate, name)
        for package in SUBPACKAGES:
            for name in exported(package):
                getattr(importlib.import_module(package), name)


@pytest.mark.parametrize("module", ["asgigate", "asgigate.policy", "asgigate.targets.upstream_errors"])
def test_unknown_names_raise_attribute_error(module: str) -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nonexistent'"):
        _ = importlib.import_module(module).Nonexistent


def test_version_matches_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert asgigate.__version__ == project["version"]


def test_py_typed_ships() -> None:
    assert resources.files("asgigate").joinpath("py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["asgigate"]
