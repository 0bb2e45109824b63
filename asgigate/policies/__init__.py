"""Ready-made policies: one module per concern."""

__all__: list[str] = []  # each policy is exported by its own module or package, the core ones at the top level
