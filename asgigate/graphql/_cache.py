"""The byte-bounded cache of the GraphQL routes lives with the gateway's others (asgigate._cache)."""

from .._cache import BoundedCache

__all__ = ["BoundedCache"]
