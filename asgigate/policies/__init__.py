"""Ready-made policies: one module per concern."""
