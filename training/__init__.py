"""Training worker."""
