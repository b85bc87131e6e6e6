"""Client examples."""
