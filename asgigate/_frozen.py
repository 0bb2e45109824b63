"""Frozen: configuration objects that refuse attribute assignment once constructed.

A target or a policy may serve many routes and several gateways at once, so nothing may change it after it was
built: what differs per route (a path template, a limit that defaults to the gateway's) is resolved at build
time into a per-route object (see `Target.bind`), and what changes at run time (caches, counters, clients, a
switch) lives in a separate mutable object that the frozen configuration holds.

The library's own targets and policies inherit `Frozen`. Assignment is refused from the moment the outermost
``__init__`` returns, so a subclass may still set attributes of its own in its ``__init__``, before or after
calling ``super().__init__()``. The bases `Policy` and `Target` are not frozen: a policy written from scratch
keeps whatever state it chooses.

Only assignment goes through ``__setattr__``: reading an attribute costs what it always did, so the request
path pays nothing for this.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any, TypeVar

__all__: list[str] = []  # internal

_Self = TypeVar("_Self", bound="Frozen")
_T = TypeVar("_T")


class Frozen:
    """Mixin: instances are immutable once the constructor that created them has returned."""

    __slots__ = ()
    # Set on the instance when its constructor returns. Read as an attribute, never through `__dict__`: asking
    # for an instance's `__dict__` makes CPython move its attributes from the compact per-instance array into a
    # dict, and every attribute read of the request path would then take the slower dictionary lookup.
    _frozen_done = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_freezes", False):
            cls.__init__ = _freezing(init)  # type: ignore[method-assign]

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen_done:
            raise FrozenInstanceError(_refusal(self, name, "set"))
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self._frozen_done:
            raise FrozenInstanceError(_refusal(self, name, "delete"))
        object.__delattr__(self, name)

    def _replace(self: _Self, **changes: Any) -> _Self:
        """A copy with some attributes replaced (frozen too): how `bind` makes the object that serves one route.

        The copy reads its attributes as fast as the constructor's own object would (see `twin`).
        """
        return twin(self, **changes)


class Switch:
    """An on/off setting a frozen policy changes at run time (`enable()` / `disable()`): it holds wherever the
    policy is used."""

    __slots__ = ("on",)

    def __init__(self, on: bool) -> None:
        self.on = on

    def __repr__(self) -> str:
        return f"Switch({self.on})"


def twin(obj: _T, **changes: Any) -> _T:
    """A copy of `obj` with some attributes replaced, its attributes set in the original's order.

    Set that way they stay in CPython's compact instance layout (see `Frozen._frozen_done`), so the copy reads
    them as fast as the original did before anything asked for its `__dict__`. `copy.copy` would leave them in a
    dictionary (slower to read, on every request for a route or a target). The class's own `__new__` and
    `__init__` do not run: the copy is the original, settled.
    """
    current = vars(obj)  # only the original goes into a dict, and it is replaced by the copy
    unknown = set(changes) - set(current)
    if unknown:
        raise AttributeError(f"{type(obj).__name__} has no attribute {', '.join(sorted(unknown))} to replace.")
    copied = object.__new__(type(obj))
    for name, value in current.items():
        object.__setattr__(copied, name, changes.get(name, value))
    return copied


def _freezing(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Frozen, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # Only the constructor that was called (the most derived one) freezes: one further up the chain, reached
        # through super().__init__(), returns with the subclass's own __init__ still to finish.
        if type(self).__init__ is __init__:
            object.__setattr__(self, "_frozen_done", True)

    __init__._freezes = True  # type: ignore[attr-defined]
    return __init__


def _refusal(obj: object, name: str, verb: str) -> str:
    kind = type(obj).__name__
    return (
        f"cannot {verb} {kind}.{name}: a {kind} is immutable once constructed, since routes and gateways may share "
        f"it. Construct a new {kind} with the settings you want instead."
    )
