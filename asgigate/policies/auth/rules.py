"""Authorize: per-route authorization rules on the verified identity (scopes, roles, claim conditions).

Runs after an authenticator (`requires`), so `exchange.identity` is set or the request was already refused.
A rule that does not hold is 403 `insufficient_scope` (RFC 6750), with the required scopes named in the
challenge when scopes were the reason; the reply never says which claim failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..._frozen import Frozen
from ...errors import ConfigurationError, InsufficientScope, Unauthorized
from ...pipeline import Policy
from .base import Authenticator, Identity

if TYPE_CHECKING:
    from starlette.responses import Response

    from ...exchange import Exchange

__all__ = ["Authorize"]

Condition = Any  # an exact value, or a callable taking the claim value and returning a bool


def _matches(value: Any, expected: Condition) -> bool:
    if callable(expected):
        return bool(expected(value))
    if isinstance(value, list) and not isinstance(expected, list):
        return expected in value
    return bool(value == expected)


class Authorize(Frozen, Policy):
    """``Authorize(scopes=["orders:write"])``, ``Authorize(any_scopes=["admin", "orders:read"])``,
    ``Authorize(roles=["admin"])``, ``Authorize(claims={"tenant": "acme", "email_verified": True})``.

    Every rule given must hold: all of `scopes`; at least one of `any_scopes`; at least one of `roles` (read
    from the claim `roles_claim`, dotted for nested claims like ``"realm_access.roles"``); every claim
    condition in `claims` (an exact value, a member of a list claim, or a callable given the claim's value,
    ``None`` when absent); and `check(identity)` when given.
    """

    requires = (Authenticator,)

    def __init__(
        self,
        *,
        scopes: Iterable[str] = (),
        any_scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        roles_claim: str = "roles",
        claims: Mapping[str, Condition] | None = None,
        check: Callable[[Identity], bool] | None = None,
    ) -> None:
        for name, value in (("scopes", scopes), ("any_scopes", any_scopes), ("roles", roles)):
            if isinstance(value, str):
                raise ConfigurationError(f"Authorize {name}= takes a list of strings, not the string {value!r}.")
        self.scopes = frozenset(scopes)
        self.any_scopes = frozenset(any_scopes)
        self.roles = frozenset(roles)
        self.roles_claim = roles_claim
        self.claims = dict(claims or {})
        self.check = check
        if not (self.scopes or self.any_scopes or self.roles or self.claims or check):
            raise ConfigurationError("Authorize has no rule: give scopes, any_scopes, roles, claims or check.")

    async def on_request(self, exchange: Exchange) -> Response | None:
        identity = exchange.identity
        if not isinstance(identity, Identity):
            raise Unauthorized("Authentication is required.", challenge="Bearer")
        wanted = " ".join(sorted(self.scopes | self.any_scopes))
        if not self.scopes <= identity.scopes or (self.any_scopes and not self.any_scopes & identity.scopes):
            raise InsufficientScope("The credentials do not grant access to this resource.", scope=wanted,
                                    internal=f"scopes {sorted(identity.scopes)}")
        if self.roles:
            held = identity.claim(self.roles_claim)
            held_roles = {held} if isinstance(held, str) else set(held) if isinstance(held, list) else set()
            if not self.roles & held_roles:
                raise InsufficientScope("The credentials do not grant access to this resource.",
                                        internal=f"roles {sorted(map(str, held_roles))}")
        for name, expected in self.claims.items():
            if not _matches(identity.claim(name), expected):
                raise InsufficientScope("The credentials do not grant access to this resource.",
                                        internal=f"claim {name!r}")
        if self.check is not None and not self.check(identity):
            raise InsufficientScope("The credentials do not grant access to this resource.", internal="check")
        return None

    def _config(self) -> tuple[Any, ...]:
        return (self.scopes, self.any_scopes, self.roles, self.roles_claim, tuple(self.claims.items()), self.check)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Authorize) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash((self.scopes, self.any_scopes, self.roles, self.roles_claim, tuple(self.claims), self.check))

    def __repr__(self) -> str:
        parts = []
        if self.scopes:
            parts.append(f"scopes={sorted(self.scopes)!r}")
        if self.any_scopes:
            parts.append(f"any_scopes={sorted(self.any_scopes)!r}")
        if self.roles:
            parts.append(f"roles={sorted(self.roles)!r}")
        if self.roles_claim != "roles":
            parts.append(f"roles_claim={self.roles_claim!r}")
        if self.claims:
            parts.append("claims={" + ", ".join(
                f"{k!r}: {getattr(v, '__name__', None) or repr(v)}" for k, v in self.claims.items()) + "}")
        if self.check is not None:
            parts.append(f"check={getattr(self.check, '__name__', repr(self.check))}")
        return f"Authorize({', '.join(parts)})"
